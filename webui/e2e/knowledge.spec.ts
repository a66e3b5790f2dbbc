/**
 * Knowledge collections against the real server and the fake Ollama (nomic-embed-text computes
 * deterministic embeddings): create a collection, index a document with progress to Ready, ask a chat that
 * uses it, see the numbered citation and open the passage it cites.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { apiToken, expect, journeyShot, lastAssistant, newChat, send, signIn, test, waitIdle } from './fixtures/test'

const EMBED = 'nomic-embed-text:latest'

const HANDBOOK = [
  '# Kitchen handbook',
  '',
  'Water boils at 100 degrees Celsius at sea level; at altitude it boils at a lower temperature.',
  '',
  'Bread dough rises best between 24 and 27 degrees Celsius, away from draughts.',
].join('\n')

test('make a collection, index a file, ask and open the cited passage', async ({ page }) => {
  const name = `Handbook ${Date.now()}`
  await signIn(page)
  const nav = page.getByRole('navigation', { name: 'Main navigation' })
  await nav.getByRole('button', { name: 'Knowledge' }).click()
  await expect(page).toHaveURL(/\/knowledge/)
  await expect(page.getByRole('heading', { name: 'Knowledge', level: 1 })).toBeVisible()
  // The dialog offers the embedding models (GET /api/models?capability=embedding): the fake's nomic-embed-text.
  await page.getByRole('button', { name: 'New collection' }).first().click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'New collection' })
  await dialog.getByLabel('Name').fill(name)
  await dialog.getByLabel('Description').fill('How the kitchen works')
  await dialog.getByLabel('Embedding model').click()
  // (other specs may have added Ollama hosts serving the same model: the default provider's, by name)
  await page
    .locator('.n-base-select-option')
    .filter({ hasText: /^nomic-embed-text:latest( · Ollama \(local\))?$/ })
    .click()
  await dialog.getByRole('button', { name: 'Create' }).click()
  await expect(dialog).toBeHidden()
  await expect(page).toHaveURL(/\/knowledge\/[0-9a-f-]{36}$/)
  await expect(page.getByRole('heading', { name, level: 2 })).toBeVisible()
  await expect(page.locator('.panel .meta')).toContainText('nomic-embed-text:latest')

  await page
    .locator('[data-test="knowledge-input"]')
    .setInputFiles([{ name: 'handbook.md', mimeType: 'text/markdown', buffer: Buffer.from(HANDBOOK) }])
  const row = page.locator('table.docs tr', { hasText: 'handbook.md' })
  await expect(row).toBeVisible()
  await expect(row).toHaveAttribute('data-status', 'ready', { timeout: 30_000 })
  await expect(row).toContainText('Ready')
  await expect(page.locator('.panel .meta')).toContainText('1 document')
  await journeyShot(page, 'knowledge-collection')

  // a chat that answers from the collection
  await nav.getByRole('button', { name: 'Chat' }).click()
  await newChat(page)
  await page.locator('[data-test="knowledge-picker"]').click()
  await page.getByRole('checkbox', { name }).check()
  await page.keyboard.press('Escape')
  await send(page, '[[cite]] At what temperature does water boil at sea level?')
  await waitIdle(page)
  const answer = lastAssistant(page)
  const cite = answer.locator('a.md-cite', { hasText: '[1]' })
  await expect(cite).toBeVisible()
  await expect(answer.getByRole('button', { name: /Source 1: handbook\.md/ })).toBeVisible()
  // wide enough that the answer stays in view beside the passage (the screenshot shows both)
  await page.setViewportSize({ width: 1680, height: 860 })
  await cite.click()
  const drawer = page.locator('.n-drawer', { hasText: 'Source 1' })
  await expect(drawer).toContainText('handbook.md')
  await expect(drawer).toContainText('Water boils at 100 degrees Celsius')
  await journeyShot(page, 'cited-answer')

  // the conversation keeps its collection and its cited answer
  await page.keyboard.press('Escape')
  await page.reload()
  await expect(lastAssistant(page).locator('a.md-cite')).toHaveCount(1)
  await expect(page.locator('[data-test="knowledge-picker"]')).toHaveAccessibleName(/1 chosen/)
})

test('a whole folder is added: its documents indexed, hidden files and other kinds skipped', async ({
  page,
  request,
}) => {
  const token = await apiToken(request)
  const h = { Authorization: `Bearer ${token}` }
  const models = await (await request.get('/api/models?capability=embedding', { headers: h })).json()
  const embedders = (models.items as Array<{ id: string; model: string; provider: { name: string } }>).filter(
    (m) => m.model === EMBED,
  )
  // the default provider's (other specs may add hosts serving the same model, and remove them again)
  const embedder = embedders.find((m) => m.provider.name === 'Ollama (local)') ?? embedders[0]
  const created = await request.post('/api/knowledge', {
    headers: h,
    data: { name: `Folder ${Date.now()}`, embedding_model: embedder.id },
  })
  expect(created.status(), await created.text()).toBe(201)
  const { id } = await created.json()
  const folder = mkdtempSync(join(tmpdir(), 'mt-folder-'))
  mkdirSync(join(folder, 'notes', 'sub'), { recursive: true })
  mkdirSync(join(folder, 'notes', '.git'))
  writeFileSync(join(folder, 'notes', 'garden.md'), '# Garden\n\nTomatoes want six hours of sun.\n')
  writeFileSync(join(folder, 'notes', 'sub', 'tools.txt'), 'A spade, a rake and a hose.\n')
  writeFileSync(join(folder, 'notes', 'photo.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
  writeFileSync(join(folder, 'notes', '.git', 'HEAD'), 'ref: refs/heads/main\n')

  await signIn(page)
  await page.goto(`/knowledge/${id}`)
  await page.locator('[data-test="knowledge-folder-input"]').setInputFiles(join(folder, 'notes'))
  await expect(page.getByText('2 files skipped (not documents)')).toBeVisible()
  for (const name of ['garden.md', 'tools.txt']) {
    await expect(page.locator('table.docs tr', { hasText: name })).toHaveAttribute('data-status', 'ready', {
      timeout: 30_000,
    })
  }
  await expect(page.locator('table.docs tr', { hasText: 'photo.png' })).toHaveCount(0)
  await expect(page.locator('.panel .meta')).toContainText('2 documents')
  rmSync(folder, { recursive: true, force: true })
})
