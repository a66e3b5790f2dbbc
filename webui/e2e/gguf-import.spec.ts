/** Models screen: import a GGUF file from this computer (streamed upload, progress, the model listed). */
import type { Locator, Page } from '@playwright/test'
import { apiToken, expect, journeyShot, signIn, test } from './fixtures/test'

const FILE = 'ZZ-Tiny-GGUF.Q4_K_M.gguf'
const NAME = 'zz-tiny-gguf:q4_k_m' // prefilled from the file name

/** A minimal GGUF v3 file: the magic, a header without tensors, two metadata keys, then padding. */
function syntheticGguf(padding: number): Buffer {
  const parts: Buffer[] = [Buffer.from('GGUF')]
  const u32 = (n: number) => {
    const b = Buffer.alloc(4)
    b.writeUInt32LE(n)
    return b
  }
  const u64 = (n: number) => {
    const b = Buffer.alloc(8)
    b.writeBigUInt64LE(BigInt(n))
    return b
  }
  const str = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)])
  parts.push(u32(3), u64(0), u64(2))
  parts.push(str('general.architecture'), u32(8), str('llama'))
  parts.push(str('general.file_type'), u32(4), u32(15)) // Q4_K_M
  parts.push(Buffer.alloc(padding))
  return Buffer.concat(parts)
}

function localModels(page: Page): Locator {
  return page.locator('section.card').filter({ has: page.getByRole('heading', { name: 'Local models' }) })
}

test('a GGUF file is uploaded with progress and becomes a model', async ({ page, request }) => {
  await signIn(page)
  await page.goto('/models')
  await expect(localModels(page).getByRole('cell', { name: 'llama3.2:latest', exact: true })).toBeVisible()

  await page.getByRole('button', { name: 'Import GGUF' }).click()
  const dialog = page.getByTestId('gguf-import')
  await expect(dialog).toBeVisible()
  const importButton = dialog.getByRole('button', { name: 'Import', exact: true })

  // a file that is not GGUF is refused before anything is sent
  await dialog.getByTestId('gguf-file').setInputFiles({
    name: 'notes.gguf',
    mimeType: 'application/octet-stream',
    buffer: Buffer.from('just some text, not a model'),
  })
  await expect(dialog).toContainText('This is not a GGUF file')
  await expect(importButton).toBeDisabled()

  // the real thing: name prefilled from the file name, size shown
  const data = syntheticGguf(2 * 1024 * 1024)
  await dialog
    .getByTestId('gguf-file')
    .setInputFiles({ name: FILE, mimeType: 'application/octet-stream', buffer: data })
  await expect(dialog.getByRole('textbox', { name: 'Model name' })).toHaveValue(NAME)
  await expect(dialog.getByTestId('gguf-size')).toHaveText(/2(\.\d)? MB/)
  await importButton.click()

  const progress = dialog.getByTestId('gguf-progress')
  await expect(progress).toHaveAttribute('data-phase', 'done', { timeout: 30_000 })
  await expect(progress).toContainText(`Model ${NAME} is ready.`)
  await expect(dialog.getByTestId('gguf-error')).toHaveCount(0)
  await journeyShot(page, 'gguf-import')

  await dialog.getByRole('button', { name: 'Close' }).click()
  const row = localModels(page).getByRole('row').filter({ hasText: NAME })
  await expect(row).toBeVisible()
  await expect(row).toContainText('Q4_K_M')
  await expect(row).toContainText('llama')

  // the same name again is caught in the form, before an upload
  await page.getByRole('button', { name: 'Import GGUF' }).click()
  await dialog
    .getByTestId('gguf-file')
    .setInputFiles({ name: FILE, mimeType: 'application/octet-stream', buffer: data })
  await expect(dialog).toContainText(`A model named ${NAME} already exists`)
  await expect(importButton).toBeDisabled()
  await dialog.getByRole('button', { name: 'Close' }).click()

  // leave the shared fake Ollama as the other specs expect it
  const token = await apiToken(request)
  const removed = await request.delete(`/api/ollama/models/${encodeURIComponent(NAME)}`, {
    headers: { Authorization: `Bearer ${token}` },
  })
  expect(removed.status()).toBe(204)
})
