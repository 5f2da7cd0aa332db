// The typed views of the application events: comments, locks, presence, notifications and
// approvals. Each keeps a live state from the events and emits `change`.
import { ObservableV2 } from 'lib0/observable'
import { CollabError } from './errors.js'

function uuid () {
  return globalThis.crypto.randomUUID()
}

/** Comments of the document: a live list (upserted by id) and promise-returning requests. */
export class Comments extends ObservableV2 {
  constructor (provider) {
    super()
    this.provider = provider
    /** @type {Map<string, object>} comment id -> comment (the REST JSON) */
    this.byId = new Map()
    provider.on('event', (event) => {
      if (event.type === 'comment' && event.comment) this._upsert(event.comment, event.action)
    })
  }

  /** Every comment known, oldest first. */
  list () {
    return [...this.byId.values()].sort((a, b) => (a.createdAt < b.createdAt ? -1 : 1))
  }

  /** Load the stored comments over REST (and keep them live from then on). */
  async load () {
    const page = await this.provider.rest.comments(this.provider.documentId, { limit: 200 })
    for (const comment of page.items) this._upsert(comment, 'loaded')
    return this.list()
  }

  /** `fields`: `content`, `section`, `start`/`end` (code points), `quote`, `parentId`, `mentions`. */
  async create (fields) {
    const comment = await this.provider.request({ type: 'comment.create', id: uuid(), ...fields })
    this._upsert(comment, 'created')
    return comment
  }

  async edit (id, content, mentions) {
    const fields = { type: 'comment.edit', id, content }
    if (mentions !== undefined) fields.mentions = mentions
    return this._apply(await this.provider.request(fields), 'edited')
  }

  async resolve (id) {
    return this._apply(await this.provider.request({ type: 'comment.resolve', id }), 'resolved')
  }

  async reopen (id) {
    return this._apply(await this.provider.request({ type: 'comment.reopen', id }), 'reopened')
  }

  async delete (id) {
    return this._apply(await this.provider.request({ type: 'comment.delete', id }), 'deleted')
  }

  _apply (comment, action) {
    this._upsert(comment, action)
    return comment
  }

  _upsert (comment, action) {
    this.byId.set(comment.id, comment)
    this.emit('change', [comment, action])
  }
}

/** Section locks of the document: live state, lock/unlock/renew, re-taken after a reconnect. */
export class Locks extends ObservableV2 {
  constructor (provider) {
    super()
    this.provider = provider
    /** @type {Map<string, object>} section -> lock (`owner`, `ownerName`, `expiresAt`...) */
    this.bySection = new Map()
    this._held = new Set()
    this._waiting = new Map()
    provider.on('event', (event) => this._onEvent(event))
  }

  /** Take (or renew) the lock of `section` (default: the provider's own section). */
  lock (section = this.provider.section) {
    this._held.add(section)
    return new Promise((resolve, reject) => {
      const waiting = this._waiting.get(section) || []
      waiting.push({ resolve, reject })
      this._waiting.set(section, waiting)
      this.provider.sendEvent({ type: 'lock', section })
    })
  }

  renew (section = this.provider.section) {
    return this.lock(section)
  }

  /** Release it; `force` lets an admin of the document release another user's lock. */
  unlock (section = this.provider.section, force = false) {
    this._held.delete(section)
    const event = { type: 'unlock', section }
    if (force) event.force = true
    this.provider.sendEvent(event)
  }

  _onEvent (event) {
    switch (event.type) {
      case 'joined':
        for (const section of this._held) this.provider.sendEvent({ type: 'lock', section })
        return
      case 'locks':
        this.bySection = new Map(event.locks.map((lock) => [lock.section, lock]))
        break
      case 'locked':
        this.bySection.set(event.section, event)
        this._answer(event.section, (w) => w.resolve(event))
        break
      case 'unlocked':
        this.bySection.delete(event.section)
        // An admin took it away: do not take it again at the next reconnect.
        if (event.reason === 'forced') this._held.delete(event.section)
        break
      case 'error':
        if (event.section === undefined || event.requestId !== undefined) return
        this._held.delete(event.section)
        this._answer(event.section, (w) => w.reject(new CollabError(event)))
        return
      default:
        return
    }
    this.emit('change', [this.bySection])
  }

  _answer (section, how) {
    const waiting = this._waiting.get(section)
    if (waiting === undefined) return
    this._waiting.delete(section)
    waiting.forEach(how)
  }
}

/** Who is in the document, and in which sections. */
export class Presence extends ObservableV2 {
  constructor (provider) {
    super()
    this.provider = provider
    /** @type {Map<string, {userId: string, name: string, sections: Set<string|null>}>} */
    this.users = new Map()
    provider.on('event', (event) => {
      if (event.type !== 'presence') return
      if (event.action === 'left') {
        this.users.delete(event.user)
      } else {
        const user = this._user(event.user, event.name)
        user.sections.add(event.section ?? null)
      }
      this.emit('change', [this.users, event])
    })
  }

  /** Load who is there now over REST. */
  async load () {
    const answer = await this.provider.rest.presence(this.provider.documentId)
    for (const entry of answer.users) {
      const user = this._user(entry.userId, entry.name)
      for (const section of entry.sections) user.sections.add(section.sectionId)
    }
    this.emit('change', [this.users, null])
    return this.users
  }

  _user (id, name) {
    let user = this.users.get(id)
    if (user === undefined) {
      user = { userId: id, name, sections: new Set() }
      this.users.set(id, user)
    }
    if (name) user.name = name
    return user
  }
}

/** The user's notifications: live, with the unread count. */
export class Notifications extends ObservableV2 {
  constructor (provider) {
    super()
    this.provider = provider
    this.items = []
    this.unread = 0
    this.total = 0
    provider.on('event', (event) => {
      if (event.type === 'notification') {
        this.items = [event.notification, ...this.items.filter((n) => n.id !== event.notification.id)]
        this.total++
        if (!event.notification.read) this.unread++
      } else if (event.type === 'notification.count') {
        this.unread = event.unread
        this.total = event.total
      } else {
        return
      }
      this.emit('change', [this])
    })
  }

  async load () {
    const page = await this.provider.rest.notifications()
    this.items = page.items
    this.unread = page.unread
    this.total = page.total
    this.emit('change', [this])
    return this
  }

  async markAllRead () {
    await this.provider.rest.markAllNotificationsRead()
    this.items = this.items.map((n) => ({ ...n, read: true }))
    this.unread = 0
    this.emit('change', [this])
  }
}

/** The document's approval requests, as the `approval` events report them. */
export class Approvals extends ObservableV2 {
  constructor (provider) {
    super()
    this.provider = provider
    /** @type {Map<string, object>} request id -> request */
    this.requests = new Map()
    this.documentStatus = null
    provider.on('event', (event) => {
      if (event.type !== 'approval') return
      this.requests.set(event.request.id, event.request)
      this.documentStatus = event.documentStatus ?? this.documentStatus
      this.emit('change', [event])
    })
  }
}
