/**
 * Models screen with two Ollama hosts: the host picker (remembered across a reload), load / pin / unload
 * with the running state, and a model created from a raw Modelfile — each on the chosen host only.
 */
import type { APIRequestContext, Locator, Page } from '@playwright/test'
import { startFakeOllama } from './fixtures/processes.mjs'
import { apiToken, expect, journeyShot, signIn, test } from './fixtures/test'

let second: { url: string; stop: () => Promise<void> } | undefined
let providerId = ''
let token = ''

const auth = () => ({ Authorization: `Bearer ${token}` })

function localModels(page: Page): Locator {
  return page.locator('section.card').filter({ has: page.getByRole('heading', { name: 'Local models' }) })
}
function modelRow(page: Page, name: string): Locator {
  return localModels(page)
    .locator('tr')
    .filter({ has: page.getByRole('cell', { name, exact: true }) })
}
async function runningOn(request: APIRequestContext, provider?: string): Promise<string[]> {
  const q = provider ? `?provider=${provider}` : ''
  const r = await request.get(`/api/ollama/running${q}`, { headers: auth() })
  return ((await r.json()).items as Array<{ name: string }>).map((m) => m.name)
}
async function modelsOn(request: APIRequestContext, provider?: string): Promise<string[]> {
  const q = provider ? `?provider=${provider}` : ''
  const r = await request.get(`/api/ollama/models${q}`, { headers: auth() })
  return ((await r.json()).items as Array<{ name: string }>).map((m) => m.name)
}

test.describe.configure({ mode: 'serial' })

test.beforeAll(async ({ request }) => {
  second = await startFakeOllama({ tokenDelay: 0, pullTick: 0.05 })
  token = await apiToken(request)
  const r = await request.post('/api/providers', {
    headers: auth(),
    data: { name: 'Second box', kind: 'ollama', base_url: second.url },
  })
  expect(r.status(), await r.text()).toBe(201)
  providerId = (await r.json()).id
})

test.afterAll(async ({ request }) => {
  if (providerId) await request.delete(`/api/providers/${providerId}`, { headers: auth() })
  await second?.stop()
})

async function chooseSecondHost(page: Page): Promise<void> {
  await signIn(page)
  await page.goto('/models')
  await expect(modelRow(page, 'llama3.2:latest')).toBeVisible()
  await page.locator('.host-picker .n-base-selection').click()
  await page.locator('.n-base-select-option', { hasText: 'Second box' }).click()
  await expect(page.locator('.host-picker')).toContainText('Second box')
  await expect(modelRow(page, 'llama3.2:latest')).toBeVisible()
}

test('a second host is chosen, remembered, and its models load, pin and unload there', async ({ page, request }) => {
  await chooseSecondHost(page)
  const row = modelRow(page, 'qwen3:0.6b')
  await expect(row).toContainText('On disk')

  await row.getByRole('button', { name: 'Load qwen3:0.6b' }).click()
  await expect(row).toContainText('Loaded')
  expect(await runningOn(request, providerId)).toEqual(['qwen3:0.6b'])
  // the default host was left alone (other specs may be chatting with its models meanwhile)
  expect(await runningOn(request)).not.toContain('qwen3:0.6b')

  // the choice survives a reload
  await page.reload()
  await expect(page.locator('.host-picker')).toContainText('Second box')
  await expect(modelRow(page, 'qwen3:0.6b')).toContainText('Loaded')

  await modelRow(page, 'qwen3:0.6b').getByRole('button', { name: 'Pin qwen3:0.6b in memory' }).click()
  await expect(modelRow(page, 'qwen3:0.6b')).toContainText('Pinned')
  await journeyShot(page, 'models-second-host-pinned')
  await modelRow(page, 'qwen3:0.6b').getByRole('button', { name: 'Unload qwen3:0.6b' }).click()
  await expect(modelRow(page, 'qwen3:0.6b')).toContainText('On disk')
  expect(await runningOn(request, providerId)).toEqual([])
})

test('a model is created on the chosen host from a Modelfile', async ({ page, request }) => {
  await chooseSecondHost(page)
  await page.getByRole('button', { name: 'Create model' }).click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'Create a model' })
  await expect(dialog).toBeVisible()
  await dialog.getByPlaceholder('my-assistant').fill('terse:v1')
  await dialog.getByText('Modelfile', { exact: true }).first().click()
  const editor = dialog.getByRole('textbox', { name: 'Modelfile' })
  // a mistake is refused by the server with the faulty line
  await editor.fill('FROM qwen3:0.6b\nSYSTEM You are terse.\nRUN rm -rf /\n')
  await dialog.getByRole('button', { name: 'Create model' }).click()
  await expect(page.locator('.n-message')).toContainText("line 3: unknown instruction 'RUN'")
  await editor.fill('FROM qwen3:0.6b\nSYSTEM """You are terse.\nOne line only."""\nPARAMETER temperature 0.2\n')
  await dialog.getByRole('button', { name: 'Create model' }).click()
  await expect(dialog).toBeHidden()
  await expect(modelRow(page, 'terse:v1')).toBeVisible()

  expect(await modelsOn(request, providerId)).toContain('terse:v1')
  expect(await modelsOn(request)).not.toContain('terse:v1')
  const shown = await request.get(`/api/ollama/models/terse:v1?provider=${providerId}`, { headers: auth() })
  expect((await shown.json()).system).toBe('You are terse.\nOne line only.')
})
