/**
 * Stored XSS through model output (docs/security.md, D1). A corpus of hostile answers, delivered by the fake
 * Ollama, must render inert: no dialog, no request to another origin (the guard fixture fails the test
 * on either), no active element or attribute in the rendered markdown. The same payloads as a
 * conversation title and a display name render as text. The CSP is the second line: active content
 * pushed into the DOM directly is blocked and a violation is recorded.
 */
import type { Page } from '@playwright/test'
import { HOSTILE_LINE, HOSTILE_NAME, HOSTILE_OUTPUTS, RAW_ACTIVE_HTML } from './fixtures/hostile'
import {
  apiToken,
  expect,
  lastAssistant,
  newChat,
  scrollToLatest,
  scrollToTop,
  send,
  signIn,
  test,
  waitIdle,
} from './fixtures/test'

/** Everything in rendered markdown that could run code or fetch something on its own. */
async function activeContent(page: Page): Promise<string[]> {
  return page.locator('.msg-assistant .md').evaluateAll((roots) => {
    const bad: string[] = []
    const tags =
      'script,iframe,frame,object,embed,img,image,video,audio,source,track,picture,link,meta,base,form,input,button:not(.md-code-copy),style,foreignObject,use,animate,set,dialog,template,noscript'
    const safeHref = /^(?:https?:|mailto:|#)/i
    for (const root of roots) {
      for (const el of root.querySelectorAll('*')) {
        if (el.matches(tags)) bad.push(`<${el.tagName.toLowerCase()}>`)
        for (const a of el.getAttributeNames()) {
          const v = el.getAttribute(a) ?? ''
          if (a.startsWith('on')) bad.push(`${el.tagName}[${a}]`)
          if (
            [
              'src',
              'srcdoc',
              'srcset',
              'action',
              'formaction',
              'poster',
              'background',
              'xlink:href',
              'ping',
              'data',
            ].includes(a)
          )
            bad.push(`${el.tagName}[${a}=${v}]`)
          if (a === 'style' && /url\s*\(|expression|javascript:/i.test(v)) bad.push(`${el.tagName}[style=${v}]`)
          if (a === 'href' && !safeHref.test(v.trim())) bad.push(`${el.tagName}[href=${v}]`)
        }
      }
    }
    return bad
  })
}

test('hostile model output renders inert', async ({ page, guard }) => {
  test.setTimeout(120_000)
  await signIn(page)
  await newChat(page)
  for (const [i, p] of HOSTILE_OUTPUTS.entries()) {
    // a case tag first, so each answer is told apart (the list is virtualised: count rows, not messages)
    await send(page, `[[echo]]case-${i}\n\n${p.text}`)
    await waitIdle(page)
    await scrollToLatest(page)
    const answer = lastAssistant(page).locator('.md')
    await expect(answer, p.name).toContainText(`case-${i}`)
    if (p.visible) await expect(answer, p.name).toContainText(p.visible)
    expect(await activeContent(page), p.name).toEqual([])
  }
  // links to other sites stay plain links that open in a new, unrelated context
  const external = page.locator('.msg-assistant .md a[href^="http://attacker.test"]')
  expect(await external.count()).toBeGreaterThan(0)
  for (const rel of await external.evaluateAll((as) => as.map((a) => a.getAttribute('rel') ?? ''))) {
    expect(rel).toContain('noopener')
    expect(rel).toContain('noreferrer')
  }

  // after a reload the stored answers go through the same renderer (from the server, not the stream)
  await page.reload()
  await expect(page.locator('.msg-assistant').first()).toBeVisible()
  await scrollToLatest(page)
  await expect(page.locator('.msg-assistant .md').last()).toContainText(`case-${HOSTILE_OUTPUTS.length - 1}`)
  expect(await activeContent(page)).toEqual([])
  await scrollToTop(page)
  await expect(page.locator('.msg-assistant .md').first()).toContainText('case-0')
  expect(await activeContent(page)).toEqual([])
  // the sanitiser removed everything: the CSP had nothing left to block, nothing was even attempted
  expect(await guard.csp(page)).toEqual([])
  expect(guard.foreignRequests).toEqual([])
})

test('hostile conversation titles and display names render as text', async ({ page, request }) => {
  await signIn(page)
  await newChat(page)
  // a model-generated title: the fake answers the title request with the first line of the echo
  await send(page, `[[echo]]${HOSTILE_LINE}`)
  await waitIdle(page)
  await page.waitForURL(/\/chat\/[0-9a-f-]{36}/)
  const id = new URL(page.url()).pathname.split('/').pop()!

  const token = await apiToken(request)
  const auth = { Authorization: `Bearer ${token}` }
  await expect(page.locator('.sidebar .item-title').filter({ hasText: 'onerror=alert("title")' }).first()).toBeVisible()
  // then a title set by hand and a display name, through the API
  let r = await request.patch(`/api/conversations/${id}`, { headers: auth, data: { title: HOSTILE_LINE } })
  expect(r.status(), await r.text()).toBe(200)
  r = await request.patch('/api/users/me', { headers: auth, data: { display_name: HOSTILE_NAME } })
  expect(r.status(), await r.text()).toBe(200)

  await page.reload()
  const item = page.locator('.sidebar .item-title').filter({ hasText: 'onerror=alert("title")' }).first()
  await expect(item).toHaveText(HOSTILE_LINE)
  expect(await item.evaluate((el) => el.children.length)).toBe(0)

  await page.goto('/settings')
  await expect
    .poll(() =>
      page.evaluate((line) => [...document.querySelectorAll('input')].some((i) => i.value === line), HOSTILE_NAME),
    )
    .toBe(true)
  await page.goto('/users')
  const cell = page.getByRole('cell').filter({ hasText: 'onerror=alert("name")' }).first()
  await expect(cell).toContainText(HOSTILE_NAME)
  expect(await cell.locator('img, svg[onload], iframe, a[href^="javascript"]').count()).toBe(0)
})

test('the CSP blocks active content that bypasses the sanitiser, and records it', async ({ page, guard }) => {
  await signIn(page)
  await page.evaluate((html) => {
    const box = document.createElement('div')
    box.className = 'msg-assistant'
    box.innerHTML = `<div class="md">${html}</div>`
    document.body.appendChild(box)
    const s = document.createElement('script')
    s.textContent = "alert('inline-script')"
    document.body.appendChild(s)
  }, RAW_ACTIVE_HTML)
  await expect
    .poll(async () => (await guard.csp(page)).map((v) => v.directive).sort(), { timeout: 10_000 })
    .toEqual(expect.arrayContaining(['frame-src', 'img-src', 'script-src-attr', 'script-src-elem']))
  // the inspection used on model output does see such content
  expect(await activeContent(page)).toEqual(expect.arrayContaining(['<img>', '<iframe>', 'IMG[onerror]']))
  const blocked = (await guard.csp(page)).map((v) => v.blocked)
  expect(blocked.some((u) => u.startsWith('http://attacker.test'))).toBe(true)
  // the image was attempted and stopped inside the browser; the guard fails the test on anything else
  await expect
    .poll(() => guard.foreignRequests.filter((f) => f.blockedByCsp).map((f) => f.url))
    .toContain('http://attacker.test/csp-img.png')
})

test('hostile log lines render as text in the administrator log viewer', async ({ page }) => {
  // Whatever reaches a log line (a name, a path, an upstream's error) is shown by the log viewer: the
  // whole hostile corpus is served as log lines here (the viewer's API answer, replaced in the browser).
  const lines = [...HOSTILE_OUTPUTS.map((p) => p.text), HOSTILE_LINE, HOSTILE_NAME].map((message, i) => ({
    ts: `2026-12-05T00:00:${String(i).padStart(2, '0')}Z`,
    level: 'WARNING',
    logger: `server.services.<img src=x onerror=alert("logger${i}")>`,
    message,
  }))
  await page.route('**/api/logs?**', (route) =>
    route.fulfill({ json: { lines, host: 'host<svg onload=alert(1)>', instance: 'i' } }),
  )
  await signIn(page)
  await page.goto('/system')
  await page
    .locator('.n-tabs-tab')
    .filter({ hasText: /^Logs$/ })
    .click()
  const log = page.getByRole('log')
  await expect(log).toContainText('onerror=alert("fence1")')
  await expect(log).toContainText('onerror=alert("logger0")')
  expect(
    await log.evaluate(
      (root) =>
        [...root.querySelectorAll('*')].filter(
          (el) =>
            el.matches('script,iframe,img,svg,object,embed,a,form') ||
            el.getAttributeNames().some((a) => a.startsWith('on')),
        ).length,
    ),
  ).toBe(0)
})
