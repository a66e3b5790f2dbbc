/** Models screen with the fake Ollama: pull with live progress (and re-attach after a reload), cancel. */
import type { Locator, Page } from '@playwright/test'
import { apiToken, expect, signIn, test } from './fixtures/test'

/** The "Local models" table (llama3.2 may also be listed under "Running"). */
function localModels(page: Page): Locator {
  return page.locator('section.card').filter({ has: page.getByRole('heading', { name: 'Local models' }) })
}

function pullItem(page: Page, name: string): Locator {
  return page.locator('.pulls .pull').filter({ has: page.locator('.pull-head strong', { hasText: name }) })
}

/** The percentage shown under a pull's progress bar. */
async function percent(item: Locator): Promise<number> {
  const text = (await item.locator('.pull-meta span').first().textContent()) ?? ''
  const n = Number.parseFloat(text.replace(/[^\d.]/g, ''))
  return Number.isFinite(n) ? n : -1
}

async function openPullDialog(page: Page): Promise<Locator> {
  await page.getByRole('button', { name: 'Pull model' }).click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'Pull models' })
  await expect(dialog).toBeVisible()
  return dialog
}

async function startPull(page: Page, name: string): Promise<Locator> {
  const dialog = await openPullDialog(page)
  await dialog.locator('.pull-form input').fill(name)
  await dialog.locator('.pull-form input').press('Enter')
  return pullItem(page, name)
}

test.beforeEach(async ({ page }) => {
  await signIn(page)
  await page.goto('/models')
  await expect(localModels(page).getByRole('cell', { name: 'llama3.2:latest', exact: true })).toBeVisible()
})

test('a pull shows live progress, survives a reload and installs the model', async ({ page }) => {
  test.setTimeout(60_000)
  const item = await startPull(page, 'tinyllama:latest')
  await expect(item).toBeVisible()
  // progress moves through intermediate values (the fake reports a tenth of the layer per tick)
  await expect.poll(() => percent(item), { timeout: 20_000 }).toBeGreaterThan(0)
  const early = await percent(item)
  expect(early).toBeLessThan(100)
  await expect(item.locator('.pull-meta')).toContainText(/MB|GB|MiB|GiB/)

  // reload while it runs: the page re-attaches to the server's pull and follows it to the end
  await page.reload()
  await expect(localModels(page).getByRole('cell', { name: 'llama3.2:latest', exact: true })).toBeVisible()
  await openPullDialog(page)
  const again = pullItem(page, 'tinyllama:latest')
  await expect(again).toBeVisible()
  await expect(again.locator('.pull-head')).toContainText('Done', { timeout: 30_000 })
  expect(await percent(again)).toBe(100)

  await page.keyboard.press('Escape')
  await expect(localModels(page).getByRole('cell', { name: 'tinyllama:latest', exact: true })).toBeVisible()
})

test('a running pull can be cancelled', async ({ page, request }) => {
  const item = await startPull(page, 'smollm2:135m')
  await expect.poll(() => percent(item), { timeout: 20_000 }).toBeGreaterThan(0)
  await item.getByRole('button', { name: 'Cancel' }).click()
  await expect(item.locator('.pull-head')).toContainText('Cancelled')
  await expect(item.getByRole('button', { name: 'Cancel' })).toHaveCount(0)

  // the server agrees, and the model was not installed
  const token = await apiToken(request)
  const pulls = await (await request.get('/api/ollama/pulls', { headers: { Authorization: `Bearer ${token}` } })).json()
  const entry = (pulls.items as Array<{ name: string; state: string }>).find((p) => p.name.startsWith('smollm2:135m'))
  expect(entry?.state).toBe('cancelled')
  await page.keyboard.press('Escape')
  await page.reload()
  await expect(localModels(page).getByRole('cell', { name: 'llama3.2:latest', exact: true })).toBeVisible()
  await expect(localModels(page).getByRole('cell', { name: 'smollm2:135m', exact: true })).toHaveCount(0)
})
