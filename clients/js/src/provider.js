// CollabProvider: y-websocket's WebsocketProvider, opted in to the application events, with
// durable acknowledgements and the typed feature APIs (docs/protocol.md).
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import { WebsocketProvider } from 'y-websocket'
import { MESSAGE_APP_EVENT, decodeEvent, encodeEventMessage, isUpdateMessage } from './events.js'
import { Approvals, Comments, Locks, Notifications, Presence } from './features.js'
import { RestClient } from './rest.js'
import { CollabError } from './errors.js'

export { CollabError }

const MESSAGE_AUTH = 2

/** `ws://host:port/ws` -> `http://host:port` (the REST API's origin). */
export function httpOrigin (serverUrl) {
  const url = new URL(serverUrl)
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:'
  return url.origin
}

/** One per room (`D` for the outline, `D/S` for a section). */
export class CollabProvider extends WebsocketProvider {
  /**
   * @param {string} serverUrl the sockets' base URL, e.g. `ws://127.0.0.1:8765/ws`
   * @param {string} room `D` or `D/S`
   * @param {Y.Doc} doc
   * @param {object} [opts] y-websocket's options, plus `token`, `rest` (a RestClient)
   */
  constructor (serverUrl, room, doc, opts = {}) {
    const { token, rest, connect = true, params = {}, watchNetwork = true, ...rest0 } = opts
    const Base = opts.WebSocketPolyfill || globalThis.WebSocket
    const holder = { provider: null }
    class CountingSocket extends Base {
      send (data) {
        if (holder.provider !== null) holder.provider._sending(this, data)
        super.send(data)
      }
    }
    const query = { ...params, events: '1' }
    if (token) query.token = token
    super(serverUrl, room, doc, {
      disableBc: true,
      ...rest0,
      params: query,
      WebSocketPolyfill: CountingSocket,
      connect: false
    })
    holder.provider = this
    this.documentId = room.split('/')[0]
    this.section = room.includes('/') ? room.split('/')[1] : null
    this.rest = rest || new RestClient(httpOrigin(serverUrl), { token })
    /** Whether every local edit was acknowledged as durable by the server. */
    this.saved = true
    /** What the server said in `joined` / `access`. */
    this.readOnly = false
    this.connectionId = null
    this._localSeq = 0
    this._pending = [] // [seq, update] of local updates not acknowledged yet
    this._socket = null
    this._sent = 0
    this._marks = [] // [message number on this socket, local seq it covers]
    this._outbox = []
    this._requests = new Map()
    this._nextRequest = 1

    const relay = this._updateHandler
    this.doc.off('update', relay)
    this._updateHandler = (update, origin) => {
      if (origin !== this) {
        this._localSeq++
        this._pending.push([this._localSeq, update])
        this._setSaved(false)
      }
      relay(update, origin)
    }
    this.doc.on('update', this._updateHandler)

    this.messageHandlers[MESSAGE_APP_EVENT] = (_encoder, decoder) => {
      const event = decodeEvent(decoding.readVarUint8Array(decoder))
      if (event !== null) this._onEvent(event)
    }
    this.messageHandlers[MESSAGE_AUTH] = (_encoder, decoder) => {
      decoding.readVarUint(decoder)
      const reason = decoding.readVarString(decoder)
      this.emit('denied', [reason])
    }
    this.on('status', ({ status }) => {
      if (status === 'connected') this._flush()
    })
    this.on('connection-close', () => {
      this._socket = null
      this._sent = 0
      this._marks = []
    })
    this.on('sync', (synced) => {
      if (synced) this._resendPending()
    })

    // In a browser, the network going away closes the socket at once (instead of after
    // y-websocket's 30 s watchdog) and its return reconnects at once (instead of backing off).
    this._network = null
    if (watchNetwork && typeof window !== 'undefined' && window.addEventListener) {
      const reconnect = () => {
        if (!this.shouldConnect) return
        this.disconnect()
        this.connect()
      }
      this._network = reconnect
      window.addEventListener('offline', reconnect)
      window.addEventListener('online', reconnect)
    }

    this.comments = new Comments(this)
    this.locks = new Locks(this)
    this.presence = new Presence(this)
    this.notifications = new Notifications(this)
    this.approvals = new Approvals(this)
    if (connect) this.connect()
  }

