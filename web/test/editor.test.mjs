// The web editor in Chromium against a real server (run by tests/js/test_web_browser.py):
// two users in two browser contexts on one section, a Node Yjs client, comments both ways,
// locks, review, reload, sign-in/out and a narrow window. COLLAB_SCREENSHOT_DIR, when set,
// receives the screenshots docs/web.md shows.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { CollabProvider, RestClient } from '@collab/client'
import { HTTP_URL, TOKENS, editor, editorText, launch, openSection, signIn, waitForText } from './browser.mjs'

const SHOTS = process.env.COLLAB_SCREENSHOT_DIR
const WS_URL = HTTP_URL.replace(/^http/, 'ws') + '/ws'
const rest = (user) => new RestClient(HTTP_URL, { token: TOKENS[user] })
const users = {}
let browser
const cleanups = []

before(async () => {
  for (const name of ['ada', 'bo', 'cy']) users[name] = await rest(name).me()
  browser = await launch()
})
after(async () => {
  for (const cleanup of cleanups) cleanup()
  await browser?.close()
})

async function shot (page, name) {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `web-${name}.png`) })
}

const require = createRequire(import.meta.url)
let axeSource = null

/** axe-core's violations on the page as it is now (run through the devtools protocol: the
 * page's Content-Security-Policy forbids injected scripts). */
