// Web UI budget: initial JS+CSS size, navigation to an interactive chat screen, and
// frame times while a 500-token answer streams into a 2,000-message conversation. Each figure is printed
// next to a baseline measured in the same run on the same machine.
//
//   node bench/webui_budget.mjs [--runs 5] [--token-delay 0.01] [--json]
//
// Needs the built UI (cd webui && npm run build), webui/node_modules and Debian's /usr/bin/chromium
// (CHROMIUM overrides). Starts its own fake Ollama and server on free ports with a temporary data dir.
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { startFakeOllama, startServer } from '../webui/e2e/fixtures/processes.mjs'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const WEBUI = join(REPO, 'webui')
const DIST = join(WEBUI, 'dist')
const { chromium } = createRequire(join(WEBUI, 'package.json'))('playwright-core')

const argv = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? argv[i + 1] : dflt
}
const RUNS = Number(opt('runs', 5))
const TOKEN_DELAY = Number(opt('token-delay', 0.01))
const JSON_OUT = argv.includes('--json')
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
]
const EMAIL = 'admin@example.com'
const INITIAL = 'Bench-initial-Passw0rd'
const PASSWORD = 'Bench-changed-Passw0rd-1'

const kib = (n) => `${(n / 1024).toFixed(1)} KiB`
const ms = (n) => `${n.toFixed(1)} ms`
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}
const gz = (path) => gzipSync(readFileSync(path), { level: 9 }).length
const results = {}

// --- 1. initial JS + CSS ------------------------------------------------------------------------------
function initialAssets() {
  const html = readFileSync(join(DIST, 'index.html'), 'utf8')
  const refs = new Set()
  for (const tag of html.match(/<(script|link)\b[^>]*>/g) ?? []) {
    const url = /\b(?:src|href)="([^"]+)"/.exec(tag)?.[1]
    if (!url || !url.startsWith('/')) continue
    const isEntry = tag.startsWith('<script') && /type="module"/.test(tag)
    const rel = /\brel="([^"]+)"/.exec(tag)?.[1]
    if (isEntry || rel === 'modulepreload' || rel === 'stylesheet') refs.add(url)
  }
  let js = 0, css = 0, raw = 0
  for (const url of refs) {
    const file = join(DIST, url)
    raw += readFileSync(file).length
    if (url.endsWith('.css')) css += gz(file)
    else js += gz(file)
  }
  return { files: refs.size, js, css, total: js + css, raw }
}

/** gzip size of the JS/CSS files a page fetched (resource timing entries mapped back to dist/). */
function fetchedSize(urls) {
  let total = 0
  for (const u of new Set(urls)) {
    const path = new URL(u).pathname
    const file = join(DIST, path)
    if (/\.(js|css)$/.test(path) && existsSync(file)) total += gz(file)
  }
  return total
}

// --- helpers --------------------------------------------------------------------------------------------
async function api(base, path, { method = 'GET', token, body } = {}) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await r.text()
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text.slice(0, 300)}`)
  return text ? JSON.parse(text) : null
}

function longConversation(n) {
  const now = Date.now()
  const messages = []
  for (let i = 0; i < n; i++) {
    const user = i % 2 === 0
    messages.push({
      id: `m${i}`,
      parent_id: i ? `m${i - 1}` : null,
      role: user ? 'user' : 'assistant',
      content: user
        ? `Question ${i}: how does step ${i} work?`
        : `Answer ${i} with **markdown**:\n\n- one point\n- another point\n\n\`\`\`python\nprint(${i})\n\`\`\`\n\nAnd inline \`code\` too.`,
      status: 'complete',
      model: user ? undefined : 'llama3.2:latest',
      created_at: new Date(now - (n - i) * 1000).toISOString(),
    })
  }
  return {
    format: 'modeltrain.conversations',
    version: 1,
    conversations: [{ id: 'long', title: 'Long conversation', model: 'llama3.2:latest', created_at: new Date(now - n * 1000 - 1000).toISOString(), messages }],
  }
}

async function signIn(page, base) {
  await page.goto(`${base}/login`)
  await page.fill('#login-email', EMAIL)
  await page.fill('#login-password', PASSWORD)
  await page.press('#login-password', 'Enter')
  await page.waitForURL(/\/chat/)
  await page.waitForSelector('#composer-input')
}

/** In-page: true once the chat screen accepts input (composer, a selected model, Send). */
const chatReady = () => {
  const input = document.querySelector('#composer-input')
  const model = document.querySelector('.composer .model-select .n-base-selection-label')
  return !!input && !input.disabled && !!model && /\S/.test(model.textContent || '') && !!document.querySelector('button[aria-label="Send"]')
}

