/**
 * An OpenAI-compatible provider added in the UI (with its API key) offers its own models in the chat picker
 * (listed from its GET /v1/models, narrowed by the allow-list), and a chat with one of them streams.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import type { Locator, Page } from '@playwright/test'
import { expect, journeyShot, send, signIn, test, waitIdle } from './fixtures/test'
import { python, REPO_DIR } from './fixtures/processes.mjs'

const API_KEY = 'sk-e2e-remote-0123456789abcdef'
const REPLY = 'Greetings from the remote service.'

let fake: ChildProcess | undefined
let fakeUrl = ''

test.beforeAll(async () => {
  const script = resolve(REPO_DIR, 'webui', 'e2e', 'fixtures', 'fake_openai_upstream.py')
  const args = [script, '--api-key', API_KEY, '--models', 'remote-mini,remote-large,text-embedding-x', '--reply', REPLY]
  const child = spawn(python(), args, { cwd: REPO_DIR, stdio: ['ignore', 'pipe', 'inherit'] })
  fake = child
  const lines = createInterface({ input: child.stdout! })
  fakeUrl = await new Promise<string>((done, fail) => {
    const timer = setTimeout(() => fail(new Error('the fake OpenAI server did not start')), 30_000)
    child.once('exit', (code) => fail(new Error(`the fake OpenAI server exited (${code})`)))
    lines.on('line', (line) => {
      const m = line.match(/^\{"url": "(http:\/\/[^"]+)"\}$/)
      if (m) {
        clearTimeout(timer)
        done(m[1])
      }
    })
  })
})

test.afterAll(async () => {
  if (fake && fake.exitCode === null && fake.signalCode === null) {
    const exited = once(fake, 'exit')
    fake.kill('SIGTERM')
    await exited
  }
})

const dialog = (page: Page, title: string) => page.getByRole('dialog').filter({ hasText: title })
const field = (scope: Locator, label: string) =>
  scope
    .locator('.n-form-item')
    .filter({ has: scope.page().locator('.n-form-item-label', { hasText: new RegExp(`^\\s*${label}\\s*$`) }) })
    .locator('input, textarea')
    .first()

test('add an OpenAI-compatible provider with a key, then chat with one of its models', async ({ page }) => {
  const name = `Remote ${Date.now()}`
  await signIn(page)
  await page.goto('/providers')
  await page.getByRole('button', { name: 'Add provider' }).click()
  const add = dialog(page, 'Add a provider')
  await field(add, 'Name').fill(name)
  await field(add, 'Base URL').fill(fakeUrl)
  await field(add, 'API key').fill(API_KEY)
  await field(add, 'Models offered').fill('remote-mini\nremote-large')
  await add.getByRole('button', { name: 'Save' }).click()
  await expect(add).toBeHidden()
  await expect(page.getByRole('row').filter({ hasText: name })).toBeVisible()

  await page.goto('/chat')
  await expect(page.locator('#composer-input')).toBeVisible()
  await page.getByRole('button', { name: 'New chat' }).first().click()
  await page.locator('.composer .model-select').click()
  const menu = page.locator('.n-base-select-menu')
  await expect(menu).toContainText(name) // the provider's group
  await expect(menu).toContainText('remote-large')
  await expect(menu).not.toContainText('text-embedding-x') // not on the allow-list
  await menu
    .locator('.n-base-select-option')
    .filter({ hasText: /^remote-mini$/ })
    .click()
  await expect(page.locator('.composer .model-select')).toContainText('remote-mini')

  await send(page, 'Hello remote')
  await waitIdle(page)
  await expect(page.locator('.msg').last()).toContainText(REPLY)
  await journeyShot(page, 'openai-provider-chat')

  // Remove it again: the fake stops with this file, and other specs must not see a provider that is down.
  await page.goto('/providers')
  const row = page.getByRole('row').filter({ hasText: name })
  await row.getByRole('button', { name: 'Delete' }).click()
  await page.getByRole('dialog').filter({ hasText: 'Delete provider?' }).getByRole('button', { name: 'Delete' }).click()
  await expect(row).toHaveCount(0)
})
