// Scenario d: awareness. A, B and C join one room and set a `user` field; everybody sees the
// others in awareness.getStates(). Then
//   1. A leaves gracefully (provider.destroy(): the client itself sends a null awareness state
//      that the server must relay), and
//   2. C's socket is killed abruptly (no close handshake, no goodbye message): the server must
//      notice the closed connection, drop C's awareness state and broadcast the removal.
// B must see each state disappear within a few seconds, waiting on its awareness 'change'
// event (B's own 30 s outdated-state timeout can't be what removes them).
// Finally a late joiner D must see B, and not the departed A and C.

import { run, makeClient, waitSynced, waitUntil, assert, destroyClient } from './lib.mjs'

const REMOVAL_TIMEOUT_MS = 5000

const userName = (client, id) => {
  const st = client.awareness.getStates().get(id)
  return st && st.user ? st.user.name : undefined
}

const describeStates = (client) => () =>
  JSON.stringify(Array.from(client.awareness.getStates().entries()))

const seesUser = (observer, subject, name, what = `${observer.name} to see ${subject.name}'s awareness state`) =>
  waitUntil(what, () => userName(observer, subject.doc.clientID) === name,
    [[observer.awareness, 'change']], undefined, describeStates(observer))

run('d-awareness', async ({ url, prefix }) => {
  const room = `${prefix}awareness`
  const a = makeClient(url, room, { name: 'A' })
  const b = makeClient(url, room, { name: 'B' })
  const c = makeClient(url, room, { name: 'C' })
  await Promise.all([waitSynced(a), waitSynced(b), waitSynced(c)])

  a.awareness.setLocalStateField('user', { name: 'Alice', color: '#f00' })
  b.awareness.setLocalStateField('user', { name: 'Bob', color: '#0f0' })
  c.awareness.setLocalStateField('user', { name: 'Carol', color: '#00f' })

  await Promise.all([
    seesUser(b, a, 'Alice'), seesUser(b, c, 'Carol'),
    seesUser(a, b, 'Bob'), seesUser(a, c, 'Carol'),
    seesUser(c, a, 'Alice'), seesUser(c, b, 'Bob')
  ])

  // A field update propagates too.
  a.awareness.setLocalStateField('cursor', { index: 7 })
  await waitUntil('B to see A\'s cursor update', () => {
    const st = b.awareness.getStates().get(a.doc.clientID)
    return st && st.cursor && st.cursor.index === 7
  }, [[b.awareness, 'change']], undefined, describeStates(b))

  // 1. graceful leave
  const aId = a.doc.clientID
  let t0 = Date.now()
  destroyClient(a)
  await waitUntil(`B to see A's awareness state removed after A's provider.destroy() (within ${REMOVAL_TIMEOUT_MS} ms)`,
    () => !b.awareness.getStates().has(aId), [[b.awareness, 'change']], REMOVAL_TIMEOUT_MS, describeStates(b))
  const gracefulMs = Date.now() - t0

  // 2. abrupt leave: stop the provider from reconnecting, then kill the TCP connection
  // without a close frame and without the client's own "I'm gone" awareness message.
  const cId = c.doc.clientID
  assert(b.awareness.getStates().has(cId), 'C vanished from B too early')
  c.provider.shouldConnect = false
  c.expectClose = true
  const ws = c.provider.ws
  assert(ws && typeof ws.terminate === 'function', 'C has no open ws socket to terminate')
  t0 = Date.now()
  ws.terminate()
  await waitUntil(`server to broadcast removal of C's awareness state after C's socket was killed (within ${REMOVAL_TIMEOUT_MS} ms)`,
    () => !b.awareness.getStates().has(cId), [[b.awareness, 'change']], REMOVAL_TIMEOUT_MS, describeStates(b))
  const abruptMs = Date.now() - t0
  destroyClient(c)

  // 3. a late joiner sees B only.
  const d = makeClient(url, room, { name: 'D' })
  await waitSynced(d)
  await seesUser(d, b, 'Bob', 'late joiner D to receive B\'s awareness state from the server')
  const ids = Array.from(d.awareness.getStates().keys())
  assert(!ids.includes(aId) && !ids.includes(cId),
    `late joiner D received awareness states of departed clients: ${describeStates(d)()}`)

  return { room, gracefulRemovalMs: gracefulMs, abruptRemovalMs: abruptMs }
})
