// ESLint for the JavaScript of the repository (the client library, the web editor, their
// tests and benchmarks): `npm run lint`, run by `make lint`.
import js from '@eslint/js'
import globals from 'globals'

export default [
  { ignores: ['**/node_modules/**', '.venv/**', 'server/web/static/**', 'tests/interop/**', 'collab-data/**'] },
  js.configs.recommended,
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { ...globals.browser, ...globals.node }
    },
    rules: {
      'no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-empty': ['error', { allowEmptyCatch: true }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-var': 'error',
      'prefer-const': 'error'
    }
  }
]
