// The REST API (docs/api.md), with a token (Authorization: Bearer) or, in a browser on the
// server's own origin, the session cookie.
import { CollabError } from './errors.js'

function query (params) {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === '') continue
    for (const one of Array.isArray(value) ? value : [value]) search.append(key, String(one))
  }
  const text = search.toString()
  return text ? `?${text}` : ''
}

const enc = encodeURIComponent

export class RestClient {
  /**
   * @param {string} origin e.g. `http://127.0.0.1:8765` ('' in a page served by the server)
   * @param {{token?: string, fetch?: typeof fetch, credentials?: RequestCredentials}} [opts]
   */
  constructor (origin = '', opts = {}) {
    this.origin = origin.replace(/\/+$/, '')
    this.token = opts.token
    // 'same-origin' keeps the session cookie working on the server's own origin (and lets
    // POST /session store it); an app on another origin that relies on the cookie passes
    // 'include' (its origin must then be listed in COLLAB_ALLOWED_ORIGINS).
    this.credentials = opts.credentials || 'same-origin'
    this._fetch = opts.fetch || globalThis.fetch.bind(globalThis)
  }

  /** One call: JSON in and out; a problem+json answer rejects with a CollabError. */
  async call (method, path, body, raw = false) {
    const headers = {}
    if (this.token) headers.Authorization = `Bearer ${this.token}`
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const response = await this._fetch(`${this.origin}/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: this.credentials
    })
    if (!response.ok) {
      let problem = { status: response.status, title: response.statusText }
      try {
        problem = await response.json()
      } catch {}
      throw new CollabError({ ...problem, status: response.status })
    }
    if (raw) return response
    if (response.status === 204) return null
    return response.json()
  }

  me () { return this.call('GET', '/me') }
  /** Trade the token for the HttpOnly session cookie (same origin). */
  openSession () { return this.call('POST', '/session') }
  closeSession () { return this.call('DELETE', '/session') }

  documents (params) { return this.call('GET', `/documents${query(params)}`) }
  document (id, params) { return this.call('GET', `/documents/${enc(id)}${query(params)}`) }
  createDocument (fields) { return this.call('POST', '/documents', fields) }
  updateDocument (id, fields) { return this.call('PATCH', `/documents/${enc(id)}`, fields) }
  setStatus (id, status) { return this.call('POST', `/documents/${enc(id)}/status`, { status }) }
  async exportMarkdown (id) {
    const response = await this.call('GET', `/documents/${enc(id)}/export?format=markdown`, undefined, true)
    return response.text()
  }

  revisions (id, params) { return this.call('GET', `/documents/${enc(id)}/revisions${query(params)}`) }
  revision (id, revisionId) { return this.call('GET', `/documents/${enc(id)}/revisions/${enc(revisionId)}`) }
  saveRevision (id, message) {
    return this.call('POST', `/documents/${enc(id)}/revisions`, message ? { message } : undefined)
  }

  diff (id, a, b) { return this.call('GET', `/documents/${enc(id)}/revisions/${enc(a)}/diff/${enc(b)}`) }
  restore (id, revisionId) {
    return this.call('POST', `/documents/${enc(id)}/revisions/${enc(revisionId)}/restore`)
  }

  comments (id, params) { return this.call('GET', `/documents/${enc(id)}/comments${query(params)}`) }
  createComment (id, fields) { return this.call('POST', `/documents/${enc(id)}/comments`, fields) }
  resolveComment (commentId) { return this.call('POST', `/comments/${enc(commentId)}/resolve`) }
  reopenComment (commentId) { return this.call('POST', `/comments/${enc(commentId)}/reopen`) }
  deleteComment (commentId) { return this.call('DELETE', `/comments/${enc(commentId)}`) }

  locks (id) { return this.call('GET', `/documents/${enc(id)}/locks`) }
  presence (id) { return this.call('GET', `/documents/${enc(id)}/presence`) }
  /** Whom a comment may mention: `{items: [{id, name}]}` whose name contains `q`. */
  people (id, params) { return this.call('GET', `/documents/${enc(id)}/people${query(params)}`) }

  notifications (params) { return this.call('GET', `/notifications${query(params)}`) }
  markNotificationRead (nid) { return this.call('POST', `/notifications/${enc(nid)}/read`) }
  markAllNotificationsRead () { return this.call('POST', '/notifications/read-all') }

  workflows (params) { return this.call('GET', `/approval-workflows${query(params)}`) }
  createWorkflow (fields) { return this.call('POST', '/approval-workflows', fields) }
  approvals (id) { return this.call('GET', `/documents/${enc(id)}/approvals`) }
  approvalChain (id) { return this.call('GET', `/documents/${enc(id)}/approval-chain`) }
  requestApproval (id, workflowId, revisionId) {
    const body = { workflowId }
    if (revisionId) body.revisionId = revisionId
    return this.call('POST', `/documents/${enc(id)}/approvals`, body)
  }

  decide (requestId, step, decision, comment) {
    const body = { decision }
    if (comment) body.comment = comment
    return this.call('POST', `/approvals/${enc(requestId)}/steps/${step}/decision`, body)
  }

  resubmit (requestId) { return this.call('POST', `/approvals/${enc(requestId)}/resubmit`) }
}
