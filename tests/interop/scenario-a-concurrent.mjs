// Scenario a: two editors make 200 interleaved concurrent random edits on `<prefix>doc/sec`
// and must converge to identical text and identical state vectors. A third client that joins
// afterwards must receive exactly the same state from the server.

import {
  run, makeClient, waitSynced, waitConverged, assert, prng, svEqual, svString, stateVector,
  destroyClient
} from './lib.mjs'
import { concurrentEdits } from './edits.mjs'

const TOTAL_EDITS = 200

run('a-concurrent-editors', async ({ url, prefix, seed }) => {
  const room = `${prefix}doc/sec`
  const rng = prng(seed)
  const a = makeClient(url, room, { name: 'A' })
  const b = makeClient(url, room, { name: 'B' })
  await Promise.all([waitSynced(a), waitSynced(b)])

  const stats = await concurrentEdits(rng, [a, b], TOTAL_EDITS)
  assert(stats.made === TOTAL_EDITS, `made ${stats.made} edits, expected ${TOTAL_EDITS}`)

  await waitConverged([a, b], 'A and B to converge (equal text and state vectors)', 20000)
  const text = a.text.toString()
  const sv = svString(a.doc)
  assert(text === b.text.toString(), 'texts differ after convergence')
  assert(svEqual(a.doc, b.doc), 'state vectors differ after convergence')
  assert(text.length >= 50, `converged text is trivially short (${text.length} chars): ${JSON.stringify(text)}`)
  const svMap = stateVector(a.doc)
  assert(svMap.has(a.doc.clientID) && svMap.has(b.doc.clientID),
    `converged state vector ${sv} lacks one of the editors (${a.doc.clientID}, ${b.doc.clientID})`)

  // A fresh observer must get the same state from the server alone, complete at 'sync' time.
  destroyClient(a)
  destroyClient(b)
  const c = makeClient(url, room, { name: 'C-observer' })
  await waitSynced(c)
  assert(c.text.toString() === text,
    `late observer got different text from server: ${c.text.length} chars vs ${text.length}`)
  assert(svString(c.doc) === sv, `late observer state vector ${svString(c.doc)} != editors' ${sv}`)

  return { room, edits: stats.made, inserts: stats.insert, deletes: stats.delete, transactions: stats.transactions, remoteUpdatesWhileEditing: stats.remoteUpdatesWhileEditing, length: text.length }
})
