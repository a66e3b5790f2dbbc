/** Presets: a user creates one in the UI, picks it in the chat picker and chats with its system prompt; duplicate,
 * delete, and "Save as preset" from the chat settings. Runs as a fresh user, so other specs never see these. */
import type { APIRequestContext, Locator, Page } from '@playwright/test'
import { apiToken, expect, journeyShot, lastAssistant, send, signIn, test, waitIdle } from './fixtures/test'

const PASSWORD = 'Preset-e2e-Passw0rd-7'

const dialog = (page: Page, title: string) => page.getByRole('dialog').filter({ hasText: title })
const field = (scope: Locator, label: string) =>
  scope
    .locator('.n-form-item')
    .filter({ has: scope.page().locator('.n-form-item-label', { hasText: new RegExp(`^\\s*${label}\\s*$`) }) })
    .locator('input, textarea')
    .first()

async function newUser(request: APIRequestContext): Promise<string> {
  const email = `preset-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`
  const token = await apiToken(request)
  const r = await request.post('/api/users', {
    data: { email, password: PASSWORD, role: 'user' },
    headers: { Authorization: `Bearer ${token}` },
  })
  expect(r.status(), await r.text()).toBe(201)
  return email
}

async function pickModel(page: Page, name: string) {
  await page.locator('.composer .model-select').click()
  const menu = page.locator('.n-base-select-menu')
  await expect(menu).toContainText('Presets') // the presets' own group
  await journeyShot(page, 'presets-picker')
  await menu
    .locator('.n-base-select-option')
    .filter({ hasText: new RegExp(`^${name}$`) })
    .click()
  await expect(page.locator('.composer .model-select')).toContainText(name)
}

test('create and use a preset', async ({ page, request }) => {
  await signIn(page, PASSWORD, await newUser(request))

  await page.getByRole('button', { name: 'Presets', exact: true }).first().click()
  await expect(page).toHaveURL(/\/presets$/)
  await expect(page.getByRole('heading', { name: 'Presets' })).toBeVisible()
  await page.getByRole('button', { name: 'New preset' }).click()
  const add = dialog(page, 'New preset')
  const save = add.getByRole('button', { name: 'Save' })
  await expect(save).toBeDisabled()
  await field(add, 'Name').fill('Pirate')
  await add.getByTestId('preset-base-model').click()
  await page
    .locator('.n-base-select-option')
    .filter({ hasText: /^llama3\.2/ })
    .first()
    .click()
  await field(add, 'System prompt').fill('Talk like a pirate.')
  await field(add, 'Max tokens').fill('200')
  await field(add, 'Other options').fill('{"seed": ')
  await expect(add).toContainText('Enter a JSON object')
  await expect(save).toBeDisabled()
  await field(add, 'Other options').fill('{"seed": 7}')
  await expect(add).not.toContainText('Enter a JSON object')
  await journeyShot(page, 'presets-form')
  await expect(add).not.toContainText('Shared with everyone') // no sharing for a plain user
  await save.click()
  await expect(add).toBeHidden()
  const row = page.getByRole('row').filter({ hasText: 'Pirate' })
  await expect(row).toContainText('Personal')
  await expect(row).toContainText('llama3.2')
  await journeyShot(page, 'presets-list')

  // duplicate, then delete the copy
  await row.getByRole('button', { name: 'Duplicate' }).click()
  const copy = page.getByRole('row').filter({ hasText: 'Pirate (copy)' })
  await expect(copy).toBeVisible()
  await copy.getByRole('button', { name: 'Delete' }).click()
  await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click()
  await expect(copy).toHaveCount(0)
  await expect(row).toBeVisible()

  // the chat picker shows it beside the models; a chat with it gets its system prompt
  await page.getByRole('button', { name: 'Chat', exact: true }).first().click()
  await page.getByRole('button', { name: 'New chat' }).first().click()
  await pickModel(page, 'Pirate')
  await send(page, '[[system]] ahoy')
  await waitIdle(page)
  await expect(lastAssistant(page).locator('.md')).toContainText('System prompt: Talk like a pirate.')

  // and a chat's settings can be saved as a new preset
  await page.getByRole('button', { name: 'System prompt and parameters' }).click()
  await page.getByRole('button', { name: 'Save as preset' }).click()
  const fromChat = dialog(page, 'New preset')
  await expect(field(fromChat, 'System prompt')).toHaveValue('Talk like a pirate.')
  await expect(fromChat.getByTestId('preset-base-model')).toContainText('llama3.2')
  await field(fromChat, 'Name').fill('Pirate two')
  await fromChat.getByRole('button', { name: 'Save' }).click()
  await expect(fromChat).toBeHidden()
  await page.getByRole('button', { name: 'New chat' }).first().click()
  await pickModel(page, 'Pirate two')
})
