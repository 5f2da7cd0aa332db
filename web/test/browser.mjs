// Shared by the browser tests and the editor benchmark: Debian's Chromium driven by
// playwright-core (no browser is downloaded), signed-in pages, and editor helpers.
import { chromium } from 'playwright-core'

export const HTTP_URL = process.env.COLLAB_HTTP_URL
export const TOKENS = JSON.parse(process.env.COLLAB_TOKENS || '{}')
const CHROMIUM = process.env.COLLAB_CHROMIUM || '/usr/bin/chromium'

export async function launch () {
  return chromium.launch({
    executablePath: CHROMIUM,
    // Root (CI containers) needs --no-sandbox; loopback only, no network is used.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu']
  })
}

/** A new browser context signed in as `user` through the `/?token=` link; its page. */
export async function signIn (browser, user, path = '/', viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport })
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (error) => errors.push(error.message))
  page.errors = errors
  await page.goto(`${HTTP_URL}/?token=${encodeURIComponent(TOKENS[user])}`)
  await page.waitForSelector('[data-testid=me]')
  if (path !== '/') await page.goto(`${HTTP_URL}${path}`)
  return page
}

export const editor = (page) => page.locator('.cm-content')

/** Waits until the section's editor is loaded (synced) and says whether it is editable. */
export async function openSection (page, documentId, sectionId) {
  await page.goto(`${HTTP_URL}/d/${documentId}/${sectionId}`)
  await page.waitForSelector('[data-testid=connection][data-state=saved]')
  return editor(page)
}

// In the page: the editor's text, lines joined with newlines, without the remote carets' names.
function textInPage () {
  return [...document.querySelectorAll('.cm-content .cm-line')].map((line) => {
    const copy = line.cloneNode(true)
    for (const caret of copy.querySelectorAll('.cm-ySelectionCaret')) caret.remove()
    return copy.textContent
  }).join('\n')
}

export async function editorText (page) {
  return page.evaluate(textInPage)
}

/** Waits until the editor's text includes `part` (or starts with it). */
export async function waitForText (page, part, { start = false, timeout = 10000 } = {}) {
  await page.waitForFunction(({ part, start }) => {
    const text = [...document.querySelectorAll('.cm-content .cm-line')].map((line) => {
      const copy = line.cloneNode(true)
      for (const caret of copy.querySelectorAll('.cm-ySelectionCaret')) caret.remove()
      return copy.textContent
    }).join('\n')
    return start ? text.startsWith(part) : text.includes(part)
  }, { part, start }, { timeout })
}