/** In-page: the chat screen accepts input and shows the last answer of the long conversation. */
const longReady = () => {
  const input = document.querySelector('#composer-input')
  const text = document.querySelector('.scroller')?.textContent || ''
  return !!input && !!document.querySelector('button[aria-label="Send"]') && text.includes('Answer 1999')
}

/** In-page: rAF intervals for `durationMs`. */
const idleFrames = (durationMs) =>
  new Promise((resolveFrames) => {
    const out = []
    let last = performance.now()
    const start = last
    const tick = (t) => {
      out.push(t - last)
      last = t
      if (t - start < durationMs) requestAnimationFrame(tick)
      else resolveFrames(out)
    }
    requestAnimationFrame(tick)
  })

/** In-page: rAF intervals from the moment Stop appears until it disappears (one streamed answer). */
const streamingFrames = () =>
  new Promise((resolveFrames, reject) => {
    const out = []
    let last = 0
    let started = false
    const t0 = performance.now()
    const stop = () => document.querySelector('button[aria-label="Stop"]')
    const tick = (t) => {
      if (!started) {
        if (stop()) {
          started = true
          last = t
        } else if (t - t0 > 15000) return reject(new Error('the answer did not start streaming'))
        return requestAnimationFrame(tick)
      }
      out.push(t - last)
      last = t
      if (stop()) requestAnimationFrame(tick)
      else resolveFrames(out)
    }
    requestAnimationFrame(tick)
  })

function frameStats(xs) {
  return {
    frames: xs.length,
    p50: quantile(xs, 0.5),
    p95: quantile(xs, 0.95),
    p99: quantile(xs, 0.99),
    max: Math.max(...xs),
    over50: xs.filter((x) => x > 50).length,
  }
}

async function streamInto(page, words) {
  const frames = page.evaluate(streamingFrames)
  await page.fill('#composer-input', `[[words ${words}]]`)
  await page.press('#composer-input', 'Enter')
  const xs = await frames
  await page.waitForFunction((w) => {
    const all = document.querySelectorAll('.msg-assistant .md')
    return all.length && (all[all.length - 1].textContent || '').includes(`w${w}`)
  }, words)
  return frameStats(xs)
}

// --- run ------------------------------------------------------------------------------------------------
async function main() {
  if (!existsSync(join(DIST, 'index.html'))) throw new Error('webui/dist is missing: cd webui && npm run build')
  const sizes = initialAssets()
  results.initial = sizes

  const tmp = mkdtempSync(join(tmpdir(), 'modeltrain-bench-'))
  const procs = []
  let browser
  try {
    const fake = await startFakeOllama({ tokenDelay: TOKEN_DELAY, pullTick: 0.06 })
    procs.push(fake)
    const server = await startServer({
      MODELTRAIN_DATA_DIR: join(tmp, 'data'),
      MODELTRAIN_BACKUP_DIR: join(tmp, 'backups'),
      INITIAL_ADMIN_PASSWORD: INITIAL,
      MODELTRAIN_OLLAMA_URL: fake.url,
      MODELTRAIN_WEBUI_DIST: DIST,
      MODELTRAIN_BACKUP_SCHEDULE: 'off',
      MODELTRAIN_CHAT_TITLE_GENERATION: 'false',
      MODELTRAIN_LOG_LEVEL: 'WARNING',
    })
    procs.push(server)
    const base = server.url
    const first = await api(base, '/api/auth/login', { method: 'POST', body: { email: EMAIL, password: INITIAL } })
    await api(base, '/api/auth/password', { method: 'POST', token: first.access_token, body: { current_password: INITIAL, new_password: PASSWORD } })
    const token = (await api(base, '/api/auth/login', { method: 'POST', body: { email: EMAIL, password: PASSWORD } })).access_token
    const imported = await api(base, '/api/conversations/import', { method: 'POST', token, body: longConversation(2000) })
    const longId = imported.ids.long

    browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS })

    // --- 2. navigation -> interactive ---
    const cold = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' })
    const coldPage = await cold.newPage()
    const baseline = []
    const signInScreen = []
    for (let i = 0; i < RUNS; i++) {
      await coldPage.goto(`${base}/api/health`)
      baseline.push(await coldPage.evaluate(() => performance.getEntriesByType('navigation')[0].loadEventEnd))
      await coldPage.goto(`${base}/login`)
      await coldPage.waitForSelector('#login-email')
      signInScreen.push(await coldPage.evaluate(() => performance.now()))
    }
    await cold.close()

    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' })
    const page = await ctx.newPage()
    await signIn(page, base)
    const chatInteractive = []
    let chatBytes = 0
    for (let i = 0; i < RUNS; i++) {
      await page.goto(`${base}/chat`)
      await page.waitForFunction(chatReady)
      chatInteractive.push(await page.evaluate(() => performance.now()))
      if (i === 0) chatBytes = fetchedSize(await page.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name)))
    }
    const longOpen = []
    for (let i = 0; i < Math.min(RUNS, 3); i++) {
      await page.goto(`${base}/chat/${longId}`)
      await page.waitForFunction(longReady, undefined, { timeout: 60_000 })
      longOpen.push(await page.evaluate(() => performance.now()))
    }
    results.navigation = {
      baseline_health_load_ms: median(baseline),
      sign_in_interactive_ms: median(signInScreen),
      chat_interactive_ms: median(chatInteractive),
      chat_js_css_gzip_bytes: chatBytes,
      long_conversation_interactive_ms: median(longOpen),
    }

    // --- 3. frame time while streaming ---
    // the long conversation is open and scrolled to its end (the last run above)
    const rows = await page.evaluate(() => document.querySelectorAll('.msg').length)
    const idle = frameStats(await page.evaluate(idleFrames, 3000))
    const intoLong = await streamInto(page, 500)
    await page.goto(`${base}/chat`)
    await page.waitForFunction(chatReady)
    await page.click('button:has-text("New chat")')
    const intoEmpty = await streamInto(page, 500)
    results.frames = { rows_in_dom: rows, idle_long_conversation: idle, streaming_into_2000: intoLong, streaming_into_empty: intoEmpty }
  } finally {
    if (browser) await browser.close()
    for (const p of procs.reverse()) await p.stop()
    rmSync(tmp, { recursive: true, force: true })
  }
}

