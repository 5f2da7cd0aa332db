// Random concurrent editing shared by scenarios a, f and g.

import { tick } from './lib.mjs'

/** Mixed ASCII, BMP non-ASCII (2- and 3-byte UTF-8) and astral (surrogate pair) characters. */
export const ALPHABET = Array.from('abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789.,;äöü€😀\n')

const isLowSurrogate = (code) => code >= 0xDC00 && code <= 0xDFFF

/**
 * One random edit: 70 % insert (1..8 chars), 30 % delete (1..4 UTF-16 units), at a random
 * position. Y.Text positions are UTF-16 code units. Unless `splitSurrogates` is set, positions
 * are moved to code point boundaries, as real editors do (they never put the cursor in the
 * middle of an emoji); with it, edits may split surrogate pairs (Yjs then replaces both halves
 * with U+FFFD on every peer).
 */
export const randomEdit = (rng, text, { splitSurrogates = false, alphabet = ALPHABET } = {}) => {
  const len = text.length
  const str = splitSurrogates ? '' : text.toString()
  const align = (p) => (!splitSurrogates && p > 0 && p < len && isLowSurrogate(str.charCodeAt(p)) ? p - 1 : p)
  const alignEnd = (p) => (!splitSurrogates && p > 0 && p < len && isLowSurrogate(str.charCodeAt(p)) ? p + 1 : p)
  if (len === 0 || rng.next() < 0.7) {
    const pos = align(rng.int(0, len))
    let s = ''
    const n = rng.int(1, 8)
    for (let i = 0; i < n; i++) s += rng.pick(alphabet)
    text.insert(pos, s)
    return 'insert'
  }
  const pos = align(rng.int(0, len - 1))
  const end = alignEnd(Math.min(pos + rng.int(1, 4), len))
  text.delete(pos, end - pos)
  return 'delete'
}

/**
 * Resolve on the next update that any of `clients` receives from the server, or after
 * `maxMs` - whichever comes first. Never fails: it only paces the editing so that remote
 * updates really interleave with local ones; convergence is checked separately.
 */
const nextRemoteUpdate = (clients, maxMs) => new Promise((resolve) => {
  const handlers = []
  const done = () => {
    clearTimeout(timer)
    for (const [doc, h] of handlers) doc.off('update', h)
    resolve()
  }
  const timer = setTimeout(done, maxMs)
  for (const c of clients) {
    const h = (_u, origin) => { if (origin === c.provider) done() }
    handlers.push([c.doc, h])
    c.doc.on('update', h)
  }
})

/**
 * Make `total` edits split between `clients`, in bursts: every round each client does a burst
 * of 1..6 edits synchronously (so every side has un-propagated local changes at the same
 * time), a third of the bursts batched in a single transaction. Between rounds the event loop
 * runs (setImmediate), and every few rounds we pause until the next remote update arrives
 * (bounded by 50 ms), so that updates relayed by the server interleave with the local bursts.
 * Returns counters, including how many remote updates were applied while editing.
 */
export const concurrentEdits = async (rng, clients, total, editOptions = {}) => {
  const counts = { insert: 0, delete: 0, transactions: 0, remoteUpdatesWhileEditing: 0 }
  const remoteCounters = clients.map((c) => {
    const h = (_u, origin) => { if (origin === c.provider) counts.remoteUpdatesWhileEditing++ }
    c.doc.on('update', h)
    return () => c.doc.off('update', h)
  })
  let made = 0
  let round = 0
  while (made < total) {
    round++
    for (const c of clients) {
      const burst = Math.min(rng.int(1, 6), total - made)
      const doBurst = () => {
        for (let i = 0; i < burst; i++) {
          counts[randomEdit(rng, c.text, editOptions)]++
          made++
        }
      }
      if (rng.next() < 0.33) {
        c.doc.transact(doBurst)
        counts.transactions++
      } else {
        doBurst()
        counts.transactions += burst
      }
      if (made >= total) break
    }
    if (round % 4 === 0) {
      await nextRemoteUpdate(clients, 50)
    } else {
      await tick()
    }
  }
  remoteCounters.forEach((off) => off())
  return { made, ...counts }
}
