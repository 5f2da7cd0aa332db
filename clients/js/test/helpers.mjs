// Shared by the Node tests: the server under test comes from the environment the pytest
// driver (tests/js) sets: COLLAB_WS_URL, COLLAB_HTTP_URL, COLLAB_TOKENS (JSON: name -> token).
import * as Y from 'yjs'
import WebSocket from 'ws'
import { CollabProvider, RestClient } from '../src/index.js'

export const WS_URL = process.env.COLLAB_WS_URL
export const HTTP_URL = process.env.COLLAB_HTTP_URL
export const TOKENS = JSON.parse(process.env.COLLAB_TOKENS || '{}')
if (!WS_URL || !HTTP_URL) throw new Error('run through pytest tests/js (COLLAB_WS_URL unset)')

const WAIT_MS = 10000
process.setMaxListeners(100) // y-websocket adds an exit listener per provider
const providers = []

export function rest (user) {
  return new RestClient(HTTP_URL, { token: TOKENS[user] })
}

/** A provider for `user` on `room`, with a fresh Y.Doc; destroyed by `closeAll`. */
export function connect (user, room, opts = {}) {
  const doc = new Y.Doc()
  const provider = new CollabProvider(WS_URL, room, doc, {
    token: TOKENS[user],
    WebSocketPolyfill: WebSocket,
    maxBackoffTime: 300,
    ...opts
  })
  providers.push(provider)
  return provider
}

export function closeAll () {
  for (const provider of providers.splice(0)) {
    provider.destroy()
    provider.awareness.destroy()
    provider.doc.destroy()
  }
}

/** Resolves with the first event of `name` on `observable` for which `test` holds. */
export function once (observable, name, test = () => true, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      observable.off(name, listener)
      reject(new Error(`no matching '${name}' within ${ms} ms`))
    }, ms)
    const listener = (...args) => {
      if (!test(...args)) return
      clearTimeout(timer)
      observable.off(name, listener)
      resolve(args[0])
    }
    observable.on(name, listener)
  })
}

/** Resolves once `provider` sees an application event of `type` for which `test` holds. */
export function event (provider, type, test = () => true, ms = WAIT_MS) {
  return once(provider, 'event', (e) => e.type === type && test(e), ms)
}

export function synced (provider) {
  return provider.synced ? Promise.resolve() : once(provider, 'sync', (s) => s === true)
}

/** Polls `check` (a cheap read of local state) until it holds; for conditions with no event. */
export async function until (check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Resolves when `ytext` (of a remote copy) holds `expected`. */
export function textBecomes (ytext, expected, ms = WAIT_MS) {
  if (ytext.toString() === expected) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ytext.unobserve(observer)
      reject(new Error(`text is ${JSON.stringify(ytext.toString())}, expected ${JSON.stringify(expected)}`))
    }, ms)
    const observer = () => {
      if (ytext.toString() !== expected) return
      clearTimeout(timer)
      ytext.unobserve(observer)
      resolve()
    }
    ytext.observe(observer)
  })
}

let counter = 0
export function newId (prefix) {
  counter++
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`
}
