// Scenario b: late joiner. An editor writes a known text and Y.Map entries; a witness client in
// the same room proves the server has relayed them (the protocol has no ack). Both then leave.
// A new client joining afterwards must receive the full state from the server, complete by the
// time its provider emits 'sync'.

import { run, makeClient, waitSynced, waitUntil, waitDisconnected, assert, destroyClient, svString } from './lib.mjs'

const TEXT = 'Business strategy 2025\n1. Grow the core.\n2. Expand into adjacent markets — ünïcödé ✓ 😀\n'
const META = { title: 'Strategy', revision: 3, owner: { name: 'Ada', teams: ['core', 'growth'] } }

// Key order of a JSON object embedded in a Y.Map is not preserved by the server's CRDT (yrs
// keeps such objects in a hash map), and JSON objects are unordered anyway: compare canonically.
const canonical = (value) => JSON.stringify(value, (_key, v) =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
    : v)

const snapshot = (client) => ({
  text: client.text.toString(),
  title: client.doc.getMap('meta').get('title'),
  revision: client.doc.getMap('meta').get('revision'),
  owner: canonical(client.doc.getMap('meta').get('owner'))
})

const matches = (client) => {
  const s = snapshot(client)
  return s.text === TEXT && s.title === META.title && s.revision === META.revision &&
    s.owner === canonical(META.owner)
}

run('b-late-joiner', async ({ url, prefix }) => {
  const room = `${prefix}late`
  const editor = makeClient(url, room, { name: 'editor' })
  const witness = makeClient(url, room, { name: 'witness' })
  await Promise.all([waitSynced(editor), waitSynced(witness)])
  assert(editor.text.length === 0, `fresh room is not empty: ${JSON.stringify(editor.text.toString())}`)

  // Several separate transactions, like a person typing.
  const lines = TEXT.split(/(?<=\n)/)
  for (const line of lines) editor.text.insert(editor.text.length, line)
  const meta = editor.doc.getMap('meta')
  editor.doc.transact(() => {
    meta.set('title', META.title)
    meta.set('revision', META.revision)
    meta.set('owner', META.owner)
  })
  assert(matches(editor), 'editor does not have its own edits?!')

  // The witness receives everything only via the server => the server has it.
  await waitUntil('witness to receive the editor state through the server', () => matches(witness),
    [[witness.doc, 'update']], undefined, () => JSON.stringify(snapshot(witness)))
  const sv = svString(editor.doc)

  editor.provider.disconnect()
  witness.provider.disconnect()
  await Promise.all([waitDisconnected(editor), waitDisconnected(witness)])
  destroyClient(editor)
  destroyClient(witness)

  const late = makeClient(url, room, { name: 'late-joiner' })
  await waitSynced(late)
  // A y-websocket client considers itself synced after the server's sync step 2, so the full
  // state must be present right now, not eventually.
  assert(matches(late), `late joiner state at sync time differs: ${JSON.stringify(snapshot(late))}`)
  assert(svString(late.doc) === sv, `late joiner state vector ${svString(late.doc)} != editor's ${sv}`)

  return { room, length: TEXT.length, stateVector: sv }
})
