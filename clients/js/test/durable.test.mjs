// Durable acks across a crash: the server (COLLAB_SERVER_PID) is killed with SIGKILL while
// edits are unacknowledged, more edits are made while it is down, and after the pytest driver
// restarts it on the same port every edit is there. Run by tests/js/test_client_js.py.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { closeAll, connect, newId, once, rest, synced, textBecomes } from './helpers.mjs'

const SERVER_PID = Number(process.env.COLLAB_SERVER_PID)
const RESTART_MS = 60000

after(closeAll)

test('edits unacknowledged when the server is SIGKILLed are resent and none is lost', async () => {
  assert.ok(SERVER_PID > 0, 'COLLAB_SERVER_PID is not set')
  const id = newId('crash')
  await rest('ada').createDocument({ documentId: id, title: 'crash', sections: [{ id: 's', title: 'S', content: '' }] })
  const ada = connect('ada', `${id}/s`)
  await synced(ada)
  const text = ada.doc.getText('content')
  let expected = ''
  const type = (prefix, count) => {
    for (let i = 0; i < count; i++) {
      const piece = `${prefix}${i}·😀 `
      text.insert(text.length, piece)
      expected += piece
    }
  }
  type('a', 20)
  await ada.whenSaved()

  const down = once(ada, 'status', (s) => s.status === 'disconnected', RESTART_MS)
  type('b', 50)
  process.kill(SERVER_PID, 'SIGKILL')
  assert.ok(ada.unsaved > 0, 'the burst should still be unacknowledged')
  assert.equal(ada.saved, false)
  await down
  type('c', 30) // offline
  assert.equal(ada.saved, false)
  const unsavedWhileDown = ada.unsaved
  assert.ok(unsavedWhileDown >= 30)

  await once(ada, 'status', (s) => s.status === 'connected', RESTART_MS)
  await ada.whenSaved()
  assert.equal(ada.unsaved, 0)

  const reader = connect('bo', `${id}/s`)
  await synced(reader)
  await textBecomes(reader.doc.getText('content'), expected)
  const stored = await rest('ada').document(id, { fresh: 1 })
  assert.equal(stored.content.sections[0].content, expected)
})
