// Comment anchors on the client's own copy: the server's `sticky` positions are base64 Yjs
// relative positions; resolving them here follows every edit this client has seen.
import * as Y from 'yjs'
import { codePointsToUtf16, utf16ToCodePoints } from './text.js'

function fromBase64 (text) {
  if (typeof Buffer !== 'undefined') return new Uint8Array(Buffer.from(text, 'base64'))
  const binary = atob(text)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

function absolute (doc, encoded) {
  try {
    const rel = Y.decodeRelativePosition(fromBase64(encoded))
    return Y.createAbsolutePositionFromRelativePosition(rel, doc)
  } catch {
    return null
  }
}

/**
 * Where a comment's anchor lies in `ytext` now: `{from, to}` in UTF-16 units (for
 * CodeMirror), `{start, end}` in code points (the server's units) and `text`; null when the
 * comment has no sticky anchor or it is not of this text; `{orphaned: true}` when its text
 * was deleted.
 */
export function resolveAnchor (ytext, comment) {
  const sticky = comment && comment.sticky
  if (!sticky || !sticky.start || !sticky.end) return null
  const doc = ytext.doc
  const start = absolute(doc, sticky.start)
  const end = absolute(doc, sticky.end)
  if (start === null || end === null || start.type !== ytext || end.type !== ytext) return null
  const content = ytext.toString()
  const from = start.index
  const to = end.index
  if (to <= from) return { orphaned: true }
  return {
    from,
    to,
    start: utf16ToCodePoints(content, from),
    end: utf16ToCodePoints(content, to),
    text: content.slice(from, to)
  }
}

/**
 * The fields of a `comment.create` anchored on `[from, to)` (UTF-16 units of `ytext`):
 * `start`/`end` in code points and the `quote` the server re-finds if the text moved.
 */
export function anchorFields (ytext, from, to) {
  const content = ytext.toString()
  return {
    start: utf16ToCodePoints(content, from),
    end: utf16ToCodePoints(content, to),
    quote: content.slice(from, to)
  }
}

export { codePointsToUtf16, utf16ToCodePoints }
