// Application events: msgpack maps inside y-websocket message type 100 (docs/protocol.md).
import * as encoding from 'lib0/encoding'
import { decode, encode } from '@msgpack/msgpack'

export const MESSAGE_APP_EVENT = 100
export const EVENT_VERSION = 1
const MAX_EVENT_BYTES = 64 * 1024

/** Frame an event as a y-websocket message of type 100. */
export function encodeEventMessage (event) {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, MESSAGE_APP_EVENT)
  encoding.writeVarUint8Array(encoder, encode({ v: EVENT_VERSION, ...event }))
  return encoding.toUint8Array(encoder)
}

/** Decode the msgpack payload of a type-100 message; null when it is not an event map. */
export function decodeEvent (payload) {
  if (payload.length > MAX_EVENT_BYTES) return null
  let body
  try {
    body = decode(payload)
  } catch {
    return null
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return null
  if (typeof body.type !== 'string') return null
  return body
}

/** Whether a y-websocket message is an update the server acknowledges (sync step 2 or update). */
export function isUpdateMessage (data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data)
  return bytes.length > 1 && bytes[0] === 0 && (bytes[1] === 1 || bytes[1] === 2)
}
