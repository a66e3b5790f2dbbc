/**
 * First start: sign-in, the forced change of the initial administrator password (docs/security.md, B1),
 * tokens kept out of web storage (B5), sign-out and sign-in again. Runs before every other spec.
 */
import { ADMIN_EMAIL, INITIAL_ADMIN_PASSWORD, NEW_ADMIN_PASSWORD } from './fixtures/env'
import { expect, signIn, test } from './fixtures/test'

test.describe.configure({ mode: 'serial' })

test('a wrong password is refused with a message', async ({ page }) => {
  await page.goto('/chat')
  await page.waitForURL(/\/login\?redirect=/)
  await page.locator('#login-email').fill(ADMIN_EMAIL)
  await page.locator('#login-password').fill('not-the-password')
  await page.locator('#login-password').press('Enter')
  await expect(page.getByRole('alert')).toContainText(/incorrect|invalid|wrong/i)
  await expect(page).toHaveURL(/\/login/)
})

test('the initial password must be changed before anything else', async ({ page }) => {
  await page.goto('/login')
  await page.locator('#login-email').fill(ADMIN_EMAIL)
  await page.locator('#login-password').fill(INITIAL_ADMIN_PASSWORD)
  const login = page.waitForResponse((r) => r.url().endsWith('/api/auth/login') && r.request().method() === 'POST')
  await page.locator('#login-password').press('Enter')
  const token = (await (await login).json()).access_token as string
  expect(token).toBeTruthy()

  await page.waitForURL(/\/change-password/)
  await expect(page.locator('#cp-current')).toBeVisible()
  // B5: the access token lives in memory only
  const stored = await page.evaluate(() =>
    JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage } }),
  )
  expect(stored).not.toContain(token)
  expect(stored).not.toMatch(/eyJ[\w-]+\.[\w-]+/)

  // every other screen sends the user back here
  await page.goto('/models')
  await page.waitForURL(/\/change-password/)
  await expect(page.locator('#cp-current')).toBeVisible()

  await page.locator('#cp-current').fill(INITIAL_ADMIN_PASSWORD)
  await page.locator('#cp-new').fill(NEW_ADMIN_PASSWORD)
  await page.locator('#cp-confirm').fill(NEW_ADMIN_PASSWORD)
  await page.locator('#cp-confirm').press('Enter')
  await page.waitForURL(/\/(models|chat)/)
  await expect(page.getByRole('navigation').first()).toBeVisible()

  // signing out and back in with the new password lands in the app directly
  await page.goto('/settings')
  await page.getByRole('button', { name: 'Account' }).click()
  await page.getByText('Sign out', { exact: true }).click()
  await page.waitForURL(/\/login/)
  await signIn(page, NEW_ADMIN_PASSWORD)
})

test('the initial password no longer works', async ({ page }) => {
  await page.goto('/login')
  await page.locator('#login-email').fill(ADMIN_EMAIL)
  await page.locator('#login-password').fill(INITIAL_ADMIN_PASSWORD)
  await page.locator('#login-password').press('Enter')
  await expect(page.getByRole('alert')).toBeVisible()
  await expect(page).toHaveURL(/\/login/)
})
