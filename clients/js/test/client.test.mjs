// The client library against a real server: text, durable acks, every event kind, anchors
// with non-ASCII text, locks, presence, notifications, approvals and the REST helper.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import {
  anchorFields, codePointsToUtf16, CollabError, decodeEvent, encodeEventMessage, resolveAnchor,
  utf16ToCodePoints
} from '../src/index.js'
import { closeAll, connect, event, newId, once, rest, synced, textBecomes } from './helpers.mjs'

const users = {}

before(async () => {
  for (const name of ['ada', 'bo', 'cy']) users[name] = await rest(name).me()
})
after(closeAll)

/** A document created by Ada over REST, with one section `s`. */
async function document (extra = {}) {
  const documentId = newId('doc')
  await rest('ada').createDocument({
    documentId,
    title: `Doc ${documentId}`,
    sections: [{ id: 's', title: 'S', content: '' }],
    permissions: { view: [users.cy.id] },
    ...extra
  })
  return documentId
}

describe('offsets', () => {
  test('UTF-16 and code points convert both ways for emoji and CJK', () => {
    const text = 'a😀b漢字🇫🇷c'
    assert.equal(utf16ToCodePoints(text, text.length), [...text].length)
    for (let points = 0; points <= [...text].length; points++) {
      const units = codePointsToUtf16(text, points)
      assert.equal(utf16ToCodePoints(text, units), points)
      assert.equal(text.slice(0, units), [...text].slice(0, points).join(''))
    }
  })

  test('events round-trip through the frame codec, and garbage decodes to null', () => {
    const frame = encodeEventMessage({ type: 'ping', id: 7 })
    assert.equal(frame[0], 100)
    assert.deepEqual(decodeEvent(frame.subarray(2)), { v: 1, type: 'ping', id: 7 })
    assert.equal(decodeEvent(new Uint8Array([0xc1])), null)
    assert.equal(decodeEvent(new Uint8Array([0x93, 1, 2, 3])), null)
  })
})

describe('text and acks', () => {
  test('edits cross, and saved turns true only once the server acknowledged them', async () => {
    const id = await document()
    const ada = connect('ada', `${id}/s`)
    const bo = connect('bo', `${id}/s`)
    await Promise.all([synced(ada), synced(bo)])
    assert.equal(ada.saved, true)
    ada.doc.getText('content').insert(0, 'héllo 😀 世界')
    assert.equal(ada.saved, false)
    assert.equal(ada.unsaved, 1)
    await ada.whenSaved()
    assert.equal(ada.saved, true)
    assert.equal(ada.unsaved, 0)
    await textBecomes(bo.doc.getText('content'), 'héllo 😀 世界')
    bo.doc.getText('content').insert(0, '» ')
    await textBecomes(ada.doc.getText('content'), '» héllo 😀 世界')
    await bo.whenSaved()
    const stored = await rest('ada').document(id, { fresh: 1 })
    assert.equal(stored.content.sections[0].content, '» héllo 😀 世界')
  })

  test('ping is answered with pong', async () => {
    const id = await document()
    const ada = connect('ada', id)
    await synced(ada)
    ada.sendEvent({ type: 'ping', id: 'p1' })
    const pong = await event(ada, 'pong')
    assert.equal(pong.id, 'p1')
  })
})

