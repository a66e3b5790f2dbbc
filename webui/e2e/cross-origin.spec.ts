/**
 * Cross-origin requests and CSRF from a real page in the browser (docs/security.md, A3). A signed-in
 * administrator's browser opens pages on other origins — http://attacker.test, a host that only starts
 * like ours (http://127.0.0.1.attacker.test) and a sandboxed frame (origin `null`) — and each attacks the
 * API with a credentialed JSON fetch (refresh, logout, a new chat, a new user, a restore) and with the
 * "simple" requests a browser sends without asking (form-urlencoded and text/plain POSTs, a form
 * submission). Chromium must block every JSON fetch (no Access-Control-Allow-Origin in any answer), the
 * server must refuse every simple request (403), and nothing may change: the session still refreshes and
 * no conversation or user was created.
 *
 * The attacker pages are served by Playwright (page.route), so no name is resolved and nothing leaves
 * the machine. This spec uses Playwright's own `test`: the shared guard fixture would count the attacker
 * pages themselves as requests to another origin.
 */
import { test as base, expect, type APIRequestContext, type Page, type Response } from '@playwright/test'
import { CHROMIUM_ARGS } from '../playwright.config'
import { ADMIN_EMAIL, NEW_ADMIN_PASSWORD, serverUrl } from './fixtures/env'

const test = base.extend({
  // eslint-disable-next-line no-empty-pattern
  baseURL: async ({}, use) => {
    await use(serverUrl())
  },
})

// Chromium's own Local Network Access checks would block every request from these pages to 127.0.0.1
// before it left the browser; other browsers (and older ones) have no such check, so it is turned off
// here and the server's own defences are what the spec sees.
test.use({
  launchOptions: {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      ...CHROMIUM_ARGS,
      '--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests',
    ],
  },
})

const ATTACKERS = ['http://attacker.test', 'http://127.0.0.1.attacker.test']

interface Outcome {
  target: string
  result: string
}

/** Runs in the attacker's page: every attack. A credentialed JSON fetch is reported as `blocked` (it
 * failed: CORS) or `answered`; the simple requests' answers are read from the network by the spec. */
async function attack(page: Page, api: string): Promise<Outcome[]> {
  return page.evaluate(async (api) => {
    const fake = '00000000-0000-4000-8000-000000000000'
    const targets: Record<string, unknown> = {
      '/api/auth/refresh': {},
      '/api/auth/logout': {},
      '/api/conversations': { title: 'planted by attacker.test' },
      '/api/users': { email: 'planted@attacker.test', password: 'planted-Passw0rd-123', role: 'admin' },
      [`/api/backups/${fake}/restore`]: {},
    }
    const out: { target: string; result: string }[] = []
    for (const [target, body] of Object.entries(targets)) {
      const url = api + target
      try {
        await fetch(url, {
          method: 'POST',
          credentials: 'include',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
        })
        out.push({ target, result: 'answered' })
      } catch {
        out.push({ target, result: 'blocked' })
      }
      for (const type of ['application/x-www-form-urlencoded', 'text/plain']) {
        // A "simple" request goes out without a preflight: a form posted into a hidden frame. The spec
        // reads the server's answer from the network.
        const sink = document.createElement('iframe')
        sink.name = `sink-${out.length}-${type}`
        document.body.append(sink)
        const form = document.createElement('form')
        Object.assign(form, { method: 'POST', action: url, enctype: type, target: sink.name })
        const field = document.createElement('input')
        Object.assign(field, { name: 'title', value: 'planted' })
        form.append(field)
        document.body.append(form)
        const loaded = new Promise((done) => sink.addEventListener('load', done, { once: true }))
        form.submit()
        await loaded
      }
    }
    return out
  }, api)
}

async function counts(request: APIRequestContext, token: string): Promise<{ conversations: number; users: number }> {
  const h = { Authorization: `Bearer ${token}` }
  const conversations = (await (await request.get('/api/conversations', { headers: h })).json()).total as number
  const users = (await (await request.get('/api/users', { headers: h })).json()).total as number
  return { conversations, users }
}

