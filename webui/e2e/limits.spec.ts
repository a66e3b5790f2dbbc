/** Limits: an administrator gives a fresh user 1 request per minute in Users; that user's second chat is
 * refused with the limit named in their language, and Settings shows the budget spent (1 / 1). */
import type { APIRequestContext, Page } from '@playwright/test'
import { apiToken, expect, journeyShot, lastAssistant, newChat, send, signIn, test, waitIdle } from './fixtures/test'

const PASSWORD = 'Limits-e2e-Passw0rd-9'

async function newUser(request: APIRequestContext): Promise<string> {
  const email = `limits-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`
  const token = await apiToken(request)
  const r = await request.post('/api/users', {
    data: { email, password: PASSWORD, role: 'user' },
    headers: { Authorization: `Bearer ${token}` },
  })
  expect(r.status(), await r.text()).toBe(201)
  return email
}

/** The users list is ordered by creation: the fresh user may be on a later page. */
async function userRow(page: Page, email: string) {
  const row = page.getByRole('row').filter({ hasText: email })
  for (let i = 0; i < 20 && !(await row.isVisible()); i++) {
    await page.locator('.n-pagination .n-pagination-item--button').last().click()
    await expect(page.locator('.n-data-table-tbody .n-data-table-tr').first()).toBeVisible()
  }
  await expect(row).toBeVisible()
  return row
}

/** The requests-per-minute window is the UTC minute: start early enough in one that both chats and the
 * Settings check fall inside it. */
async function earlyInMinute(page: Page) {
  const left = 60 - new Date().getUTCSeconds()
  if (left < 40) await page.waitForTimeout(left * 1000 + 500)
}

test('a user over their request limit is told which limit and when it renews', async ({ page, request }) => {
  test.setTimeout(120_000)
  const email = await newUser(request)

  // the administrator sets the user's requests per minute to 1 in Users
  await signIn(page)
  await page.goto('/users')
  await expect(page.getByRole('heading', { name: 'Users', level: 1 })).toBeVisible()
  const row = await userRow(page, email)
  await row.getByRole('button', { name: `Actions for ${email}` }).click()
  await page.locator('.n-dropdown-option').filter({ hasText: 'Limits' }).click()
  const modal = page.getByRole('dialog').filter({ hasText: `Limits of ${email}` })
  await expect(modal.getByTestId('limit-requests_per_minute')).toBeVisible()
  await expect(modal.getByTestId('limit-requests_per_minute').getByTestId('limit-figure')).toHaveText('Unlimited')
  await modal.locator('#limit-input-user-requests_per_minute').fill('1')
  await modal.locator('#limit-input-user-requests_per_minute').press('Tab')
  await modal.getByTestId('limits-save').click()
  await expect(page.getByText('Limits saved')).toBeVisible()
  await expect(modal.getByTestId('limit-requests_per_minute').getByTestId('limit-figure')).toHaveText('0 / 1')
  await expect(modal.getByTestId('limit-requests_per_minute')).toContainText('set for this user')
  await journeyShot(page, 'limits-user')
  await page.keyboard.press('Escape')

  // the user: the first chat is answered, the second is refused with the limit named
  await page.context().clearCookies()
  await earlyInMinute(page)
  await signIn(page, PASSWORD, email)
  await newChat(page)
  await send(page, 'first request of the minute')
  await waitIdle(page)
  await expect(lastAssistant(page)).not.toContainText('limit')
  await send(page, 'second request of the minute')
  await waitIdle(page)
  const refused = lastAssistant(page).locator('.msg-error')
  await expect(refused).toContainText('You have reached your limit of 1 requests per minute. It renews in')
  await expect(refused).not.toContainText('is reached') // the server's English message is not shown as such

  // Settings: the budget bar says 1 of 1 used
  await page.goto('/settings')
  const budget = page.getByTestId('my-limits')
  await expect(budget.getByTestId('limit-requests_per_minute').getByTestId('limit-figure')).toHaveText('1 / 1')
  await expect(budget.getByTestId('limit-requests_per_minute')).toContainText('0 left')
  await expect(budget.getByTestId('limit-requests_per_minute')).toContainText('set for you')
  await expect(budget.getByTestId('limit-tokens_per_day').getByTestId('limit-figure')).toHaveText('Unlimited')
  await page.locator('#limits').evaluate((el) => el.scrollIntoView({ block: 'start' }))
  await journeyShot(page, 'limits-budget')
})

test("a key's owner sets the key's own limit beside the user's", async ({ page, request }) => {
  const token = await apiToken(request)
  const name = `limits-key-${Date.now()}`
  const r = await request.post('/api/keys', { data: { name }, headers: { Authorization: `Bearer ${token}` } })
  expect(r.status(), await r.text()).toBe(201)

  await signIn(page)
  await page.goto('/settings')
  const row = page.getByRole('row').filter({ hasText: name })
  await row.getByRole('button', { name: `Limits ${name}` }).click()
  const modal = page.getByRole('dialog').filter({ hasText: `Limits of key ${name}` })
  await expect(modal.getByTestId('limit-field-requests_per_minute')).toContainText('User:')
  await expect(modal.getByText('A key never gets more than its user')).toBeVisible()
  await modal.locator('#limit-input-key-requests_per_minute').fill('5')
  await modal.locator('#limit-input-key-requests_per_minute').press('Tab')
  await modal.getByTestId('limits-save').click()
  await expect(page.getByText('Limits saved')).toBeVisible()
  const bar = modal.getByTestId('limit-requests_per_minute')
  await expect(bar.getByTestId('limit-figure')).toHaveText('0 / 5')
  await expect(bar).toContainText('set on this key')
})