describe('comments', () => {
  test('create, edit, resolve, reopen, delete: acked to the requester, live for others', async () => {
    const id = await document()
    const ada = connect('ada', `${id}/s`)
    const bo = connect('bo', `${id}/s`)
    await Promise.all([synced(ada), synced(bo)])
    const text = ada.doc.getText('content')
    text.insert(0, 'Plan: 市場 🚀 growth in EU')
    await ada.whenSaved()
    const from = text.toString().indexOf('🚀')
    const to = text.toString().indexOf(' in')
    const seen = once(bo.comments, 'change', (c, action) => action === 'created')
    const comment = await ada.comments.create({ content: 'Which rocket?', section: 's', ...anchorFields(text, from, to) })
    assert.equal(comment.anchor.text, '🚀 growth')
    assert.equal(comment.quote, '🚀 growth')
    assert.equal((await seen).id, comment.id)
    assert.equal(bo.comments.byId.get(comment.id).content, 'Which rocket?')

    const edited = await ada.comments.edit(comment.id, 'Which rocket, exactly?')
    assert.equal(edited.content, 'Which rocket, exactly?')
    const reply = await bo.comments.create({ content: 'Falcon', parentId: comment.id })
    assert.equal(reply.parentId, comment.id)
    assert.ok((await bo.comments.resolve(comment.id)).resolved)
    assert.equal((await ada.comments.reopen(comment.id)).resolved, null)
    const gone = await ada.comments.delete(reply.id) // an admin of the document
    assert.equal(gone.deleted, true)
    assert.equal(gone.content, '')

    const missing = await ada.comments.edit('00000000-0000-0000-0000-000000000000', 'x').catch((e) => e)
    assert.ok(missing instanceof CollabError)
    assert.equal(missing.code, 404)
    const empty = await ada.comments.create({ content: '   ' }).catch((e) => e)
    assert.ok(empty instanceof CollabError)
    assert.equal(empty.code, 422)

    const viewer = connect('cy', `${id}/s`)
    await synced(viewer)
    const refused = await viewer.comments.create({ content: 'no right' }).catch((e) => e)
    assert.equal(refused.code, 403)
    const listed = await viewer.comments.load()
    assert.ok(listed.some((c) => c.id === comment.id))
  })

  test('a comment made over REST arrives live', async () => {
    const id = await document()
    const bo = connect('bo', id)
    await synced(bo)
    const live = once(bo.comments, 'change', (c) => c.content === 'over REST')
    await rest('ada').createComment(id, { content: 'over REST' })
    assert.equal((await live).author.id, users.ada.id)
  })
})

describe('anchors', () => {
  test('sticky anchors follow concurrent edits with emoji and CJK on every copy', async () => {
    const id = await document()
    const ada = connect('ada', `${id}/s`)
    const bo = connect('bo', `${id}/s`)
    await Promise.all([synced(ada), synced(bo)])
    const adaText = ada.doc.getText('content')
    const boText = bo.doc.getText('content')
    adaText.insert(0, '前文 👩‍💻 the 重要な part 🎉 end')
    await ada.whenSaved()
    await textBecomes(boText, adaText.toString())
    const quote = '重要な part 🎉'
    const from = adaText.toString().indexOf(quote)
    const comment = await ada.comments.create({
      content: 'anchor me', section: 's', ...anchorFields(adaText, from, from + quote.length)
    })
    assert.equal(comment.anchor.text, quote)
    // Concurrent edits before, inside and after the range, with surrogate pairs everywhere.
    adaText.insert(0, '🌍🌍 ')
    boText.insert(boText.toString().indexOf('part'), '💡新')
    boText.insert(boText.length, ' 😀 tail')
    await Promise.all([ada.whenSaved(), bo.whenSaved()])
    const expected = '🌍🌍 前文 👩‍💻 the 重要な 💡新part 🎉 end 😀 tail'
    await Promise.all([textBecomes(adaText, expected), textBecomes(boText, expected)])
    const mine = resolveAnchor(adaText, comment)
    const theirs = resolveAnchor(boText, comment)
    assert.equal(mine.text, '重要な 💡新part 🎉')
    assert.deepEqual(mine, theirs)
    assert.equal(adaText.toString().slice(mine.from, mine.to), mine.text)
    const server = await rest('ada').call('GET', `/comments/${comment.id}`)
    assert.equal(server.anchor.text, mine.text)
    assert.equal(server.anchor.start, mine.start)
    assert.equal(server.anchor.end, mine.end)
    // Deleting the whole range orphans it.
    adaText.delete(mine.from, mine.to - mine.from)
    assert.deepEqual(resolveAnchor(adaText, comment), { orphaned: true })
  })
})

