// Scenario f: wire-format check. A raw `ws` client joins a room and behaves like a minimal
// vanilla y-websocket client (answers sync step 1, applies step 2 / updates, applies awareness)
// while two real WebsocketProvider editors make 200 concurrent edits and update their awareness
// (cursor) as they go. Every frame the raw client receives must be something a vanilla
// y-websocket client can parse:
//   - a binary frame (a text frame would be misread by `new Uint8Array(event.data)`),
//   - first varuint (lib0 encoding) is 0 sync (sub-type 0 step1 / 1 step2 / 2 update),
//     1 awareness, 2 auth or 3 query-awareness; anything else fails,
//   - the payload decodes (state vector / Yjs update / awareness update / auth message), and
//   - there are no trailing bytes (a vanilla client reads one message per frame; anything after
//     it would be silently dropped).
// Finally the raw client's document, built only from those frames, must equal the editors'.

import { EventEmitter } from 'node:events'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import * as awarenessProtocol from 'y-protocols/awareness'
import {
  run, makeClient, waitSynced, waitConverged, waitUntil, assert, prng, svEqual, svString, WebSocket, Y,
  onCleanup, ScenarioError
} from './lib.mjs'
import { concurrentEdits } from './edits.mjs'

const TOTAL_EDITS = 200
const MESSAGE_TYPES = { 0: 'sync', 1: 'awareness', 2: 'auth', 3: 'queryAwareness' }
const SYNC_TYPES = { 0: 'step1', 1: 'step2', 2: 'update' }

const hex = (bytes) => Buffer.from(bytes.slice(0, 32)).toString('hex') + (bytes.length > 32 ? '…' : '')

/**
 * Parse and apply one frame exactly like y-websocket's client would, but strictly.
 * Returns a label like "sync/update"; throws ScenarioError on anything a vanilla client could
 * not handle.
 */
const handleFrame = (raw, bytes, index) => {
  const where = `frame #${index} (${bytes.length} bytes: ${hex(bytes)})`
  const decoder = decoding.createDecoder(bytes)
  let type
  try {
    type = decoding.readVarUint(decoder)
  } catch (e) {
    throw new ScenarioError(`${where}: cannot read message type varuint: ${e}`)
  }
  if (!(type in MESSAGE_TYPES)) {
    throw new ScenarioError(`${where}: unknown message type ${type}; a y-websocket client only understands 0 (sync), 1 (awareness), 2 (auth), 3 (query awareness)`)
  }
  let label = MESSAGE_TYPES[type]
  try {
    if (type === 0) {
      const sub = decoding.readVarUint(decoder)
      if (!(sub in SYNC_TYPES)) throw new ScenarioError(`${where}: unknown sync sub-type ${sub} (expected 0, 1 or 2)`)
      label += '/' + SYNC_TYPES[sub]
      const payload = decoding.readVarUint8Array(decoder)
      if (sub === 0) {
        Y.decodeStateVector(payload) // must be a valid state vector
        const reply = encoding.createEncoder()
        encoding.writeVarUint(reply, 0)
        syncProtocol.writeSyncStep2(reply, raw.doc, payload)
        raw.ws.send(encoding.toUint8Array(reply))
      } else {
        Y.applyUpdate(raw.doc, payload, 'server')
        if (sub === 1) raw.synced = true
      }
    } else if (type === 1) {
      awarenessProtocol.applyAwarenessUpdate(raw.awareness, decoding.readVarUint8Array(decoder), 'server')
    } else if (type === 2) {
      const authType = decoding.readVarUint(decoder)
      const reason = authType === 0 ? decoding.readVarString(decoder) : ''
      label += `/${authType}${reason ? ':' + reason : ''}`
    } else if (type === 3) {
      const reply = encoding.createEncoder()
      encoding.writeVarUint(reply, 1)
      encoding.writeVarUint8Array(reply, awarenessProtocol.encodeAwarenessUpdate(raw.awareness, Array.from(raw.awareness.getStates().keys())))
      raw.ws.send(encoding.toUint8Array(reply))
    }
  } catch (e) {
    if (e instanceof ScenarioError) throw e
    throw new ScenarioError(`${where}: ${label} message does not decode: ${e && e.stack ? e.stack : e}`)
  }
  if (decoding.hasContent(decoder)) {
    throw new ScenarioError(`${where}: ${label} message has ${bytes.length - decoder.pos} trailing bytes that a y-websocket client would silently ignore`)
  }
  return label
}

