// Chat flow against a real server with the fake Ollama: stream, stop, regenerate, edit/branch,
// hostile markdown, a model pull. Usage: MT_URL=... MT_PASSWORD=... node e2e/chat-flow.mjs
import { chromium } from 'playwright-core'
import { mkdirSync } from 'node:fs'

const base = process.env.MT_URL || 'http://127.0.0.1:8000'
const out = process.env.MT_SHOTS || 'e2e/screenshots'
mkdirSync(out, { recursive: true })
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] })
const ctx = await browser.newContext({ locale: process.env.MT_LOCALE || 'en-US', viewport: { width: 1280, height: 860 } })
const page = await ctx.newPage()
const problems = []
page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`))
page.on('dialog', (d) => {
  problems.push(`dialog: ${d.message()}`)
  void d.dismiss()
})
page.on('request', (r) => {
  if (!r.url().startsWith(base) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) problems.push(`foreign request: ${r.url()}`)
})

await page.goto(`${base}/login`)
await page.fill('#login-email', process.env.MT_EMAIL || 'admin@example.com')
await page.fill('#login-password', process.env.MT_PASSWORD)
await page.keyboard.press('Enter')
await page.waitForURL((u) => u.pathname.startsWith('/chat'))
await page.waitForSelector('#composer-input')

async function send(text) {
  await page.fill('#composer-input', text)
  await page.keyboard.press('Enter')
}
const t0 = Date.now()
await send('Hello! Please answer with some markdown.')
await page.waitForSelector('.msg-assistant .md', { timeout: 15000 })
console.log(`first text after ${Date.now() - t0} ms`)
await page.waitForFunction(() => !document.querySelector('button[aria-label="Stop"]'), null, { timeout: 60000 })
await page.screenshot({ path: `${out}/flow-1-answer.png` })

// stop a second answer early
await send('Tell me a long story.')
await page.waitForSelector('button[aria-label="Stop"]')
await page.waitForTimeout(600)
await page.keyboard.press('Escape')
await page.waitForFunction(() => !document.querySelector('button[aria-label="Stop"]'), null, { timeout: 10000 })
await page.screenshot({ path: `${out}/flow-2-stopped.png` })

// regenerate the last answer
const regen = page.locator('.msg-assistant button[aria-label="Regenerate"]').last()
await regen.click()
await page.waitForTimeout(300)
await page.waitForFunction(() => !document.querySelector('button[aria-label="Stop"]'), null, { timeout: 60000 })
const branchText = await page.locator('.msg-branch-pos').last().textContent()
console.log(`branch after regenerate: ${branchText}`)
await page.locator('.msg-assistant button[aria-label="Previous version"]').last().click()
await page.screenshot({ path: `${out}/flow-3-branches.png` })

// edit the first message
await page.locator('.msg-user').first().hover()
await page.locator('.msg-user button[aria-label="Edit"]').first().click()
await page.locator('.msg-edit textarea').fill('')
await page.keyboard.type('Edited first question')
await page.keyboard.press('Enter')
await page.waitForTimeout(300)
await page.waitForFunction(() => !document.querySelector('button[aria-label="Stop"]'), null, { timeout: 60000 })
console.log(`first message now: ${await page.locator('.msg-user-text').first().textContent()}`)
await page.screenshot({ path: `${out}/flow-4-edited.png` })

// reload: the conversation comes back from the server
await page.reload()
await page.waitForSelector('.msg')
console.log(`messages after reload: ${await page.locator('.msg').count()}`)

// hostile model output (security.md D1): the fake echoes the prompt back inside its answer
await page.click('button[aria-label="New chat"]')
await send('<img src=x onerror=alert(1)> [x](javascript:alert(1)) ![p](https://attacker.test/p.png) <svg onload=alert(1)> ```\n<script>alert(1)</script>')
await page.waitForFunction(() => !document.querySelector('button[aria-label="Stop"]'), null, { timeout: 60000 })
const unsafe = await page.evaluate(() => document.querySelectorAll('.md img, .md script, .md iframe, .md [onerror], .md [onload], .md a[href^="javascript"]').length)
console.log(`unsafe elements in rendered answers: ${unsafe}`)

