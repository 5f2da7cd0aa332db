// Shared helpers for the interop scenario scripts.
//
// Every scenario script is invoked as
//
//   node <script>.mjs <ws-base-url> <room-prefix> [seed]
//
// e.g. `node scenario-a-concurrent.mjs ws://127.0.0.1:8000/ws it-1234-`, runs one scenario
// against the server and prints exactly one JSON line on stdout:
//
//   {"scenario":"...","ok":true,...details}                      (exit code 0)
//   {"scenario":"...","ok":false,"error":"..."}                  (exit code 1)
//
// A human-readable failure message is also written to stderr. Every wait is event driven
// (provider 'sync'/'status', doc 'update', awareness 'change', ws 'message') and bounded by a
// timeout; there are no fixed sleeps used for synchronisation.

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

export { WebSocket, Y, WebsocketProvider }

/** Default timeout of a single wait, in milliseconds. */
export const WAIT_MS = 15000
/** Hard limit for a whole scenario; the pytest side has its own, larger, timeout. */
export const SCENARIO_MS = 50000

let scenarioName = 'unknown'
let finished = false
/** @type {Array<() => void>} */
const cleanups = []

/** Register something to tear down (providers, sockets) before the process exits. */
export const onCleanup = (fn) => { cleanups.push(fn) }

const runCleanups = () => {
  while (cleanups.length > 0) {
    const fn = cleanups.pop()
    try { fn() } catch (_e) { /* best effort */ }
  }
}

const emit = (obj, code) => {
  if (finished) return
  finished = true
  runCleanups()
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code))
}

/** Print the success line and exit 0. */
export const succeed = (details = {}) => {
  emit({ scenario: scenarioName, ok: true, ...details }, 0)
}

/** Print the failure line (stdout JSON + stderr message) and exit 1. */
export const fail = (message, details = {}) => {
  if (finished) return
  process.stderr.write(`FAIL [${scenarioName}]: ${message}\n`)
  emit({ scenario: scenarioName, ok: false, error: message, ...details }, 1)
}

export class ScenarioError extends Error {}

/**
 * Parse argv, install global failure handlers and the overall scenario timeout.
 * @param {string} name
 * @returns {{ url: string, prefix: string, seed: number }}
 */
export const setup = (name) => {
  scenarioName = name
  const [url, prefix, seedArg] = process.argv.slice(2)
  if (!url || !/^wss?:\/\//.test(url) || prefix === undefined) {
    process.stderr.write(`usage: node ${process.argv[1]} <ws-base-url> <room-prefix> [seed]\n`)
    emit({ scenario: name, ok: false, error: 'bad arguments' }, 2)
    return { url: '', prefix: '', seed: 0 }
  }
  const seed = seedArg !== undefined ? Number(seedArg) : Math.floor(Math.random() * 2 ** 31)
  // Every WebsocketProvider adds a process 'exit' listener; scenario e has 40 of them.
  process.setMaxListeners(200)
  process.on('uncaughtException', (err) => fail(`uncaught exception: ${err && err.stack ? err.stack : err}`))
  process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${err && err.stack ? err.stack : err}`))
  const t = setTimeout(() => fail(`scenario did not finish within ${SCENARIO_MS} ms`), SCENARIO_MS)
  t.unref()
  return { url: url.replace(/\/+$/, ''), prefix, seed }
}

/**
 * Run the async scenario body, turning any thrown error into a failure line.
 * @param {string} name
 * @param {(args: { url: string, prefix: string, seed: number }) => Promise<object>} body
 */
export const run = (name, body) => {
  const args = setup(name)
  if (finished) return
  body(args).then(
    (details) => succeed({ seed: args.seed, ...(details || {}) }),
    (err) => fail(err instanceof ScenarioError ? err.message : (err && err.stack ? err.stack : String(err)), { seed: args.seed })
  )
}

export const assert = (cond, message) => {
  if (!cond) throw new ScenarioError(message)
}

/** Deterministic PRNG (mulberry32) so a failing run can be replayed with its seed. */
export const prng = (seed) => {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // inclusive
    pick: (arr) => arr[Math.floor(next() * arr.length)]
  }
}

/**
 * Wait until `check()` returns a truthy value. `check` is evaluated immediately and then
 * again every time one of `sources` emits one of its events. Rejects with a clear message
 * after `timeoutMs`.
 *
 * @template T
 * @param {string} what  description used in the timeout message
 * @param {() => T} check
 * @param {Array<[any, string]>} sources  pairs of (emitter, event name); emitters may be
 *        lib0 Observables (on/off), Node EventEmitters (on/off) or Y.Docs.
 * @param {number} [timeoutMs]
 * @param {() => string} [describe] extra state for the timeout message
 * @returns {Promise<T>}
 */
export const waitUntil = (what, check, sources, timeoutMs = WAIT_MS, describe = undefined) =>
  new Promise((resolve, reject) => {
    let done = false
    const handler = () => {
      if (done) return
      let v
      try {
        v = check()
      } catch (e) {
        finish()
        reject(e)
        return
      }
      if (v) {
        finish()
        resolve(v)
      }
    }
    const timer = setTimeout(() => {
      if (done) return
      finish()
      const extra = describe ? `; state: ${describe()}` : ''
      reject(new ScenarioError(`timed out after ${timeoutMs} ms waiting for ${what}${extra}`))
    }, timeoutMs)
    const finish = () => {
      done = true
      clearTimeout(timer)
      for (const [em, ev] of sources) em.off(ev, handler)
    }
    for (const [em, ev] of sources) em.on(ev, handler)
    handler()
  })

/**
 * Create a Y.Doc connected to `room` through a vanilla y-websocket WebsocketProvider using the
 * `ws` package as WebSocket implementation. BroadcastChannel is disabled so that every byte
 * goes through the server.
 */
export const makeClient = (url, room, { connect = true, name = 'client' } = {}) => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    connect,
    maxBackoffTime: 1000
  })
  const client = {
    name,
    doc,
    provider,
    awareness: provider.awareness,
    text: doc.getText('content'),
    expectClose: false
  }
  // `event` is null when we closed the socket ourselves (disconnect/destroy). Any close the
  // server initiates is unexpected in these scenarios: fail fast with its code and reason
  // instead of timing out later.
  provider.on('connection-close', (event) => {
    if (event && !client.expectClose && !client.destroyed) {
      fail(`the server closed ${name}'s connection to room ${JSON.stringify(room)}: code ${event.code}` +
        (event.reason ? ` reason ${JSON.stringify(String(event.reason))}` : ''))
    }
  })
  onCleanup(() => destroyClient(client))
  return client
}

