// Scenario e: isolation. 20 rooms with 2 clients each, all connected at the same time. In every
// room the first client writes a room-specific text and the second client appends its own
// room-specific line once it has seen the first one. Every client must end with exactly its
// room's text and its state vector must only contain the two clients of its room: no
// cross-talk between rooms.

import { run, makeClient, waitSynced, waitUntil, waitConverged, assert, stateVector, ScenarioError } from './lib.mjs'

const ROOMS = 20

run('e-isolation', async ({ url, prefix }) => {
  const rooms = []
  for (let i = 0; i < ROOMS; i++) {
    const name = `${prefix}iso/${i}`
    rooms.push({
      i,
      name,
      first: `room ${i} (${name}): first client says hello ${'#'.repeat(i + 1)}\n`,
      second: `room ${i}: second client replies ${i * 7919}\n`,
      clients: [makeClient(url, name, { name: `r${i}-A` }), makeClient(url, name, { name: `r${i}-B` })]
    })
  }
  // Every intermediate state of a room's text is a prefix of its final text; anything else is
  // content from somewhere else. Checked on every update so cross-talk fails fast.
  let crossTalk = null
  for (const r of rooms) {
    for (const c of r.clients) {
      c.doc.on('update', () => {
        const t = c.text.toString()
        if (!crossTalk && !(r.first + r.second).startsWith(t)) {
          crossTalk = new ScenarioError(`cross-talk: ${c.name} in room ${r.name} has ${JSON.stringify(t)}`)
        }
      })
    }
  }
  const noCrossTalk = () => { if (crossTalk) throw crossTalk; return true }

  await Promise.all(rooms.flatMap((r) => r.clients.map((c) => waitSynced(c, 20000))))
  for (const r of rooms) {
    for (const c of r.clients) assert(c.text.length === 0, `${c.name}: fresh room not empty: ${JSON.stringify(c.text.toString())}`)
  }

  // All first writes at once, then each second client reacts to its own room's text.
  for (const r of rooms) r.clients[0].text.insert(0, r.first)
  await Promise.all(rooms.map(async (r) => {
    const [a, b] = r.clients
    await waitUntil(`${b.name} to receive its room's first text`, () => noCrossTalk() && b.text.toString().startsWith(r.first),
      [[b.doc, 'update']], 20000, () => JSON.stringify(b.text.toString()))
    b.text.insert(b.text.length, r.second)
    await waitConverged([a, b], `room ${r.i} to converge`, 20000, () => noCrossTalk() && a.text.toString() === r.first + r.second)
  }))
  noCrossTalk()

  for (const r of rooms) {
    const expected = r.first + r.second
    const ids = new Set(r.clients.map((c) => c.doc.clientID))
    for (const c of r.clients) {
      assert(c.text.toString() === expected,
        `${c.name} has ${JSON.stringify(c.text.toString())}, expected exactly ${JSON.stringify(expected)}`)
      for (const id of stateVector(c.doc).keys()) {
        assert(ids.has(id), `${c.name} holds content from client ${id} which is not in room ${r.name} (cross-talk)`)
      }
      const extraKeys = Array.from(c.doc.share.keys()).filter((k) => k !== 'content')
      assert(extraKeys.length === 0, `${c.name} has unexpected root types ${extraKeys}`)
    }
  }
  return { rooms: ROOMS, clients: ROOMS * 2 }
})