const makeRawClient = (url, room) => {
  const doc = new Y.Doc()
  const awareness = new awarenessProtocol.Awareness(doc)
  awareness.setLocalState(null)
  const raw = {
    doc,
    awareness,
    events: new EventEmitter(),
    ws: new WebSocket(`${url}/${room}`),
    synced: false,
    frames: 0,
    counts: {},
    error: null
  }
  raw.ws.binaryType = 'nodebuffer'
  raw.ws.on('open', () => {
    // What a vanilla client sends first: sync step 1 with its (empty) state vector.
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, 0)
    syncProtocol.writeSyncStep1(enc, doc)
    raw.ws.send(encoding.toUint8Array(enc))
    raw.events.emit('frame')
  })
  raw.ws.on('message', (data, isBinary) => {
    const index = raw.frames++
    try {
      if (!isBinary) {
        throw new ScenarioError(`frame #${index} is a TEXT frame (${JSON.stringify(String(data).slice(0, 60))}); y-websocket clients need binary frames`)
      }
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      const label = handleFrame(raw, bytes, index)
      raw.counts[label] = (raw.counts[label] || 0) + 1
    } catch (e) {
      raw.error = raw.error || e
    }
    raw.events.emit('frame')
  })
  raw.ws.on('close', (code, reason) => {
    raw.closed = { code, reason: String(reason) }
    raw.events.emit('frame')
  })
  raw.ws.on('error', (e) => { raw.error = raw.error || new ScenarioError(`raw socket error: ${e}`) })
  onCleanup(() => { raw.ws.terminate(); awareness.destroy(); doc.destroy() })
  return raw
}

const checkRaw = (raw) => {
  if (raw.error) throw raw.error
  if (raw.closed && !raw.closing) throw new ScenarioError(`server closed the raw connection: ${JSON.stringify(raw.closed)}`)
}

run('f-frame-format', async ({ url, prefix, seed }) => {
  const room = `${prefix}frames`
  const rng = prng(seed)
  const raw = makeRawClient(url, room)
  await waitUntil('raw client to receive sync step 2 from the server', () => { checkRaw(raw); return raw.synced },
    [[raw.events, 'frame']])

  const a = makeClient(url, room, { name: 'A' })
  const b = makeClient(url, room, { name: 'B' })
  await Promise.all([waitSynced(a), waitSynced(b)])
  a.awareness.setLocalStateField('user', { name: 'Alice' })
  b.awareness.setLocalStateField('user', { name: 'Bob' })
  // Cursor awareness updates while typing.
  const moveCursor = (c) => () => c.awareness.setLocalStateField('cursor', { index: c.text.length })
  a.doc.on('update', moveCursor(a))
  b.doc.on('update', moveCursor(b))

  const stats = await concurrentEdits(rng, [a, b], TOTAL_EDITS)
  checkRaw(raw)
  await waitConverged([a, b], 'A and B to converge', 20000)
  await waitUntil('raw client document to equal the editors\' document',
    () => { checkRaw(raw); return raw.doc.getText('content').toString() === a.text.toString() && svEqual(raw.doc, a.doc) },
    [[raw.events, 'frame']], 20000,
    () => `raw len=${raw.doc.getText('content').length} sv=${svString(raw.doc)}; editors len=${a.text.length} sv=${svString(a.doc)}`)
  await waitUntil('raw client to see both editors\' awareness states',
    () => {
      checkRaw(raw)
      const names = Array.from(raw.awareness.getStates().values()).map((s) => s.user && s.user.name)
      return names.includes('Alice') && names.includes('Bob')
    }, [[raw.events, 'frame']])
  checkRaw(raw)
  raw.closing = true

  const syncFrames = Object.entries(raw.counts).filter(([k]) => k.startsWith('sync')).reduce((n, [, v]) => n + v, 0)
  assert(syncFrames > 0 && (raw.counts.awareness || 0) > 0, `expected sync and awareness frames, got ${JSON.stringify(raw.counts)}`)
  return { room, edits: stats.made, frames: raw.frames, byType: raw.counts, length: a.text.length }
})