export const destroyClient = (client) => {
  if (client.destroyed) return
  client.destroyed = true
  try { client.provider.destroy() } catch (_e) { /* ignore */ }
  try { client.doc.destroy() } catch (_e) { /* ignore */ }
}

/** Wait until the provider has completed the sync handshake with the server. */
export const waitSynced = (client, timeoutMs = WAIT_MS) =>
  waitUntil(`${client.name} to sync with the server`, () => client.provider.synced,
    [[client.provider, 'sync']], timeoutMs,
    () => `wsconnected=${client.provider.wsconnected} wsconnecting=${client.provider.wsconnecting}`)

/** Wait until the provider reports it is disconnected (status event). */
export const waitDisconnected = (client, timeoutMs = WAIT_MS) =>
  waitUntil(`${client.name} to disconnect`,
    () => !client.provider.wsconnected && !client.provider.wsconnecting && client.provider.ws === null,
    [[client.provider, 'status']], timeoutMs)

/** Client ids in a doc's state vector, as a Map<clientId, clock>. */
export const stateVector = (doc) => Y.decodeStateVector(Y.encodeStateVector(doc))

export const svEqual = (a, b) => {
  const sa = stateVector(a)
  const sb = stateVector(b)
  if (sa.size !== sb.size) return false
  for (const [k, v] of sa) if (sb.get(k) !== v) return false
  return true
}

export const svString = (doc) => JSON.stringify(Array.from(stateVector(doc).entries()).sort((x, y) => x[0] - y[0]))

/**
 * Wait until all clients have identical `content` texts and identical state vectors.
 * Re-checked on every doc 'update' event.
 */
export const waitConverged = (clients, what = 'clients to converge', timeoutMs = WAIT_MS, extraCheck = () => true) =>
  waitUntil(what, () => {
    const first = clients[0]
    for (const c of clients.slice(1)) {
      if (c.text.toString() !== first.text.toString()) return false
      if (!svEqual(c.doc, first.doc)) return false
    }
    return extraCheck()
  }, clients.map((c) => [c.doc, 'update']), timeoutMs, () => clients.map((c) =>
    `${c.name}: len=${c.text.length} sv=${svString(c.doc)} text=${JSON.stringify(c.text.toString().slice(0, 80))}`
  ).join(' | '))

/** Yield to the event loop once (lets pending socket I/O be processed); not a synchronisation wait. */
export const tick = () => new Promise((resolve) => setImmediate(resolve))