async function accessibilityViolations (page) {
  axeSource ??= await readFile(require.resolve('axe-core/axe.min.js'), 'utf8')
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(axeSource)
  return page.evaluate(async () => (await window.axe.run()).violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`))
}

let counter = 0
async function newDocument (title, content = 'Grow in the EU.\n') {
  counter++
  const documentId = `web-${process.pid}-${Date.now().toString(36)}-${counter}`
  await rest('ada').createDocument({
    documentId,
    title,
    sections: [{ id: 'market', title: 'Market', content }, { id: 'risks', title: 'Risks', content: 'Competition responds.' }],
    permissions: { view: [users.cy.id] }
  })
  return documentId
}

function nodeClient (user, room) {
  const doc = new Y.Doc()
  const provider = new CollabProvider(WS_URL, room, doc, { token: TOKENS[user], WebSocketPolyfill: WebSocket })
  cleanups.push(() => { provider.destroy(); provider.awareness.destroy(); doc.destroy() })
  return provider
}

function textBecomes (ytext, predicate, ms = 10000) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!predicate(ytext.toString())) return false
      ytext.unobserve(check)
      clearTimeout(timer)
      resolve(ytext.toString())
      return true
    }
    const timer = setTimeout(() => { ytext.unobserve(check); reject(new Error(`text stayed ${JSON.stringify(ytext.toString())}`)) }, ms)
    ytext.observe(check)
    check()
  })
}

test('two users type on one section: it crosses both ways, reaches a Node client, presence names them', async () => {
  const id = await newDocument('Q3 Plan', 'Grow in the EU.\n')
  const node = nodeClient('cy', `${id}/market`)
  const ada = await signIn(browser, 'ada')
  const bo = await signIn(browser, 'bo')
  await openSection(ada, id, 'market')
  await openSection(bo, id, 'market')
  assert.equal(await editor(ada).getAttribute('contenteditable'), 'true')

  await editor(ada).click()
  await ada.keyboard.press('Control+End')
  await ada.keyboard.type(' Ada types 😀 市場.')
  await waitForText(bo, 'Ada types 😀 市場.')
  await editor(bo).click()
  await bo.keyboard.press('Control+Home')
  await bo.keyboard.type('Bo: ')
  await waitForText(ada, 'Bo: Grow', { start: true })
  const text = await textBecomes(node.doc.getText('content'), (t) => t.startsWith('Bo: ') && t.includes('Ada types 😀 市場.'))
  assert.equal(text, 'Bo: Grow in the EU.\n Ada types 😀 市場.')
  assert.equal(await editorText(ada), text)
  assert.equal(await editorText(bo), text)

  await ada.waitForSelector('[data-testid=presence] [data-user="Bo Li"]')
  await bo.waitForSelector('[data-testid=presence] [data-user="Ada Lovelace"]')
  await ada.waitForSelector('.cm-ySelectionCaret:has-text("Bo Li")') // Bo's cursor, his verified name
  await ada.waitForSelector('[data-testid=outline] .here[aria-label*="Bo Li"]') // in the outline
  await ada.waitForSelector('[data-testid=connection][data-state=saved]')
  await shot(ada, 'editor')
  assert.deepEqual(ada.errors, [])
  assert.deepEqual(bo.errors, [])
  await ada.context().close()
  await bo.context().close()
})

test('comments: one made over REST appears live, one made in the page is stored, reload keeps them', async () => {
  const id = await newDocument('Comments', 'Grow in three markets this year.\n')
  const ada = await signIn(browser, 'ada')
  await openSection(ada, id, 'market')
  const start = [...'Grow in '].length
  await rest('bo').createComment(id, { content: 'Which three?', section: 'market', start, end: start + [...'three markets'].length, quote: 'three markets' })
  await ada.waitForSelector('[data-testid=comment]:has-text("Which three?")')
  await ada.waitForSelector('.cm-comment-highlight:has-text("three markets")')

  // Select "this year" in the editor and comment on it.
  await ada.evaluate(() => {
    const line = document.querySelector('.cm-content .cm-line')
    const node = [...line.childNodes].map((n) => n.nodeType === 3 ? n : n.firstChild).find((n) => n && n.textContent.includes('this year'))
    const offset = node.textContent.indexOf('this year')
    const range = document.createRange()
    range.setStart(node, offset)
    range.setEnd(node, offset + 'this year'.length)
    const selection = window.getSelection()
    selection.removeAllRanges()
    selection.addRange(range)
  })
  await ada.waitForFunction(() => document.getElementById('selection-note').textContent.includes('this year'))
  await ada.fill('#new-comment', 'Or next year?')
  await ada.click('[data-testid=comment-submit]')
  await ada.waitForSelector('[data-testid=comment]:has-text("Or next year?")')
  const stored = await rest('ada').comments(id)
  const mine = stored.items.find((c) => c.content === 'Or next year?')
  assert.ok(mine, 'the page comment is stored')
  assert.equal(mine.section, 'market')
  assert.equal(mine.anchor.text, 'this year')
  await ada.waitForSelector('.cm-comment-highlight:has-text("this year")')
  await shot(ada, 'comments')

  // @mention: the people who may view are suggested; the pick is sent as a mention.
  await ada.click('#new-comment')
  await ada.keyboard.type('Ask @Bo')
  await ada.click('.mentions button:has-text("Bo Li")')
  await ada.keyboard.type('about it')
  await ada.click('[data-testid=comment-submit]')
  await ada.waitForSelector('[data-testid=comment]:has-text("Ask @Bo Li about it")')
  const asked = (await rest('ada').comments(id)).items.find((c) => c.content === 'Ask @Bo Li about it')
  assert.deepEqual(asked.mentions, [users.bo.id])

  await ada.reload()
  await ada.waitForSelector('[data-testid=connection][data-state=saved]')
  await ada.waitForSelector('[data-testid=comment]:has-text("Which three?")')
  await ada.waitForSelector('[data-testid=comment]:has-text("Or next year?")')
  assert.equal(await editorText(ada), 'Grow in three markets this year.\n')
  await ada.context().close()
})

test('a section locked by the other user cannot be changed from the page', async () => {
  const id = await newDocument('Locks', 'Locked text.')
  const ada = await signIn(browser, 'ada')
  const before = await openSection(ada, id, 'market')
  assert.equal(await before.getAttribute('contenteditable'), 'true')
  await rest('bo').call('POST', `/documents/${id}/sections/market/lock`)
  await ada.waitForSelector('[data-testid=lock-holder]:has-text("Bo Li")')
  await ada.waitForSelector('.cm-content[contenteditable=false]')
  await editor(ada).click()
  await ada.keyboard.type('should not land')
  await ada.keyboard.press('Backspace')
  assert.equal(await editorText(ada), 'Locked text.')
  const stored = await rest('ada').document(id, { fresh: 1 })
  assert.equal(stored.content.sections.find((s) => s.id === 'market').content, 'Locked text.')
  await shot(ada, 'locked')
  await rest('bo').call('DELETE', `/documents/${id}/sections/market/lock`)
  await ada.waitForSelector('.cm-content[contenteditable=true]')
  await ada.context().close()
})

test('a document in review is read-only, and a viewer cannot edit', async () => {
  const id = await newDocument('Review', 'Frozen text.')
  const ada = await signIn(browser, 'ada')
  await openSection(ada, id, 'market')
  await rest('ada').setStatus(id, 'review')
  await ada.waitForSelector('[data-testid=readonly-banner]:has-text("in review")')
  await ada.waitForSelector('.cm-content[contenteditable=false]')
  await editor(ada).click()
  await ada.keyboard.type('nope')
  assert.equal(await editorText(ada), 'Frozen text.')
  await shot(ada, 'review')
  await ada.reload()
  await ada.waitForSelector('.cm-content[contenteditable=false]')
  assert.equal(await editorText(ada), 'Frozen text.')
  await ada.context().close()

  const other = await newDocument('Viewer', 'Read me.')
  const cy = await signIn(browser, 'cy')
  await cy.goto(`${HTTP_URL}/d/${other}/market`)
  await cy.waitForSelector('[data-testid=readonly-banner]:has-text("Read-only")')
  assert.equal(await editor(cy).getAttribute('contenteditable'), 'false')
  await cy.context().close()
})

test('sign-in link, document list, new document, outline; a narrow window works', async () => {
  const ada = await signIn(browser, 'ada')
  assert.equal(new URL(ada.url()).search, '', 'the token is removed from the address bar')
  assert.equal(await ada.evaluate(() => document.cookie.includes('collab_session')), false, 'HttpOnly')
  await ada.fill('#new-title', 'Fresh plan')
  await ada.click('button:has-text("Create")')
  await ada.waitForURL(/\/d\/[0-9a-f]+\/introduction$/)
  await ada.waitForSelector('[data-testid=connection][data-state=saved]')
  await ada.fill('#new-section', 'Risks ahead')
  await ada.click('button:has-text("Add")')
  await ada.waitForSelector('[data-testid=outline] a:has-text("Risks ahead")')
  await ada.waitForURL(/risks-ahead-/)
  await ada.waitForSelector('.cm-content[contenteditable=true]')
  await ada.goto(`${HTTP_URL}/`)
  await ada.fill('#search', 'Fresh plan')
  await ada.waitForSelector('[data-testid=documents] a:has-text("Fresh plan")')
  await shot(ada, 'documents')
  await ada.context().close()

  const id = await newDocument('Narrow', 'Small screens too.')
  const narrow = await signIn(browser, 'bo', '/', { width: 390, height: 800 })
  await openSection(narrow, id, 'market')
  const overflow = await narrow.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth)
  assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px`)
  assert.equal(await editor(narrow).getAttribute('contenteditable'), 'true')
  await shot(narrow, 'narrow')
  await narrow.context().close()
})

