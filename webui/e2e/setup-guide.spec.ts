/**
 * The first-run guide's three steps: a runtime (Ollama found here; an Ollama on another computer connected),
 * a suggested model pulled there with progress, and the first chat opened with that model selected. A new
 * administrator walks it, opened from Settings (this install already has models, so it does not open by
 * itself), and their guide ends "completed" on the server.
 */
import { startFakeOllama } from './fixtures/processes.mjs'
import { apiToken, expect, journeyShot, lastAssistant, send, signIn, test, waitIdle } from './fixtures/test'

const PASSWORD = 'Setup-guide-Passw0rd-7'
let other: { url: string; stop: () => Promise<void> } | undefined
let adminToken = ''
let email = ''

const auth = (token = adminToken) => ({ Authorization: `Bearer ${token}` })

test.describe.configure({ mode: 'serial' })

test.beforeAll(async ({ request }) => {
  other = await startFakeOllama({ tokenDelay: 0.01, pullTick: 0.3 })
  adminToken = await apiToken(request)
  email = `setup-${Date.now()}@example.com`
  const r = await request.post('/api/users', {
    headers: auth(),
    data: { email, password: PASSWORD, display_name: 'Setup', role: 'admin' },
  })
  expect(r.status(), await r.text()).toBe(201)
})

test.afterAll(async ({ request }) => {
  // the Ollama this spec connected: removed, so no other spec sees its models
  const r = await request.get('/api/providers', { headers: auth() })
  const items = ((await r.json()).items ?? []) as Array<{ id: string; base_url: string }>
  const ids = items.filter((p) => other && p.base_url.startsWith(other.url)).map((p) => p.id)
  for (const id of ids) await request.delete(`/api/providers/${id}`, { headers: auth() })
  await other?.stop()
})

test('the guide: a runtime, a model pulled with progress, the first chat with it', async ({ page, request }) => {
  test.setTimeout(90_000)
  await signIn(page, PASSWORD, email)

  // reachable again from Settings
  await page.goto('/settings')
  await page.getByRole('button', { name: 'Open the setup guide' }).click()
  await page.waitForURL(/\/setup$/)
  await expect(page.getByRole('heading', { name: 'Set up ModelTrain' })).toBeVisible()

  // step 1: the local Ollama is found; this walk connects the one on "another computer" instead
  await expect(page.getByTestId('runtime-found')).toContainText('Ollama is running.')
  await journeyShot(page, 'setup-step-1')
  await page.locator('#setup-remote-url').fill(other!.url)
  await page.getByRole('button', { name: 'Connect' }).click()

  // step 2: suggestions with a fit badge each; a suggested model is pulled there with progress
  await expect(page.getByRole('heading', { name: 'Choose a model' })).toBeVisible()
  await expect(page.getByTestId('setup-machine')).toContainText('This computer:')
  const card = page.locator('label.suggestion').filter({ hasText: 'smollm2:135m' })
  await expect(card.locator('.n-tag')).toHaveText(/Fits|Tight|Too big/)
  await expect(page.locator('label.suggestion')).toHaveCount(6)
  await card.click()
  await expect(card.locator('input[type=radio]')).toBeChecked()
  await journeyShot(page, 'setup-step-2')
  await page.getByRole('button', { name: 'Download', exact: true }).click()
  const progress = page.getByTestId('setup-pull')
  await expect(progress).toContainText('smollm2:135m')
  await expect(progress.locator('.n-progress')).toBeVisible()
  await progress.scrollIntoViewIfNeeded()
  await journeyShot(page, 'setup-step-2-pull')

  // step 3, once the model is pulled and listed
  await expect(page.getByRole('heading', { name: 'Ready to chat' })).toBeVisible({ timeout: 45_000 })
  await expect(page.getByText('Your first chat opens with smollm2:135m selected.')).toBeVisible()
  await journeyShot(page, 'setup-step-3')
  await page.getByTestId('setup-open-chat').click()

  // the first chat, with that model selected, answers
  await page.waitForURL(/\/chat/)
  await expect(page.locator('.composer .model-select')).toContainText('smollm2:135m')
  await send(page, 'Hello from the setup guide')
  await waitIdle(page)
  await expect(lastAssistant(page)).not.toBeEmpty()

  // finished on the server: not shown again
  const token = await apiToken(request, PASSWORD, email)
  const state = await (await request.get('/api/onboarding', { headers: auth(token) })).json()
  expect(state).toMatchObject({ state: 'completed', show: false })
})

test('reopened, the guide opens by itself after sign-in (phone width) and can be skipped', async ({
  page,
  request,
}) => {
  const token = await apiToken(request, PASSWORD, email)
  expect((await request.post('/api/onboarding/reopen', { headers: auth(token) })).status()).toBe(200)
  await page.setViewportSize({ width: 390, height: 844 }) // a phone on the LAN
  await page.goto('/login')
  await page.locator('#login-email').fill(email)
  await page.locator('#login-password').fill(PASSWORD)
  await page.locator('#login-password').press('Enter')
  // reopened: it opens by itself after sign-in, with the runtime step first
  await page.waitForURL(/\/setup$/)
  await expect(page.getByRole('heading', { name: 'Something that runs models' })).toBeVisible()
  await expect(page.getByTestId('runtime-found')).toBeVisible()
  // nothing wider than the phone's screen
  expect(await page.locator('.page').evaluate((el) => el.scrollWidth - el.clientWidth)).toBeLessThanOrEqual(0)
  await journeyShot(page, 'setup-phone')
  await page.getByTestId('setup-skip').click()
  await page.waitForURL(/\/chat/)
  const state = await (await request.get('/api/onboarding', { headers: auth(token) })).json()
  expect(state).toMatchObject({ state: 'skipped', show: false })
})
