// Scenario c: offline edits. A and B are synced; B disconnects (provider.disconnect()); both edit
// (A online, B offline); B reconnects (provider.connect()); both converge and contain both edits.
// A third, always-online witness W proves A's online edit reached the server before B returns,
// and must also end up with B's offline edit.

import { run, makeClient, waitSynced, waitConverged, waitDisconnected, waitUntil, assert } from './lib.mjs'

const INITIAL = 'Shared intro paragraph.\n'
const A_EDIT = '[A wrote this while B was offline]'
const B_EDIT = '[B wrote this offline]'

run('c-offline-edits', async ({ url, prefix }) => {
  const room = `${prefix}offline`
  const a = makeClient(url, room, { name: 'A' })
  const b = makeClient(url, room, { name: 'B' })
  const w = makeClient(url, room, { name: 'W' })
  await Promise.all([waitSynced(a), waitSynced(b), waitSynced(w)])

  a.text.insert(0, INITIAL)
  await waitConverged([a, b, w], 'B and W to receive the initial text')
  assert(b.text.toString() === INITIAL, `B has ${JSON.stringify(b.text.toString())}`)

  b.provider.disconnect()
  await waitDisconnected(b)

  // A edits online (at the start), B edits offline (at the end, and a map entry).
  a.text.insert(0, A_EDIT)
  b.text.insert(b.text.length, B_EDIT)
  b.doc.getMap('meta').set('offline', true)
  assert(!b.text.toString().includes(A_EDIT), 'B received A\'s edit while disconnected')

  // A's online edit has reached the server once the online witness sees it.
  await waitConverged([a, w], 'W to receive A\'s online edit')
  assert(w.text.toString().includes(A_EDIT), 'W lacks A\'s edit')

  b.provider.connect()
  await waitSynced(b)

  await waitConverged([a, b, w], 'A, B and W to converge after B reconnects', 15000,
    () => a.text.toString().includes(A_EDIT) && a.text.toString().includes(B_EDIT))
  const text = a.text.toString()
  assert(text === b.text.toString(), 'texts differ')
  assert(text.includes(A_EDIT) && text.includes(B_EDIT) && text.includes(INITIAL),
    `converged text misses an edit: ${JSON.stringify(text)}`)
  assert(text === A_EDIT + INITIAL + B_EDIT, `unexpected converged text ${JSON.stringify(text)}`)
  for (const c of [a, b, w]) {
    await waitUntil(`${c.name} to have B's offline map entry`, () => c.doc.getMap('meta').get('offline') === true,
      [[c.doc, 'update']])
  }

  return { room, text }
})