test('edits made offline are kept, shown as unsaved, and merge on reconnect', async () => {
  const id = await newDocument('Offline', 'Base.')
  const ada = await signIn(browser, 'ada')
  const bo = await signIn(browser, 'bo')
  await openSection(ada, id, 'market')
  await openSection(bo, id, 'market')
  await ada.context().setOffline(true)
  await ada.waitForSelector('[data-testid=connection][data-state=offline]')
  await editor(ada).click()
  await ada.keyboard.press('Control+End')
  await ada.keyboard.type(' Ada offline.')
  await ada.waitForSelector('[data-testid=connection]:has-text("unsaved edit")')
  await editor(bo).click()
  await bo.keyboard.press('Control+Home')
  await bo.keyboard.type('Bo online. ')
  await bo.waitForSelector('[data-testid=connection][data-state=saved]')
  await ada.context().setOffline(false)
  await ada.waitForSelector('[data-testid=connection][data-state=saved]')
  await waitForText(bo, 'Bo online. Base. Ada offline.', { start: true })
  await waitForText(ada, 'Bo online. Base. Ada offline.', { start: true })
  const stored = await rest('ada').document(id, { fresh: 1 })
  assert.equal(stored.content.sections.find((s) => s.id === 'market').content, 'Bo online. Base. Ada offline.')
  await ada.context().close()
  await bo.context().close()
})

