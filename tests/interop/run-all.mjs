// Self-check / manual runner.
//
//   node run-all.mjs                      start the reference @y/websocket-server on a free
//                                         127.0.0.1 port and run every scenario against it
//   node run-all.mjs ws://127.0.0.1:8000/ws   run every scenario against an already running server
//
// Prints one line per scenario and a final "N passed, N failed" line; exits non-zero on failure.

import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))

export const SCENARIOS = [
  'scenario-a-concurrent.mjs',
  'scenario-b-late-joiner.mjs',
  'scenario-c-offline.mjs',
  'scenario-d-awareness.mjs',
  'scenario-e-isolation.mjs',
  'scenario-f-frames.mjs',
  'scenario-g-surrogates.mjs'
]

const freePort = () => new Promise((resolve, reject) => {
  const srv = createServer()
  srv.once('error', reject)
  srv.listen(0, '127.0.0.1', () => {
    const { port } = srv.address()
    srv.close(() => resolve(port))
  })
})

const referenceBin = () => {
  const require = createRequire(import.meta.url)
  const pkgPath = require.resolve('@y/websocket-server/package.json')
  const pkg = require(pkgPath)
  return path.join(path.dirname(pkgPath), pkg.bin['y-websocket-server'])
}

const startReference = async () => {
  const port = await freePort()
  const child = spawn(process.execPath, [referenceBin()], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('reference server did not start in 10 s')), 10000)
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      if (out.includes('running at')) { clearTimeout(timer); resolve() }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`reference server exited with ${code}`)) })
  })
  return { child, url: `ws://127.0.0.1:${port}/ws` }
}

const runScenario = (script, url, prefix) => new Promise((resolve) => {
  const child = spawn(process.execPath, [path.join(here, script), url, prefix], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), 60000)
  child.on('exit', (code) => { clearTimeout(timer); resolve({ code, out: out.trim(), err: err.trim() }) })
})

const main = async () => {
  let url = process.argv[2]
  let server = null
  if (!url) {
    server = await startReference()
    url = server.url
    console.log(`reference server at ${url}`)
  }
  let passed = 0
  let failed = 0
  for (const script of SCENARIOS) {
    const prefix = `selfcheck-${randomUUID()}-`
    const t0 = Date.now()
    const r = await runScenario(script, url, prefix)
    const ok = r.code === 0
    ok ? passed++ : failed++
    console.log(`${ok ? 'PASS' : 'FAIL'} ${script} (${Date.now() - t0} ms) ${r.out}`)
    if (!ok && r.err) console.log(r.err)
  }
  if (server) server.child.kill('SIGTERM')
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(failed === 0 ? 0 : 1)
}

main().catch((e) => { console.error(e); process.exit(1) })
