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
