// The web editor's numbers, in Debian's Chromium (run by `python -m loadtests.bench_web`,
// which starts the server and passes COLLAB_HTTP_URL / COLLAB_TOKENS):
// * keystroke latency: a key pressed in one browser context to the character in the other
//   context's editor DOM (MutationObserver; painted at the next frame), KEYSTROKES keys typed
//   KEY_DELAY_MS apart, p50/p99;
// * time to an editable section of a BIG_KB document: from navigation to the editor synced,
//   "All changes saved" and contenteditable, in a fresh browser context (cold cache), RUNS times.
// Prints one JSON object.
import { RestClient } from '@collab/client'
import { HTTP_URL, TOKENS, launch, openSection, signIn } from '../web/test/browser.mjs'

const KEYSTROKES = Number(process.env.BENCH_KEYSTROKES || 200)
const KEY_DELAY_MS = Number(process.env.BENCH_KEY_DELAY_MS || 40)
const BIG_KB = Number(process.env.BENCH_BIG_KB || 300)
const RUNS = Number(process.env.BENCH_RUNS || 5)
const rest = new RestClient(HTTP_URL, { token: TOKENS.ada })

function percentile (values, q) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1))]
}

const round = (x) => Math.round(x * 10) / 10

async function keystrokes (browser) {
  const documentId = `bench-keys-${Date.now().toString(36)}`
  await rest.createDocument({ documentId, title: 'keystrokes', sections: [{ id: 'k', title: 'K', content: '' }] })
  const typist = await signIn(browser, 'ada')
  const watcher = await signIn(browser, 'bo')
  await openSection(typist, documentId, 'k')
  await openSection(watcher, documentId, 'k')
  await watcher.evaluate(() => {
    const content = document.querySelector('.cm-content')
    const text = () => [...content.querySelectorAll('.cm-line')].map((line) => {
      const copy = line.cloneNode(true)
      for (const caret of copy.querySelectorAll('.cm-ySelectionCaret')) caret.remove()
      return copy.textContent
    }).join('\n')
    window.arrivals = {}
    new MutationObserver(() => {
      const length = text().length
      if (!(length in window.arrivals)) window.arrivals[length] = performance.timeOrigin + performance.now()
    }).observe(content, { subtree: true, childList: true, characterData: true })
  })
  await typist.evaluate(() => {
    window.pressed = []
    document.querySelector('.cm-content').addEventListener('keydown', (event) => {
      window.pressed.push(performance.timeOrigin + event.timeStamp)
    })
  })
  await typist.click('.cm-content')
  const text = 'abcdefghijklmnopqrstuvwxyz '.repeat(Math.ceil(KEYSTROKES / 27)).slice(0, KEYSTROKES)
  await typist.keyboard.type(text, { delay: KEY_DELAY_MS })
  await watcher.waitForFunction((n) => n in window.arrivals, KEYSTROKES, { timeout: 30000 })
  const pressed = await typist.evaluate(() => window.pressed)
  const arrivals = await watcher.evaluate(() => window.arrivals)
  const latencies = pressed.map((t, i) => arrivals[i + 1] - t)
  await typist.context().close()
  await watcher.context().close()
  return {
    keystrokes: latencies.length,
    key_delay_ms: KEY_DELAY_MS,
    p50_ms: round(percentile(latencies, 50)),
    p99_ms: round(percentile(latencies, 99)),
    max_ms: round(Math.max(...latencies))
  }
}

async function bigDocument (browser) {
  const documentId = `bench-big-${Date.now().toString(36)}`
  const line = 'Revenue grows in three markets while costs stay flat; the board wants pricing. '
  const content = Array.from({ length: Math.ceil((BIG_KB * 1024) / (line.length + 1)) }, (_, i) => `${i} ${line}`).join('\n').slice(0, BIG_KB * 1024)
  await rest.createDocument({ documentId, title: 'big', sections: [{ id: 'big', title: 'Big', content }] })
  const times = []
  for (let run = 0; run < RUNS; run++) {
    const page = await signIn(browser, 'ada')
    const started = performance.now()
    await openSection(page, documentId, 'big')
    await page.waitForSelector('.cm-content[contenteditable=true]')
    times.push(performance.now() - started)
    await page.context().close()
  }
  return { bytes: content.length, runs: RUNS, median_ms: round(percentile(times, 50)), max_ms: round(Math.max(...times)), all_ms: times.map(round) }
}

const browser = await launch()
try {
  const keys = await keystrokes(browser)
  const big = await bigDocument(browser)
  console.log(JSON.stringify({ keystroke_latency: keys, editable_big_section: big }))
} finally {
  await browser.close()
}