describe('locks and presence', () => {
  test('a lock is seen by others, refuses their edits, and is re-taken after a reconnect', async () => {
    const id = await document()
    const ada = connect('ada', `${id}/s`)
    const bo = connect('bo', `${id}/s`)
    await Promise.all([synced(ada), synced(bo)])
    const boSees = once(bo.locks, 'change', (locks) => locks.has('s'))
    const lock = await ada.locks.lock('s')
    assert.equal(lock.owner, users.ada.id)
    await boSees
    assert.equal(bo.locks.bySection.get('s').ownerName, 'Ada Lovelace')
    const refused = await bo.locks.lock('s').catch((e) => e)
    assert.equal(refused.code, 4409)
    const denied = once(bo, 'denied')
    bo.doc.getText('content').insert(0, 'sneaky')
    assert.match(await denied, /locked/)
    await bo.whenSaved() // settled: refused for good
    ada.doc.getText('content').insert(0, 'mine')
    await ada.whenSaved()
    assert.equal((await rest('ada').document(id, { fresh: 1 })).content.sections[0].content, 'mine')

    // Ada's connection drops: her lock goes, and comes back when she reconnects.
    const released = event(bo, 'unlocked', (e) => e.section === 's')
    ada.disconnect()
    await released
    const retaken = event(bo, 'locked', (e) => e.section === 's' && e.owner === users.ada.id)
    ada.connect()
    await retaken
    const unlocked = event(bo, 'unlocked', (e) => e.section === 's' && e.reason === 'released')
    ada.locks.unlock('s')
    await unlocked
    assert.equal(bo.locks.bySection.has('s'), false)
  })

  test('a late joiner gets joined (with its rights) and the current locks', async () => {
    const id = await document()
    const ada = connect('ada', `${id}/s`)
    await synced(ada)
    await ada.locks.lock('s')
    const viewer = connect('cy', `${id}/s`, { connect: false })
    const joined = event(viewer, 'joined')
    const listed = event(viewer, 'locks')
    viewer.connect()
    const hello = await joined
    assert.equal(hello.readOnly, true)
    assert.equal(hello.room, `${id}/s`)
    assert.equal(viewer.readOnly, true)
    assert.equal(viewer.connectionId, hello.connection)
    const locks = await listed
    assert.equal(locks.locks[0].owner, users.ada.id)
    assert.equal(viewer.locks.bySection.get('s').ownerName, 'Ada Lovelace')
  })

  test('presence names who joined and where', async () => {
    const id = await document()
    const ada = connect('ada', id)
    await synced(ada)
    const joined = once(ada.presence, 'change', (u, e) => e !== null && e.user === users.bo.id)
    const bo = connect('bo', `${id}/s`)
    await synced(bo)
    await joined
    assert.equal(ada.presence.users.get(users.bo.id).name, 'Bo Li')
    await ada.presence.load()
    assert.ok(ada.presence.users.get(users.bo.id).sections.has('s'))
    const left = once(ada.presence, 'change', (u, e) => e !== null && e.action === 'left')
    bo.destroy()
    await left
    assert.equal(ada.presence.users.has(users.bo.id), false)
  })
})

describe('notifications and approvals', () => {
  test('a mention notifies live and counts', async () => {
    const id = await document()
    const bo = connect('bo', id)
    await synced(bo)
    await bo.notifications.load()
    const before = bo.notifications.unread
    const ada = connect('ada', id)
    await synced(ada)
    const told = once(bo.notifications, 'change', (n) => n.unread === before + 1)
    await ada.comments.create({ content: 'see this @Bo', mentions: [users.bo.id] })
    await told
    assert.equal(bo.notifications.items[0].type, 'comment_mention')
    const counted = event(bo, 'notification.count', (e) => e.unread === 0)
    await bo.notifications.markAllRead()
    assert.equal(bo.notifications.unread, 0)
    assert.ok((await counted).total >= 1)
  })

  test('an approval request is announced and turns the document read-only', async () => {
    const id = await document()
    const ada = connect('ada', `${id}/s`)
    const bo = connect('bo', `${id}/s`)
    await Promise.all([synced(ada), synced(bo)])
    const workflow = await rest('ada').createWorkflow({ name: newId('wf'), steps: [{ requiredRole: 'manager' }] })
    const announced = once(bo.approvals, 'change', (e) => e.action === 'requested')
    const readOnly = event(bo, 'access', (e) => e.readOnly === true)
    const opened = await rest('ada').requestApproval(id, workflow.id)
    assert.equal((await announced).request.id, opened.request.id)
    assert.equal(bo.approvals.documentStatus, 'review')
    await readOnly
    const denied = once(bo, 'denied')
    bo.doc.getText('content').insert(0, 'frozen?')
    await denied
    const decided = once(ada.approvals, 'change', (e) => e.action === 'approved')
    await rest('bo').decide(opened.request.id, 1, 'approve', 'fine')
    assert.equal((await decided).documentStatus, 'approved')
  })
})

describe('REST helper', () => {
  test('documents, search, revisions and export', async () => {
    const id = await document({ title: 'Searchable 検索 plan' })
    const found = await rest('ada').documents({ q: '検索' })
    assert.ok(found.items.some((d) => d.documentId === id))
    const revision = await rest('ada').saveRevision(id, 'first')
    const listed = await rest('ada').revisions(id)
    assert.ok(listed.items.some((r) => r.revisionId === revision.revisionId))
    const markdown = await rest('ada').exportMarkdown(id)
    assert.match(markdown, /^# Searchable 検索 plan/)
    const missing = await rest('ada').document('no-such-doc').catch((e) => e)
    assert.equal(missing.code, 404)
  })
})
