import type * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import type { ObservableV2 } from 'lib0/observable'

export interface AppEvent { type: string; v?: number; [field: string]: unknown }

export interface UserRef { id: string; name: string | null }

export interface Comment {
  id: string
  documentId: string
  section: string | null
  parentId: string | null
  author: UserRef
  content: string
  mentions: string[]
  resolved: null | { by: UserRef; at: string }
  createdAt: string
  updatedAt: string
  editedAt: string | null
  deleted: boolean
  deletedAt: string | null
  quote: string | null
  anchor: null | { start: number; end: number; text: string } | { orphaned: true } | { unavailable: true }
  sticky: null | { start: string; end: string }
  truncated?: boolean
}

export interface CommentFields {
  content: string
  section?: string
  /** code points of the section's text (see anchorFields) */
  start?: number
  end?: number
  quote?: string
  parentId?: string
  mentions?: string[]
}

export interface Lock {
  section: string
  owner: string
  ownerName: string | null
  expiresAt: string
  acquiredAt: string
  token: number
}

export interface Notification {
  id: string
  type: string
  title: string
  message: string
  resourceType: string
  resourceId: string
  read: boolean
  readAt: string | null
  createdAt: string
}

export interface PresentUser { userId: string; name: string | null; sections: Set<string | null> }

export interface ApprovalRequest { id: string; status: string; currentStep: number; totalSteps: number; steps: unknown[]; [field: string]: unknown }

export class CollabError extends Error {
  code: number
  title: string
  detail?: string
  problem: Record<string, unknown>
}

export interface CollabProviderOptions {
  token?: string
  rest?: RestClient
  connect?: boolean
  params?: Record<string, string>
  WebSocketPolyfill?: typeof WebSocket
  resyncInterval?: number
  maxBackoffTime?: number
  disableBc?: boolean
  /** browsers: react to the window's offline/online events at once (default true) */
  watchNetwork?: boolean
}

export class Comments extends ObservableV2<{ change: (comment: Comment, action: string) => void }> {
  byId: Map<string, Comment>
  list (): Comment[]
  load (): Promise<Comment[]>
  create (fields: CommentFields): Promise<Comment>
  edit (id: string, content: string, mentions?: string[]): Promise<Comment>
  resolve (id: string): Promise<Comment>
  reopen (id: string): Promise<Comment>
  delete (id: string): Promise<Comment>
}

export class Locks extends ObservableV2<{ change: (locks: Map<string, Lock>) => void }> {
  bySection: Map<string, Lock>
  lock (section?: string): Promise<Lock>
  renew (section?: string): Promise<Lock>
  unlock (section?: string, force?: boolean): void
}

export class Presence extends ObservableV2<{ change: (users: Map<string, PresentUser>, event: AppEvent | null) => void }> {
  users: Map<string, PresentUser>
  load (): Promise<Map<string, PresentUser>>
}

export class Notifications extends ObservableV2<{ change: (self: Notifications) => void }> {
  items: Notification[]
  unread: number
  total: number
  load (): Promise<Notifications>
  markAllRead (): Promise<void>
}

export class Approvals extends ObservableV2<{ change: (event: AppEvent) => void }> {
  requests: Map<string, ApprovalRequest>
  documentStatus: string | null
}

export class CollabProvider extends WebsocketProvider {
  constructor (serverUrl: string, room: string, doc: Y.Doc, opts?: CollabProviderOptions)
  documentId: string
  section: string | null
  rest: RestClient
  /** every local edit acknowledged as durable by the server */
  saved: boolean
  readonly unsaved: number
  readOnly: boolean
  connectionId: string | null
  comments: Comments
  locks: Locks
  presence: Presence
  notifications: Notifications
  approvals: Approvals
  whenSaved (): Promise<void>
  sendEvent (event: AppEvent): void
  request (event: AppEvent): Promise<any>
  on (name: 'event', f: (event: AppEvent) => void): void
  on (name: 'saved', f: (saved: boolean) => void): void
  on (name: 'denied', f: (reason: string) => void): void
  on (name: string, f: (...args: any[]) => void): void
}

export function httpOrigin (serverUrl: string): string

export class RestClient {
  constructor (origin?: string, opts?: { token?: string; fetch?: typeof fetch; credentials?: RequestCredentials })
  call (method: string, path: string, body?: unknown, raw?: boolean): Promise<any>
  me (): Promise<{ id: string; email: string; name: string; role: string; sessionId: string }>
  openSession (): Promise<{ sessionId: string }>
  closeSession (): Promise<null>
  documents (params?: Record<string, unknown>): Promise<{ items: any[]; total: number }>
  document (id: string, params?: Record<string, unknown>): Promise<any>
  createDocument (fields: Record<string, unknown>): Promise<any>
  updateDocument (id: string, fields: Record<string, unknown>): Promise<any>
  setStatus (id: string, status: string): Promise<any>
  exportMarkdown (id: string): Promise<string>
  revisions (id: string, params?: Record<string, unknown>): Promise<{ items: any[] }>
  revision (id: string, revisionId: string): Promise<any>
  saveRevision (id: string, message?: string): Promise<any>
  diff (id: string, a: string, b: string): Promise<any>
  restore (id: string, revisionId: string): Promise<any>
  comments (id: string, params?: Record<string, unknown>): Promise<{ items: Comment[]; total: number }>
  createComment (id: string, fields: CommentFields & { id?: string }): Promise<Comment>
  resolveComment (commentId: string): Promise<Comment>
  reopenComment (commentId: string): Promise<Comment>
  deleteComment (commentId: string): Promise<null>
  locks (id: string): Promise<{ locks: any[] }>
  presence (id: string): Promise<{ users: any[] }>
  people (id: string, params?: { q?: string; limit?: number }): Promise<{ items: Array<{ id: string; name: string }> }>
  notifications (params?: Record<string, unknown>): Promise<{ items: Notification[]; total: number; unread: number }>
  markNotificationRead (id: string): Promise<any>
  markAllNotificationsRead (): Promise<any>
  workflows (params?: Record<string, unknown>): Promise<{ items: any[] }>
  createWorkflow (fields: Record<string, unknown>): Promise<any>
  approvals (id: string): Promise<{ items: ApprovalRequest[] }>
  approvalChain (id: string): Promise<any>
  requestApproval (id: string, workflowId: string, revisionId?: string): Promise<any>
  decide (requestId: string, step: number, decision: 'approve' | 'reject', comment?: string): Promise<any>
  resubmit (requestId: string): Promise<any>
}

export interface ResolvedAnchor { from: number; to: number; start: number; end: number; text: string }
export function resolveAnchor (ytext: Y.Text, comment: Pick<Comment, 'sticky'>): ResolvedAnchor | { orphaned: true } | null
export function anchorFields (ytext: Y.Text, from: number, to: number): { start: number; end: number; quote: string }
export function utf16ToCodePoints (text: string, index: number): number
export function codePointsToUtf16 (text: string, points: number): number
export const MESSAGE_APP_EVENT: 100
export function encodeEventMessage (event: AppEvent): Uint8Array
export function decodeEvent (payload: Uint8Array): AppEvent | null