  /** Local edits not acknowledged yet (kept, and resent after a reconnect). */
  get unsaved () {
    return this._pending.length
  }

  /** Resolves once every local edit made so far is acknowledged as durable. */
  whenSaved () {
    if (this.saved) return Promise.resolve()
    const target = this._localSeq
    return new Promise((resolve) => {
      const check = () => {
        if (this._pending.length === 0 || this._pending[0][0] > target) {
          this.off('saved', check)
          resolve()
        }
      }
      this.on('saved', check)
    })
  }

  /** Send an application event (queued while disconnected). */
  sendEvent (event) {
    const frame = encodeEventMessage(event)
    if (this._open()) {
      this.ws.send(frame)
    } else {
      this._outbox.push(frame)
    }
  }

  /**
   * Send a request event with a `requestId`; resolves with the answer (`comment.ack`...),
   * rejects with a `CollabError` on the `error` event that names it. Requests not answered
   * when the connection drops are sent again after the reconnect.
   */
  request (event) {
    const requestId = this._nextRequest++
    return new Promise((resolve, reject) => {
      const message = { ...event, requestId }
      this._requests.set(requestId, { message, resolve, reject })
      if (this._open()) this.ws.send(encodeEventMessage(message)) // else sent by _flush

    })
  }

  _open () {
    return this.wsconnected && this.ws !== null && this.ws.readyState === 1
  }

  _sending (socket, data) {
    if (socket !== this._socket) {
      this._socket = socket
      this._sent = 0
      this._marks = []
    }
    if (isUpdateMessage(data)) {
      this._sent++
      this._marks.push([this._sent, this._localSeq])
    }
  }

  _acknowledged (count) {
    let covered = 0
    while (this._marks.length > 0 && this._marks[0][0] <= count) {
      covered = Math.max(covered, this._marks.shift()[1])
    }
    while (this._pending.length > 0 && this._pending[0][0] <= covered) this._pending.shift()
    if (this._pending.length === 0) this._setSaved(true)
  }

  _setSaved (saved) {
    if (saved !== this.saved || saved) {
      this.saved = saved
      this.emit('saved', [saved])
    }
  }

  _resendPending () {
    if (this._pending.length === 0 || this.ws === null) return
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, 0)
    syncProtocol.writeUpdate(encoder, Y.mergeUpdates(this._pending.map(([, u]) => u)))
    this.ws.send(encoding.toUint8Array(encoder))
  }

  _flush () {
    const queued = this._outbox
    this._outbox = []
    for (const frame of queued) this.ws.send(frame)
    for (const { message } of this._requests.values()) this.ws.send(encodeEventMessage(message))
  }

  _onEvent (event) {
    switch (event.type) {
      case 'ack':
        this._acknowledged(event.updates)
        break
      case 'joined':
        this.readOnly = Boolean(event.readOnly)
        this.connectionId = event.connection
        break
      case 'access':
        this.readOnly = Boolean(event.readOnly)
        break
      case 'comment.ack':
        this._settle(event.requestId, (r) => r.resolve(event.comment))
        break
      case 'error':
        if (event.requestId !== undefined && this._requests.has(event.requestId)) {
          this._settle(event.requestId, (r) => r.reject(new CollabError(event)))
        }
        break
    }
    this.emit('event', [event])
  }

  _settle (requestId, how) {
    const request = this._requests.get(requestId)
    if (request === undefined) return
    this._requests.delete(requestId)
    how(request)
  }

  destroy () {
    for (const request of this._requests.values()) {
      request.reject(new CollabError({ code: 0, title: 'provider destroyed' }))
    }
    this._requests.clear()
    if (this._network !== null) {
      window.removeEventListener('offline', this._network)
      window.removeEventListener('online', this._network)
    }
    super.destroy()
  }
}