test('pages on other origins cannot act with the signed-in browser', async ({ page, context, request }) => {
  const api = new URL(serverUrl()).origin
  // Signed in through the real UI: the browser holds the refresh cookie an attacker would ride on.
  await page.goto('/login')
  await page.locator('#login-email').fill(ADMIN_EMAIL)
  await page.locator('#login-password').fill(NEW_ADMIN_PASSWORD)
  await page.locator('#login-password').press('Enter')
  await page.waitForURL(/\/chat/)
  const login = await request.post('/api/auth/login', { data: { email: ADMIN_EMAIL, password: NEW_ADMIN_PASSWORD } })
  const token = (await login.json()).access_token as string
  const before = await counts(request, token)

  // Every answer the API gives to the attacker pages, read from the network (opaque to the pages).
  const answers: Response[] = []
  context.on('response', (r) => {
    if (r.url().startsWith(`${api}/api/`)) answers.push(r)
  })
  // The POSTs an origin's pages sent that the server answered (the answers arrive as network events, so
  // they are awaited before a page is closed).
  const refused = (origin: string) =>
    answers.filter((r) => r.request().method() === 'POST' && r.request().headers()['origin'] === origin)
  for (const origin of ATTACKERS) {
    await context.route(`${origin}/**`, (route) =>
      route.fulfill({
        contentType: 'text/html',
        body: `<!doctype html><title>attacker</title>
          <form id="csrf" method="POST" action="${api}/api/auth/logout" enctype="text/plain">
            <input name='{"a":"' value='b"}'>
          </form>
          <iframe id="null-origin" sandbox="allow-scripts allow-forms"></iframe>`,
      }),
    )
  }

  const outcomes: Record<string, Outcome[]> = {}
  for (const origin of ATTACKERS) {
    const evil = await context.newPage()
    await evil.goto(`${origin}/`)
    outcomes[origin] = await attack(evil, api)
    // A classic CSRF form, submitted by the page: the browser navigates with the POST.
    const submitted = evil.waitForResponse((r) => r.url() === `${api}/api/auth/logout`)
    await evil.evaluate(() => (document.getElementById('csrf') as HTMLFormElement).submit())
    expect((await submitted).status()).toBe(403)
    await expect.poll(() => refused(origin).length).toBe(5 * 2 + 1)
    await evil.close()
  }

  // Origin `null`: a sandboxed frame (the same attacks from a script without an origin). The attacks run
  // through Playwright inside the frame: Chromium may give a sandboxed frame a process of its own, and a
  // script the frame started by itself could send its first requests before Playwright watches that
  // process's network.
  const framed = await context.newPage()
  await framed.goto(`${ATTACKERS[0]}/`)
  const navigated = framed.waitForEvent('framenavigated', (f) => f.url() === 'about:srcdoc')
  await framed.evaluate(() => {
    ;(document.getElementById('null-origin') as HTMLIFrameElement).srcdoc = '<!doctype html><title>framed</title>'
  })
  const sandboxed = await navigated
  await sandboxed.waitForLoadState()
  const nullResults = await sandboxed.evaluate(async (api) => {
    if (window.origin !== 'null') throw new Error(`the frame's origin is ${window.origin}`)
    const results: string[] = []
    for (const target of ['/api/auth/refresh', '/api/auth/logout', '/api/conversations']) {
      try {
        await fetch(api + target, {
          method: 'POST',
          credentials: 'include',
          headers: { 'Content-Type': 'application/json' },
          body: '{}',
        })
        results.push('answered')
      } catch {
        results.push('blocked')
      }
      const sink = document.createElement('iframe')
      sink.name = `sink-${results.length}`
      document.body.append(sink)
      const form = document.createElement('form')
      Object.assign(form, { method: 'POST', action: api + target, enctype: 'text/plain', target: sink.name })
      document.body.append(form)
      const loaded = new Promise((done) => sink.addEventListener('load', done, { once: true }))
      form.submit()
      await loaded
    }
    return results
  }, api)
  await expect.poll(() => refused('null').length).toBe(3)
  await framed.close()

  // Chromium blocked every credentialed JSON fetch (its preflight got no CORS answer)...
  for (const origin of ATTACKERS)
    expect(
      outcomes[origin].map((o) => o.result),
      origin,
    ).toEqual(Array(5).fill('blocked'))
  expect(nullResults).toEqual(['blocked', 'blocked', 'blocked'])
  // ... and the server refused every request that went out: the simple ones (5 targets x 2 types per
  // page, 3 from the null origin) and the form submissions, each 403, none with a CORS header.
  for (const origin of ATTACKERS) expect(refused(origin).length, origin).toBe(5 * 2 + 1)
  expect(refused('null').length).toBe(3)
  for (const r of answers) {
    expect(r.headers()['access-control-allow-origin'], r.url()).toBeUndefined()
    if (r.request().method() === 'POST') expect(r.status(), `${r.request().headers()['origin']} ${r.url()}`).toBe(403)
  }

  // Nothing changed: the session in the real tab still refreshes, no chat or user was planted.
  const refreshed = await page.evaluate(
    async () =>
      (
        await fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: '{}',
        })
      ).status,
  )
  expect(refreshed).toBe(200)
  expect(await counts(request, token)).toEqual(before)
})