test('outline, notifications, history and review from the page, live in the other page', async () => {
  // (Newline-terminated: the server's unified diff joins a last line without newline to the next.)
  const id = await newDocument('Panels', 'First words.\n')
  const workflow = await rest('ada').createWorkflow({ name: `wf-${id}`, steps: [{ requiredRole: 'manager', name: 'Manager' }] })
  const ada = await signIn(browser, 'ada')
  const bo = await signIn(browser, 'bo')
  await openSection(ada, id, 'market')
  await openSection(bo, id, 'market')
  const outlineOf = (page) => page.locator('[data-testid=outline] li > a').allTextContents()

  // Outline: rename, move, remove; the other page follows.
  ada.once('dialog', (dialog) => dialog.accept('Risks and costs'))
  await ada.click('button[aria-label="Rename Risks"]')
  await bo.waitForSelector('[data-testid=outline] a:has-text("Risks and costs")')
  await ada.click('button[aria-label="Move Risks and costs up"]')
  await bo.waitForFunction(() => document.querySelector('[data-testid=outline] li > a').textContent === 'Risks and costs')
  assert.deepEqual(await outlineOf(bo), ['Risks and costs', 'Market'])
  ada.once('dialog', (dialog) => dialog.accept())
  await ada.click('button[aria-label="Remove Risks and costs"]')
  await bo.waitForFunction(() => document.querySelectorAll('[data-testid=outline] li').length === 1)
  assert.deepEqual(await outlineOf(ada), ['Market'])

  // Notifications: a mention of Bo lights his bell.
  await bo.waitForSelector('[data-testid=unread][data-loaded]', { state: 'attached' })
  const unread = Number(await bo.textContent('[data-testid=unread]'))
  await rest('ada').createComment(id, { content: 'Bo, have a look', mentions: [users.bo.id] })
  await bo.waitForSelector(`[data-testid=unread]:text-is("${unread + 1}")`)
  await bo.click('button.bell')
  await bo.waitForSelector('#notifications li:has-text("Bo, have a look")')
  await shot(bo, 'notifications')
  await bo.click('#notifications button:has-text("Mark all read")')
  await bo.waitForSelector('[data-testid=unread]', { state: 'hidden' })
  await bo.click('button.bell')
  await bo.waitForSelector('#notifications', { state: 'hidden' })

  // History: save a revision, edit, save another, diff them, restore the first.
  await ada.click('#tab-history')
  await ada.click('button:has-text("Save a revision now")')
  await ada.waitForSelector('[data-testid=revisions] li')
  await editor(ada).click()
  await ada.keyboard.press('Control+End')
  await ada.keyboard.type('More words.\n')
  await ada.waitForSelector('[data-testid=connection][data-state=saved]')
  await rest('ada').document(id, { fresh: 1 })
  await ada.click('button:has-text("Save a revision now")')
  await ada.waitForSelector('[data-testid=revisions] li:nth-child(2) >> text=Restore')
  await ada.click('[data-testid=revisions] li:first-child button:has-text("Diff")')
  await ada.waitForSelector('.diff .add:has-text("More words.")')
  await shot(ada, 'history')
  ada.once('dialog', (dialog) => dialog.accept())
  await ada.click('[data-testid=revisions] li:nth-child(2) button:has-text("Restore")')
  await waitForText(bo, 'First words.', { start: true })
  await bo.waitForFunction(() => !document.querySelector('.cm-content').textContent.includes('More words.'))

  // Review: Ada requests it from the panel, both pages turn read-only, Bo approves.
  await ada.click('#tab-review')
  await ada.selectOption('#workflow', workflow.id)
  await ada.click('button:has-text("Request review")')
  await ada.waitForSelector('[data-testid=readonly-banner]:has-text("in review")')
  await bo.waitForSelector('.cm-content[contenteditable=false]')
  await bo.click('#tab-review')
  await bo.waitForSelector('[data-testid=approvals] li:has-text("Step 1 (manager): pending")')
  await shot(bo, 'approvals')
  await bo.click('[data-testid=approvals] button:has-text("Approve")')
  await ada.waitForSelector('[data-testid=doc-status]:has-text("approved")')
  await bo.waitForSelector('[data-testid=approvals] li:has-text("Step 1 (manager): approved")')
  assert.deepEqual(ada.errors, [])
  assert.deepEqual(bo.errors, [])
  await ada.context().close()
  await bo.context().close()
})

test('no accessibility violations (axe-core) on the sign-in page, the list and a document', async () => {
  const id = await newDocument('Accessible', 'Text to read.\n')
  await rest('bo').createComment(id, { content: 'A comment', section: 'market', start: 0, end: 4, quote: 'Text' })
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
  const signin = await context.newPage()
  await signin.goto(`${HTTP_URL}/`)
  await signin.waitForSelector('#token')
  assert.deepEqual(await accessibilityViolations(signin), [])
  await context.close()
  const ada = await signIn(browser, 'ada')
  await ada.waitForSelector('[data-testid=documents] li')
  assert.deepEqual(await accessibilityViolations(ada), [])
  const bo = await signIn(browser, 'bo')
  await openSection(bo, id, 'market')
  await openSection(ada, id, 'market')
  await ada.waitForSelector('[data-testid=presence] [data-user="Bo Li"]')
  await ada.waitForSelector('[data-testid=comment]')
  assert.deepEqual(await accessibilityViolations(ada), [])
  for (const tab of ['#tab-review', '#tab-history']) {
    await ada.click(tab)
    await ada.waitForSelector(`${tab}-panel:not([hidden])`)
    assert.deepEqual(await accessibilityViolations(ada), [], tab)
  }
  await ada.context().close()
  await bo.context().close()
})

// Last: signing out ends the session of the token the page signed in with.
test('signing out ends the session', async () => {
  const cy = await signIn(browser, 'cy')
  await cy.click('button:has-text("Sign out")')
  await cy.waitForSelector('#token')
  assert.equal(await cy.evaluate(async () => (await fetch('/api/me')).status), 401)
  await shot(cy, 'signin')
  await cy.context().close()
})
