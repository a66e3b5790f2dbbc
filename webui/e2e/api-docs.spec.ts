/**
 * The API docs (MODELTRAIN_API_DOCS, on for the e2e server; server/api/docs.py): Swagger UI, shipped with
 * the web UI build and served from our own origin, renders the operations under the app's CSP — no CSP
 * violation, no console error, nothing fetched from another origin (the guard fixture checks that too).
 */
import { expect, journeyShot, test } from './fixtures/test'

test('the API docs render the operations from our own origin under the CSP', async ({ page, guard, baseURL }) => {
  const origin = new URL(baseURL!).origin
  const consoleErrors: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text())
  })
  const assets: string[] = []
  page.on('requestfinished', (r) => {
    if (['script', 'stylesheet'].includes(r.resourceType())) assets.push(r.url())
  })

  const response = await page.goto('/api/docs')
  expect(response?.status()).toBe(200)
  const csp = response?.headers()['content-security-policy'] ?? ''
  expect(csp).toMatch(/(?:^|;)\s*script-src 'self';/)
  expect(csp).not.toContain("'unsafe-eval'")

  await expect(page.locator('.swagger-ui .info .title')).toContainText('ModelTrain')
  // Every section (one per tag, folded at first) opens, shows its operations and folds again.
  const sections = page.locator('.opblock-tag-section')
  await expect(sections.first()).toBeVisible()
  const count = await sections.count()
  expect(count).toBeGreaterThan(20)
  for (let i = 0; i < count; i++) {
    const section = sections.nth(i)
    await section.locator('.opblock-tag').click()
    await expect(section.locator('.opblock').first()).toBeVisible()
    await section.locator('.opblock-tag').click()
    await expect(section.locator('.opblock')).toHaveCount(0)
  }
  await page.locator('.opblock-tag').filter({ hasText: /^chat/ }).click()
  const chat = page
    .locator('.opblock-post')
    .filter({ has: page.locator('.opblock-summary-path[data-path="/api/chat"]') })
  await expect(chat).toBeVisible()
  await chat.locator('.opblock-summary-control').click()
  await expect(chat.getByRole('button', { name: 'Try it out' })).toBeVisible()
  await journeyShot(page, 'api-docs')

  expect(assets).toContain(`${origin}/swagger-ui/swagger-ui-bundle.js`)
  expect(assets).toContain(`${origin}/swagger-ui/swagger-ui.css`)
  expect(assets.every((u) => u.startsWith(`${origin}/`))).toBe(true)
  expect(await guard.csp(page)).toEqual([])
  expect(consoleErrors).toEqual([])
})
