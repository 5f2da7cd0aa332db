// Scenario g: edits that split UTF-16 surrogate pairs (emoji). Y.Text positions are UTF-16 code
// units, so a Yjs client can insert into, or delete half of, an emoji; Yjs then replaces both
// halves with U+FFFD on every peer. Real editors rarely do this (scenario a avoids it), but any
// client may, and the server's copy must stay identical to the clients': a late joiner must get
// exactly the editors' text and state vector.
//   1. deterministic: insert inside one emoji and delete half of another, concurrently;
//   2. random: 100 concurrent edits on an emoji-heavy alphabet at unaligned positions.

import { run, makeClient, waitSynced, waitConverged, assert, prng, svString, destroyClient } from './lib.mjs'
import { concurrentEdits } from './edits.mjs'

const codePoints = (s) => Array.from(s).map((ch) => ch.codePointAt(0).toString(16)).join(' ')

const lateJoinerMatches = async (url, room, reference, name) => {
  const text = reference.text.toString()
  const sv = svString(reference.doc)
  const late = makeClient(url, room, { name })
  await waitSynced(late)
  const got = late.text.toString()
  assert(got === text,
    `${name} got a different text from the server than the editors have:\n  editors: ${codePoints(text)}\n  server:  ${codePoints(got)}`)
  assert(svString(late.doc) === sv, `${name} state vector ${svString(late.doc)} != editors' ${sv}`)
  destroyClient(late)
}

run('g-split-surrogates', async ({ url, prefix, seed }) => {
  const room = `${prefix}surrogates`
  const a = makeClient(url, room, { name: 'A' })
  const b = makeClient(url, room, { name: 'B' })
  await Promise.all([waitSynced(a), waitSynced(b)])

  // 1. a0 b1 😀2,3 c4 d5 😀6,7 e8 f9
  a.text.insert(0, 'ab😀cd😀ef')
  await waitConverged([a, b], 'B to receive the initial emoji text')
  a.text.insert(3, 'X') // between the halves of the first emoji
  b.text.delete(7, 1) // the second half of the second emoji
  await waitConverged([a, b], 'A and B to converge after splitting surrogate pairs')
  const split = a.text.toString()
  assert(split.includes('X') && split.includes('\uFFFD'), `unexpected text after split: ${codePoints(split)}`)
  await lateJoinerMatches(url, room, a, 'late joiner C')

  // 2. random unaligned edits on an emoji-heavy alphabet
  const alphabet = Array.from('ab😀🎉👍🏽€ä\n')
  const stats = await concurrentEdits(prng(seed), [a, b], 100, { splitSurrogates: true, alphabet })
  await waitConverged([a, b], 'A and B to converge after random unaligned edits', 20000)
  await lateJoinerMatches(url, room, a, 'late joiner D')

  return { room, split: codePoints(split), edits: stats.made, length: a.text.length }
})
