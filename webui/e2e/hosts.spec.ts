/**
 * Several Ollama hosts in one host group: the group's model is one entry in the model list, a chat is routed
 * to a host of the group, and the Providers → Hosts view shows each host's state (a stopped one is down),
 * probe latency and loaded models with their VRAM. Two extra fake Ollamas; the default provider stays out of
 * the group, so the other specs' model ids do not change.
 */
import { startFakeOllama } from './fixtures/processes.mjs'
import { apiToken, expect, journeyShot, signIn, test } from './fixtures/test'

type Fake = { url: string; stop: () => Promise<void> }
const fakes: Fake[] = []
const providerIds: string[] = []
let token = ''
const auth = () => ({ Authorization: `Bearer ${token}` })
const GROUP_MODEL = 'group:e2e-farm:llama3.2:latest'

test.describe.configure({ mode: 'serial' })

test.beforeAll(async ({ request }) => {
  token = await apiToken(request)
  for (const [i, name] of ['GPU box A', 'GPU box B'].entries()) {
    const fake = await startFakeOllama({ tokenDelay: 0, pullTick: 0.05 })
    fakes.push(fake)
    const r = await request.post('/api/providers', {
      headers: auth(),
      data: { name, kind: 'ollama', base_url: fake.url, group: 'e2e-farm', weight: i + 1 },
    })
    expect(r.status(), await r.text()).toBe(201)
    providerIds.push((await r.json()).id)
  }
})

test.afterAll(async ({ request }) => {
  for (const id of providerIds) await request.delete(`/api/providers/${id}`, { headers: auth() })
  for (const fake of fakes) await fake.stop()
})

test('a host group serves one model; the Hosts view shows each host, a stopped one down', async ({ page, request }) => {
  const models = await request.get('/api/models', { headers: auth() })
  const items = (await models.json()).items as Array<{ id: string; hosts: Array<{ name: string }> }>
  const grouped = items.filter((m) => m.id === GROUP_MODEL)
  expect(grouped).toHaveLength(1)
  expect(grouped[0].hosts.map((h) => h.name).sort()).toEqual(['GPU box A', 'GPU box B'])

  // one host stops: the probe marks it down, and a chat through the group is served by the other one
  await fakes[1].stop()
  let probed = await request.post('/api/hosts/probe', { headers: auth() })
  let hosts = (await probed.json()).items as Array<{ name: string; state: string; loaded_models: unknown[] }>
  expect(hosts.find((h) => h.name === 'GPU box B')?.state).toBe('down')
  expect(hosts.find((h) => h.name === 'GPU box A')?.state).toBe('healthy')
  const chat = await request.post('/api/chat', { headers: auth(), data: { model: GROUP_MODEL, content: 'hello' } })
  expect(chat.status(), await chat.text()).toBe(200)
  expect(await chat.text()).toContain('event: done')
  probed = await request.post('/api/hosts/probe', { headers: auth() })
  hosts = (await probed.json()).items
  expect(hosts.find((h) => h.name === 'GPU box A')?.loaded_models).toHaveLength(1)

  await signIn(page)
  await page.goto('/providers')
  await expect(page.getByRole('cell', { name: 'GPU box A' })).toBeVisible()
  await expect(page.getByText('e2e-farm · 2', { exact: true })).toBeVisible()
  await page.locator('.n-tabs-tab', { hasText: 'Hosts' }).click()
  const table = page.getByTestId('hosts-table')
  await expect(table.getByTestId('host-state-GPU box A')).toHaveText('Healthy')
  await expect(table.getByTestId('host-state-GPU box B')).toHaveText('Down')
  await expect(table).toContainText('llama3.2:latest')
  await expect(table.locator('.n-base-loading')).toHaveCount(0) // the first load's spinner has faded
  await journeyShot(page, 'hosts')
})

test('an admin makes a route in Providers → Routes', async ({ page, request }) => {
  await signIn(page)
  await page.goto('/providers')
  await page.locator('.n-tabs-tab', { hasText: 'Routes' }).click()
  await page.getByTestId('route-add').click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'Add a route' })
  await dialog.getByRole('textbox').first().fill('e2e-smart')
  await dialog.locator('.n-base-selection').first().click()
  await page.locator('.n-base-select-option', { hasText: 'GPU box A' }).click()
  await dialog.getByPlaceholder('Model on that provider').fill('llama3.2:latest')
  await dialog.getByRole('button', { name: 'Save' }).click()
  await expect(dialog).toBeHidden()
  await expect(page.getByRole('cell', { name: 'e2e-smart' })).toBeVisible()

  const routes = (await (await request.get('/api/routes', { headers: auth() })).json()).items as Array<{
    id: string
    name: string
  }>
  const route = routes.find((r) => r.name === 'e2e-smart')
  expect(route).toBeTruthy()
  const models = (await (await request.get('/api/models', { headers: auth() })).json()).items as Array<{ id: string }>
  expect(models.map((m) => m.id)).toContain(`route:${route?.id}`)
  await request.delete(`/api/routes/${route?.id}`, { headers: auth() })
})

test('the Models page offers to pull on every host of the picked host group', async ({ page }) => {
  await signIn(page)
  await page.goto('/models')
  await page.locator('.host-picker .n-base-selection').click()
  await page.locator('.n-base-select-option', { hasText: 'GPU box A' }).click()
  await expect(page.locator('.host-picker')).toContainText('GPU box A')
  await page.getByRole('button', { name: 'Pull model' }).first().click()
  await expect(page.getByTestId('pull-every-host')).toContainText('Pull on every host of the group e2e-farm (2 hosts)')
})
