/** Settings → API keys: create a key (shown once, copied), see it listed, revoke it. */
import { expect, journeyShot, signIn, test } from './fixtures/test'

test.beforeEach(async ({ page, context }) => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write'])
  await signIn(page)
})

test('api keys: create, copy, list and revoke a key', async ({ page }) => {
  const name = `e2e-key-${Date.now()}`
  await page.goto('/settings')
  const section = page.getByTestId('api-keys')
  await section.getByRole('button', { name: 'Create key' }).click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'Create an API key' })
  await dialog.getByPlaceholder('e.g. laptop scripts').fill(name)
  await dialog.getByRole('button', { name: 'Create key' }).click()

  // shown once, with ready examples for this server's /v1
  const shown = dialog.getByTestId('api-key-value').locator('input')
  await expect(shown).toHaveValue(/^mt-[A-Za-z0-9_-]{43,}$/)
  const key = await shown.inputValue()
  await expect(dialog.getByTestId('api-key-curl').first()).toContainText(`Bearer ${key}`)
  await expect(dialog.getByTestId('api-key-curl').first()).toContainText(`${new URL(page.url()).origin}/v1`)
  await expect(dialog.getByTestId('api-key-python').first()).toContainText('from openai import OpenAI')
  await dialog.getByTestId('api-key-copy').click()
  await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(key)

  // a key is for /v1 only: the UI's /api refuses it
  const r = await page.request.get('/api/users/me', { headers: { Authorization: `Bearer ${key}` } })
  expect(r.status()).toBe(401)
  expect((await r.json()).code).toBe('api_key_not_accepted')

  await dialog.getByRole('button', { name: 'Done' }).click()
  await expect(dialog).toBeHidden()
  const row = section.getByRole('row').filter({ hasText: name })
  await expect(row).toContainText(key.slice(0, 11))
  await expect(row).not.toContainText(key)
  await section.scrollIntoViewIfNeeded()
  await journeyShot(page, 'api-keys')

  await row.getByRole('button', { name: `Revoke ${name}` }).click()
  await page.locator('.n-popconfirm').getByRole('button', { name: 'Revoke', exact: true }).click()
  await expect(section.getByRole('row').filter({ hasText: name })).toHaveCount(0)
})

test('the /v1 journey: create a key, copy it, try it, see the request on the Usage page', async ({ page }) => {
  const name = `e2e-journey-${Date.now()}`
  await page.goto('/settings')
  const section = page.getByTestId('api-keys')
  await section.getByRole('button', { name: 'Create key' }).click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'Create an API key' })
  await dialog.getByPlaceholder('e.g. laptop scripts').fill(name)
  await dialog.getByRole('button', { name: 'Create key' }).click()
  const key = await dialog.getByTestId('api-key-value').locator('input').inputValue()
  expect(key).toMatch(/^mt-/)
  await dialog.getByTestId('api-key-copy').click()
  await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(key)

  // "Try it" opens with the key just created; /v1 is called with that key and nothing else
  const v1Auth: Array<string | undefined> = []
  page.on('request', (r) => {
    if (new URL(r.url()).pathname.startsWith('/v1/')) v1Auth.push(r.headers()['authorization'])
  })
  await dialog.getByTestId('api-key-try').click()
  const tryIt = page.getByTestId('api-try-it')
  await expect(tryIt.getByTestId('try-key').locator('input')).toHaveValue(key)
  await tryIt.getByTestId('try-model').click()
  await page.locator('.n-base-select-option', { hasText: 'llama3.2:latest' }).first().click()
  await tryIt.getByTestId('try-message').locator('textarea').fill('hello through /v1')
  await tryIt.getByTestId('try-send').click()
  await expect(tryIt.getByTestId('try-usage')).toBeVisible({ timeout: 30_000 })
  await expect(tryIt.getByTestId('try-reply')).not.toBeEmpty()
  await expect(tryIt.getByTestId('try-total-tokens')).toHaveText(/^[1-9][\d,]*$/)
  await expect(tryIt.getByTestId('try-ttft')).toHaveText(/\d+ ms$/)
  await expect(tryIt.getByTestId('try-curl')).toContainText(`${new URL(page.url()).origin}/v1/chat/completions`)
  await expect(tryIt.getByTestId('try-curl')).toContainText('"include_usage":true')
  expect(v1Auth.length).toBeGreaterThanOrEqual(2)
  expect(new Set(v1Auth)).toEqual(new Set([`Bearer ${key}`]))
  await journeyShot(page, 'api-try-it')

  // a wrong key: OpenAI's error shape, message and code shown
  await tryIt.getByTestId('try-key').locator('input').fill('mt-not-a-real-key-at-all')
  await tryIt.getByTestId('try-load').click()
  await expect(tryIt.getByTestId('try-error')).toContainText('invalid_api_key')
  await page.keyboard.press('Escape')
  await expect(tryIt).toBeHidden()
  await dialog.getByRole('button', { name: 'Done' }).click()

  // the request shows on the Usage page under the key's name, filtered by that key
  await page.goto('/usage')
  await expect(page.getByRole('heading', { name: 'Usage', level: 1 })).toBeVisible()
  await page.getByTestId('usage-filter-key').click()
  await page.locator('.n-base-select-option', { hasText: name }).click()
  await expect(page).toHaveURL(/key_id=/)
  await expect(page.getByTestId('usage-csv')).toHaveAttribute('data-url', /key_id=/)
  const byKey = page.getByTestId('usage-by-key')
  // the record is written in a batch about a second later: reload until it is counted
  await expect
    .poll(
      async () => {
        await page.reload()
        return (await byKey.textContent({ timeout: 5_000 }).catch(() => '')) ?? ''
      },
      { timeout: 20_000 },
    )
    .toContain(name)
  const row = byKey.getByRole('row').filter({ hasText: name })
  await expect(row.getByRole('cell').nth(1)).toHaveText('1')
  await expect(byKey).not.toContainText('Chat (no key)')
  await page.getByTestId('usage-clear-filters').click()
  await expect(page).not.toHaveURL(/key_id=/)
})

test('the keys table reads at phone width: details in an expandable row', async ({ page }) => {
  const name = `e2e-phone-${Date.now()}`
  await page.goto('/settings')
  const section = page.getByTestId('api-keys')
  await section.getByRole('button', { name: 'Create key' }).click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'Create an API key' })
  await dialog.getByPlaceholder('e.g. laptop scripts').fill(name)
  await dialog.getByRole('button', { name: 'Create key' }).click()
  await dialog.getByRole('button', { name: 'Done' }).click()
  await page.setViewportSize({ width: 390, height: 844 })
  const row = section.getByRole('row').filter({ hasText: name })
  await expect(row).toBeVisible()
  // no column of dates at this width: they are in the expanded row
  await expect(section.getByRole('columnheader', { name: 'Last used' })).toHaveCount(0)
  await row.locator('.n-data-table-expand-trigger').click()
  const details = section.getByTestId('api-key-details')
  await expect(details).toContainText('Last used')
  await expect(details).toContainText('All models')
  const overflow = await section.evaluate((el) => el.scrollWidth - el.clientWidth)
  expect(overflow).toBeLessThanOrEqual(1)
  await row.getByRole('button', { name: `Revoke ${name}` }).click()
  await page.locator('.n-popconfirm').getByRole('button', { name: 'Revoke', exact: true }).click()
  await expect(section.getByRole('row').filter({ hasText: name })).toHaveCount(0)
})
