/** Usage accounting: a chat reply is counted and shows on the Usage page (chart, tables, CSV). */
import { apiToken, expect, journeyShot, newChat, send, signIn, test, waitIdle } from './fixtures/test'

async function requestsSoFar(request: import('@playwright/test').APIRequestContext, token: string) {
  const r = await request.get('/api/usage', { headers: { Authorization: `Bearer ${token}` } })
  expect(r.status(), await r.text()).toBe(200)
  const body = (await r.json()) as { items: Array<{ requests: number }> }
  return body.items.reduce((sum, i) => sum + i.requests, 0)
}

test('a chat reply is counted on the Usage page', async ({ page, request }) => {
  const token = await apiToken(request)
  const before = await requestsSoFar(request, token)
  await signIn(page)
  await newChat(page)
  await send(page, 'count me on the usage page')
  await waitIdle(page)
  // the record is written in a batch about a second later
  await expect.poll(() => requestsSoFar(request, token)).toBeGreaterThan(before)

  await page
    .getByRole('navigation', { name: 'Main navigation' })
    .getByRole('button', { name: 'Usage', exact: true })
    .click()
  await expect(page).toHaveURL(/\/usage$/)
  await expect(page.getByRole('heading', { name: 'Usage', level: 1 })).toBeVisible()
  await expect(page.getByTestId('usage-chart').locator('canvas')).toBeVisible()
  const byModel = page.getByTestId('usage-by-model')
  await expect(byModel).toContainText('llama3.2')
  await expect(page.getByTestId('usage-by-key')).toContainText('Chat (no key)')
  // The admin's name as it is now (other specs rename the account).
  const me = await request.get('/api/users/me', { headers: { Authorization: `Bearer ${token}` } })
  const { display_name: name, email } = (await me.json()) as { display_name: string | null; email: string }
  await expect(page.getByTestId('usage-by-user')).toContainText(name || email)

  const download = page.waitForEvent('download')
  await page.getByTestId('usage-csv').click()
  expect((await download).suggestedFilename()).toMatch(/\.csv$/)
  await journeyShot(page, 'usage')
})