await main()

if (JSON_OUT) {
  console.log(JSON.stringify(results, null, 2))
} else {
  const { initial: s, navigation: n, frames: f } = results
  const ratio = (a, b) => `${(a / b).toFixed(2)}x`
  console.log('Web UI budget (webui/dist; Debian Chromium headless; fake Ollama at ' + `${Math.round(1 / TOKEN_DELAY)} tokens/s; medians of ${RUNS} runs)`)
  console.log('\n1. Initial load (entry script + modulepreload + stylesheets of dist/index.html)')
  console.log(`   ${s.files} files: JS ${kib(s.js)} + CSS ${kib(s.css)} = ${kib(s.total)} gzip -9 (${kib(s.raw)} uncompressed)`)
  console.log(`   JS+CSS fetched for an interactive chat screen: ${kib(n.chat_js_css_gzip_bytes)} gzip (${ratio(n.chat_js_css_gzip_bytes, s.total)} the initial set)`)
  console.log('\n2. Navigation -> interactive (performance.now() at the moment the screen accepts input)')
  console.log(`   baseline: GET /api/health page load         ${ms(n.baseline_health_load_ms)}`)
  console.log(`   sign-in screen (no session)                 ${ms(n.sign_in_interactive_ms)}  (${ratio(n.sign_in_interactive_ms, n.baseline_health_load_ms)} baseline)`)
  console.log(`   chat screen (session cookie, refresh+models) ${ms(n.chat_interactive_ms)}  (${ratio(n.chat_interactive_ms, n.baseline_health_load_ms)} baseline)`)
  console.log(`   2,000-message conversation, last answer shown ${ms(n.long_conversation_interactive_ms)}  (${ratio(n.long_conversation_interactive_ms, n.baseline_health_load_ms)} baseline)`)
  console.log(`\n3. Frame time (requestAnimationFrame intervals); ${f.rows_in_dom} message rows in the DOM of 2,000`)
  const row = (label, x) =>
    console.log(`   ${label.padEnd(40)} frames ${String(x.frames).padStart(4)}  p50 ${ms(x.p50).padStart(8)}  p95 ${ms(x.p95).padStart(8)}  p99 ${ms(x.p99).padStart(8)}  max ${ms(x.max).padStart(8)}  >50ms ${x.over50}`)
  row('baseline: idle, 2,000-message chat', f.idle_long_conversation)
  row('500 tokens streaming into 2,000 messages', f.streaming_into_2000)
  row('500 tokens streaming into an empty chat', f.streaming_into_empty)
  console.log(`   p95 while streaming into 2,000 messages: ${ratio(f.streaming_into_2000.p95, f.idle_long_conversation.p95)} idle p95, ${ratio(f.streaming_into_2000.p95, f.streaming_into_empty.p95)} the empty-chat p95`)
}
