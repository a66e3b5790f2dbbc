/**
 * Attachments in the chat against the real server and the fake Ollama, which has a vision model
 * (llava:7b) besides llama3.2 (no vision): an image shown in the message and read by the model, the refusal
 * for a model without vision, a PDF as a document chip, a file of the wrong kind refused in the composer.
 */
import type { Page } from '@playwright/test'
import { expect, journeyShot, lastAssistant, newChat, send, signIn, test, waitIdle } from './fixtures/test'
import { PNG, pdf } from './fixtures/files'

test.beforeEach(async ({ page }) => {
  await signIn(page)
  await newChat(page)
})

const attach = (page: Page, files: Array<{ name: string; mimeType: string; buffer: Buffer }>) =>
  page.locator('[data-test="attach-input"]').setInputFiles(files)

async function pickModel(page: Page, name: string) {
  await page.locator('.composer .model-select').click()
  await page.locator('.n-base-select-option', { hasText: name }).first().click()
  await expect(page.locator('.composer .model-select')).toContainText(name)
}

test('an image goes to a vision model and shows in the message, larger on click', async ({ page }) => {
  await pickModel(page, 'llava:7b')
  await attach(page, [{ name: 'diagram.png', mimeType: 'image/png', buffer: PNG }])
  const chip = page.locator('.composer .chip', { hasText: 'diagram.png' })
  await expect(chip).toHaveAttribute('data-state', 'ready')
  await send(page, '[[images]] What is in this picture?')
  await waitIdle(page)
  await expect(lastAssistant(page).locator('.md')).toContainText('Images received: 1')
  await expect(page.locator('.composer .chip')).toHaveCount(0)

  const thumb = page.getByRole('button', { name: 'Open diagram.png larger' })
  await expect(thumb.locator('img')).toHaveJSProperty('complete', true)
  await expect.poll(() => thumb.locator('img').evaluate((i: HTMLImageElement) => i.naturalWidth)).toBe(48)
  await journeyShot(page, 'image-chat')

  // kept after a reload: the thumbnail now comes from the server
  await page.reload()
  const again = page.getByRole('button', { name: 'Open diagram.png larger' })
  await expect.poll(() => again.locator('img').evaluate((i: HTMLImageElement) => i.naturalWidth)).toBeGreaterThan(0)
  await again.click()
  const dialog = page.locator('.n-modal', { hasText: 'diagram.png' })
  await expect(dialog.locator('img')).toBeVisible()
  await page.keyboard.press('Escape')
})

test('a model without vision: the composer says so before sending', async ({ page }) => {
  await attach(page, [{ name: 'photo.png', mimeType: 'image/png', buffer: PNG }])
  await expect(page.locator('.composer')).toContainText('This model cannot see images')
  await page.locator('#composer-input').fill('What is this?')
  await expect(page.getByRole('button', { name: 'Send' })).toBeDisabled()
  await page.getByRole('button', { name: 'Remove photo.png' }).click()
  await expect(page.locator('.composer')).not.toContainText('This model cannot see images')
  await expect(page.getByRole('button', { name: 'Send' })).toBeEnabled()
})

test('a PDF becomes a document chip saying how it is used', async ({ page }) => {
  const body = pdf(['Quarterly report', 'Revenue grew by twelve percent in the third quarter.'])
  await attach(page, [{ name: 'report.pdf', mimeType: 'application/pdf', buffer: body }])
  await expect(page.locator('.composer .chip', { hasText: 'report.pdf' })).toHaveAttribute('data-state', 'ready')
  await send(page, 'Summarise the report.')
  await waitIdle(page)
  const user = page.locator('.msg-user').last()
  const chip = user.locator('.doc', { hasText: 'report.pdf' })
  await expect(chip).toBeVisible()
  await expect(chip).toContainText(/Whole document in the context · \d+ tokens?|Long document/)
  await expect(lastAssistant(page).locator('.md')).not.toBeEmpty()
  // the same after a reload, from the saved message
  await page.reload()
  await expect(page.locator('.msg-user').last().locator('.doc', { hasText: 'report.pdf' })).toContainText(
    /Whole document|Long document/,
  )
})

test('a file of a kind the chat cannot use is refused in the composer with the reason', async ({ page }) => {
  await attach(page, [{ name: 'setup.exe', mimeType: 'application/x-msdownload', buffer: Buffer.from('MZ') }])
  const chip = page.locator('.composer .chip', { hasText: 'setup.exe' })
  await expect(chip).toHaveAttribute('data-state', 'error')
  await expect(chip).toContainText('This kind of file cannot be attached')
  // the server refuses what the name does not say: a text file that claims to be a PNG
  await attach(page, [{ name: 'fake.png', mimeType: 'image/png', buffer: Buffer.from('not an image at all') }])
  const fake = page.locator('.composer .chip', { hasText: 'fake.png' })
  await expect(fake).toHaveAttribute('data-state', 'error')
  await expect(fake.locator('[role="alert"]')).not.toBeEmpty()
})
