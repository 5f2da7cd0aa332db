// Offsets: JavaScript strings, Yjs and CodeMirror count UTF-16 code units; the server counts
// code points (Python string offsets). These convert between the two for any text.

/** The code-point offset of UTF-16 offset `index` in `text` (inside a pair: after it). */
export function utf16ToCodePoints (text, index) {
  let points = 0
  let i = 0
  const end = Math.min(index, text.length)
  while (i < end) {
    const unit = text.charCodeAt(i)
    i += unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length ? 2 : 1
    points++
  }
  return points
}

/** The UTF-16 offset of code-point offset `points` in `text` (clamped to its end). */
export function codePointsToUtf16 (text, points) {
  let i = 0
  let seen = 0
  while (seen < points && i < text.length) {
    const unit = text.charCodeAt(i)
    i += unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length ? 2 : 1
    seen++
  }
  return i
}