// a 2,000-message conversation, imported, opened and scrolled
const now = Date.now()
const messages = []
for (let i = 0; i < 2000; i++) {
  messages.push({
    id: `m${i}`,
    parent_id: i ? `m${i - 1}` : null,
    role: i % 2 ? 'assistant' : 'user',
    content: i % 2 ? `Answer ${i} with **markdown**, a list:\n\n- one\n- two\n\n\`\`\`python\nprint(${i})\n\`\`\`` : `Question ${i}?`,
    status: 'complete',
    created_at: new Date(now - (2000 - i) * 1000).toISOString(),
  })
}
const file = { format: 'modeltrain.conversations', version: 1, conversations: [{ id: 'long', title: 'Long conversation', created_at: new Date(now - 3e6).toISOString(), messages }] }
await page.setInputFiles('input[type=file][accept*="json"]', { name: 'long.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(file)) })
await page.waitForSelector('text=Long conversation', { timeout: 20000 })
const t1 = Date.now()
await page.click('text=Long conversation')
await page.waitForFunction(() => document.querySelectorAll('.msg').length > 0 && document.body.innerText.includes('Answer 1999'), null, { timeout: 20000 })
console.log(`2,000-message conversation shown after ${Date.now() - t1} ms; ${await page.locator('.msg').count()} rows in the DOM`)
const frames = await page.evaluate(async () => {
  const el = document.querySelector('.scroller')
  const times = []
  let last = performance.now()
  // like a mouse wheel: 80 px per frame, upwards from the bottom, then a fast fling
  for (let i = 0; i < 120; i++) {
    el.scrollTop -= i < 100 ? 80 : 4000
    await new Promise((r) => requestAnimationFrame(r))
    const t = performance.now()
    times.push(t - last)
    last = t
  }
  times.sort((a, b) => a - b)
  return { p50: times[60].toFixed(1), p95: times[114].toFixed(1), max: times[119].toFixed(1) }
})
console.log(`scrolling frame time ms: p50 ${frames.p50}, p95 ${frames.p95}, max ${frames.max}`)
await page.screenshot({ path: `${out}/flow-long.png` })
// frame times while an answer streams into the 2,000-message conversation
await page.click('button[aria-label="Scroll to the latest message"]').catch(() => {})
const streaming = page.evaluate(async () => {
  const times = []
  let last = performance.now()
  const started = performance.now()
  // wait for the stream to start, then record until it ends
  while (!document.querySelector('button[aria-label="Stop"]') && performance.now() - started < 5000) await new Promise((r) => requestAnimationFrame(r))
  while (document.querySelector('button[aria-label="Stop"]')) {
    await new Promise((r) => requestAnimationFrame(r))
    const t = performance.now()
    times.push(t - last)
    last = t
  }
  times.sort((a, b) => a - b)
  const q = (p) => times[Math.min(times.length - 1, Math.floor(times.length * p))]?.toFixed(1)
  return { frames: times.length, p50: q(0.5), p95: q(0.95), max: q(1) }
})
await send('Stream a reply into this long conversation, please, with many words so that it takes a while.')
console.log(`frame time while streaming into 2,000 messages: ${JSON.stringify(await streaming)}`)

// pull with progress
await page.goto(`${base}/models`)
await page.waitForTimeout(1000)
await page.screenshot({ path: `${out}/flow-5-models.png` })
await page.getByRole('button', { name: 'Pull model' }).click()
await page.fill('.pull-form input', 'tinyllama:latest')
await page.keyboard.press('Enter')
await page.waitForTimeout(1500)
await page.screenshot({ path: `${out}/flow-6-pull.png` })

console.log(problems.length ? problems.join('\n') : 'no page errors, dialogs or foreign requests')
await browser.close()
