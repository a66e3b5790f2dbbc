// Smoke run against a real server: signs in, changes the initial password, visits every screen in
// both languages and themes, and saves screenshots. Usage:
//   MT_URL=http://127.0.0.1:8000 MT_EMAIL=admin@example.com MT_PASSWORD=... MT_NEW_PASSWORD=... node e2e/screens.mjs
// Uses Debian's /usr/bin/chromium through playwright-core (never downloads a browser).
import { chromium } from 'playwright-core'
import { mkdirSync } from 'node:fs'

const base = process.env.MT_URL || 'http://127.0.0.1:8000'
const email = process.env.MT_EMAIL || 'admin@example.com'
let password = process.env.MT_PASSWORD || ''
const newPassword = process.env.MT_NEW_PASSWORD || 'A-new-passw0rd-for-e2e'
const out = process.env.MT_SHOTS || 'e2e/screenshots'
mkdirSync(out, { recursive: true })

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
const problems = []
async function session(locale, colorScheme, viewport) {
  const ctx = await browser.newContext({ locale, colorScheme, viewport })
  const page = await ctx.newPage()
  page.on('console', (m) => {
    // the session probes at start-up (refresh cookie, desktop sign-in) answer 401/404 by design
    if (m.type() === 'error' && !/status of (401|404)/.test(m.text())) problems.push(`[${locale}] console: ${m.text()}`)
  })
  page.on('pageerror', (e) => problems.push(`[${locale}] pageerror: ${e.message}`))
  page.on('dialog', (d) => {
    problems.push(`[${locale}] unexpected dialog: ${d.message()}`)
    void d.dismiss()
  })
  return { ctx, page }
}

async function signIn(page) {
  await page.goto(`${base}/chat`)
  await page.waitForSelector('#login-email')
  await page.fill('#login-email', email)
  await page.fill('#login-password', password)
  await page.keyboard.press('Enter')
  await page.waitForURL((u) => u.pathname.startsWith('/chat') || u.pathname.startsWith('/change-password'))
  if (page.url().includes('change-password')) {
    await page.screenshot({ path: `${out}/change-password.png` })
    await page.fill('#cp-current', password)
    await page.fill('#cp-new', newPassword)
    await page.fill('#cp-confirm', newPassword)
    await page.keyboard.press('Enter')
    await page.waitForURL((u) => u.pathname.startsWith('/chat'))
    password = newPassword
  }
}

const screens = ['chat', 'models', 'providers', 'users', 'system', 'settings']
for (const [locale, scheme] of [['zh-CN', 'light'], ['en-US', 'dark']]) {
  const { ctx, page } = await session(locale, scheme, { width: 1280, height: 800 })
  await page.goto(`${base}/login`)
  await page.waitForSelector('#login-email')
  await page.screenshot({ path: `${out}/${locale}-login.png` })
  await signIn(page)
  for (const s of screens) {
    await page.goto(`${base}/${s}`)
    await page.waitForTimeout(1200)
    await page.screenshot({ path: `${out}/${locale}-${scheme}-${s}.png` })
  }
  await ctx.close()
}
{
  const { ctx, page } = await session('en-US', 'light', { width: 390, height: 844 })
  await signIn(page)
  await page.waitForTimeout(800)
  await page.screenshot({ path: `${out}/phone-chat.png` })
  await page.goto(`${base}/models`)
  await page.waitForTimeout(1000)
  await page.screenshot({ path: `${out}/phone-models.png` })
  await ctx.close()
}
await browser.close()
console.log(problems.length ? problems.join('\n') : 'no console errors')
console.log(`password now: ${password === newPassword ? 'changed' : 'unchanged'}`)
