/** The administration dialogs (add/edit forms in modal dialogs): users, providers, Ollama models. */
import type { Locator, Page } from '@playwright/test'
import { expect, signIn, test } from './fixtures/test'

const dialog = (page: Page, title: string) => page.getByRole('dialog').filter({ hasText: title })
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

test('users: add an account, edit it and open its password reset', async ({ page }) => {
  const email = `dialog-${Date.now()}@example.com`
  await page.goto('/users')
  await page.getByRole('button', { name: 'Add user' }).click()
  const add = dialog(page, 'Add a user')
  const create = add.getByRole('button', { name: 'Create' })
  await expect(create).toBeDisabled()
  await field(add, 'Email').fill(email)
  await field(add, 'Display name').fill('Dialog Person')
  await field(add, 'Initial password').fill('A-long-enough-passw0rd')
  await create.click()
  await expect(add).toBeHidden()
  const row = page.getByRole('row').filter({ hasText: email })
  await expect(row).toContainText('Dialog Person')

  await row.getByRole('button', { name: `Actions for ${email}` }).click()
  await page
    .locator('.n-dropdown-option')
    .filter({ hasText: /^Edit$/ })
    .click()
  const edit = dialog(page, `Edit ${email}`)
  await expect(field(edit, 'Display name')).toHaveValue('Dialog Person')
  await field(edit, 'Display name').fill('Renamed Person')
  await edit.getByRole('button', { name: 'Save' }).click()
  await expect(edit).toBeHidden()
  await expect(row).toContainText('Renamed Person')

  await row.getByRole('button', { name: `Actions for ${email}` }).click()
  await page.locator('.n-dropdown-option').filter({ hasText: 'Reset password' }).click()
  const reset = dialog(page, `Reset password for ${email}`)
  await expect(reset.getByRole('button', { name: 'Reset password' })).toBeDisabled()
  await reset.getByRole('button', { name: 'Cancel' }).click()
  await expect(reset).toBeHidden()
})

test('providers: add a (disabled) provider, then edit it with its values filled in', async ({ page }) => {
  const name = `Dialog provider ${Date.now()}`
  await page.goto('/providers')
  await page.getByRole('button', { name: 'Add provider' }).click()
  const add = dialog(page, 'Add a provider')
  await field(add, 'Name').fill(name)
  await field(add, 'Base URL').fill('ftp://example.invalid')
  await expect(add).toContainText('Only http:// and https:// addresses are allowed.')
  await expect(add.getByRole('button', { name: 'Save' })).toBeDisabled()
  await field(add, 'Base URL').fill('http://127.0.0.1:9/v1')
  await add.locator('label').filter({ hasText: 'Enabled' }).getByRole('switch').click()
  await add.getByRole('button', { name: 'Save' }).click()
  await expect(add).toBeHidden()
  const row = page.getByRole('row').filter({ hasText: name })
  await expect(row).toContainText('Disabled')

  await row.getByRole('button', { name: 'Edit' }).click()
  const edit = dialog(page, 'Edit provider')
  await expect(field(edit, 'Name')).toHaveValue(name)
  await expect(field(edit, 'Base URL')).toHaveValue('http://127.0.0.1:9/v1')
  await edit.getByRole('button', { name: 'Cancel' }).click()
  await expect(edit).toBeHidden()
})

test('models: the create dialog starts from the chosen model and checks the name', async ({ page }) => {
  await page.goto('/models')
  await page.getByRole('button', { name: 'Create model' }).click()
  const create = dialog(page, 'Create a model')
  await expect(create).toContainText('llama3.2')
  await field(create, 'Name').fill('bad name')
  await expect(create).toContainText('Use a name like llama3.2')
  await expect(create.getByRole('button', { name: 'Create model' })).toBeDisabled()
  await field(create, 'Name').fill('my-model')
  await expect(create.getByRole('button', { name: 'Create model' })).toBeEnabled()
  await create.getByRole('button', { name: 'Cancel' }).click()
  await expect(create).toBeHidden()
})
