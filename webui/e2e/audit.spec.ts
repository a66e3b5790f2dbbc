/** System → Audit: an administrator's change shows up in the audit log, filtered, with its details and a
 * CSV export. */
import type { Locator } from '@playwright/test'
import { expect, journeyShot, signIn, test } from './fixtures/test'

/** The input of the form item labelled `label` (Naive UI's form labels are not tied to their inputs). */
const field = (scope: Locator, label: string) =>
  scope
    .locator('.n-form-item')
    .filter({ has: scope.page().locator('.n-form-item-label', { hasText: new RegExp(`^\\s*${label}\\s*$`) }) })
    .locator('input, textarea')
    .first()

test.beforeEach(async ({ page }) => {
  await signIn(page)
})

test('audit: create a user, then find the entry in System → Audit', async ({ page }) => {
  const email = `audited-${Date.now()}@example.com`
  await page.goto('/users')
  await page.getByRole('button', { name: 'Add user' }).click()
  const add = page.getByRole('dialog').filter({ hasText: 'Add a user' })
  await field(add, 'Email').fill(email)
  await field(add, 'Initial password').fill('A-long-enough-passw0rd')
  await add.getByRole('button', { name: 'Create' }).click()
  await expect(add).toBeHidden()

  await page.goto('/system')
  await page
    .locator('.n-tabs-tab')
    .filter({ hasText: /^Audit$/ })
    .click()
  const panel = page.getByTestId('audit-panel')
  await expect(panel).toBeVisible()
  await panel.getByRole('textbox', { name: 'Target', exact: true }).fill(email)
  const row = panel.getByRole('row').filter({ hasText: email })
  await expect(row).toHaveCount(1)
  await expect(row).toContainText('User created')
  await expect(row).toContainText('admin@example.com')
  await expect(row).toContainText('Success')

  // the details expand; never a password in them
  await row.locator('.n-data-table-expand-trigger').click()
  const details = panel.getByTestId('audit-details')
  await expect(details).toContainText('"role": "user"')
  await expect(details).not.toContainText('passw0rd')

  // another target hides it; back to this one, the entry (still expanded) is there again
  await panel.getByRole('textbox', { name: 'Target', exact: true }).fill('nobody-at-all@example.com')
  await expect(panel.getByRole('row').filter({ hasText: email })).toHaveCount(0)
  await panel.getByRole('textbox', { name: 'Target', exact: true }).fill(email)
  await expect(panel.getByRole('row').filter({ hasText: email })).toHaveCount(1)
  await expect(details).toContainText('"role": "user"')
  await journeyShot(page, 'audit')

  const download = page.waitForEvent('download')
  await panel.getByTestId('audit-csv').click()
  const file = await download
  expect(file.suggestedFilename()).toBe('modeltrain-audit.csv')
})
