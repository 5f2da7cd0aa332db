// Builds the web editor into server/web/static (committed: see docs/web.md): the bundle and the
// stylesheet under content-hashed names, and index.html naming them.
//   node web/build.mjs [--outdir DIR]
import * as esbuild from 'esbuild'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const flag = process.argv.indexOf('--outdir')
const outdir = resolve(flag > 0 ? process.argv[flag + 1] : join(here, '..', 'server', 'web', 'static'))

await mkdir(outdir, { recursive: true })
for (const name of await readdir(outdir)) {
  if (/^(app-[A-Z0-9]+\.(js|css)|index\.html)$/.test(name)) await rm(join(outdir, name))
}
const result = await esbuild.build({
  entryPoints: { app: join(here, 'src', 'main.js'), 'app-style': join(here, 'src', 'style.css') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  outdir,
  entryNames: 'app-[hash]',
  metafile: true,
  logLevel: 'warning',
  legalComments: 'eof',
  define: { 'process.env.NODE_ENV': '"production"' }
})
const outputs = Object.keys(result.metafile.outputs).map((file) => basename(file))
const js = outputs.find((name) => name.endsWith('.js'))
const css = outputs.find((name) => name.endsWith('.css'))
const template = await readFile(join(here, 'index.html'), 'utf8')
await writeFile(join(outdir, 'index.html'), template.replace('{{js}}', js).replace('{{css}}', css))
for (const [file, info] of Object.entries(result.metafile.outputs)) {
  console.log(`${basename(file)} ${info.bytes} bytes`)
}
