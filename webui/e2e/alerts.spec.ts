/** System → Alerts: an administrator adds a webhook channel that points at a local receiver, sends a test
 * (first refused, then delivered), sees the channel's state, and finds the channel's failure and its
 * recovery in the alert history. */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Locator } from '@playwright/test'
import { expect, journeyShot, signIn, test } from './fixtures/test'

/** The input of the form item labelled `label` (Naive UI's form labels are not tied to their inputs). */
const field = (scope: Locator, label: string) =>
  scope
    .locator('.n-form-item')
    .filter({ has: scope.page().locator('.n-form-item-label', { hasText: new RegExp(`^\\s*${label}\\s*$`) }) })
    .locator('input, textarea')
    .first()

interface Hook {
  path: string
  headers: IncomingMessage['headers']
  body: string
  /** The status the receiver answered with. */
  status: number
}

let receiver: Server
let url = ''
let answer = 500
const received: Hook[] = []

test.beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      received.push({ path: req.url ?? '', headers: req.headers, body, status: answer })
      res.writeHead(answer, { 'Content-Type': 'application/json' }).end('{"ok": true}')
    })
  })
  await new Promise<void>((done) => receiver.listen(0, '127.0.0.1', done))
  url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`
})

test.afterAll(async () => {
  await new Promise((done) => receiver.close(done))
})

test.beforeEach(async ({ page }) => {
  await signIn(page)
})

test('alerts: a webhook channel, its test, its failure and recovery in the history', async ({ page }) => {
  const name = `ops-hook-${Date.now()}`
  await page.goto('/system')
  await page
    .locator('.n-tabs-tab')
    .filter({ hasText: /^Alerts$/ })
    .click()
  await page
    .locator('.n-tabs-tab')
    .filter({ hasText: /^Channels$/ })
    .click()
  const channels = page.getByTestId('alert-channels')
  await expect(channels).toBeVisible()

  await channels.getByTestId('channel-add').click()
  const dialog = page.getByRole('dialog').filter({ hasText: 'Add channel' })
  await field(dialog, 'Name').fill(name)
  await field(dialog, 'Webhook URL').fill(`${url}/hooks/room-7`)
  await dialog.getByTestId('channel-preset').click()
  await page.locator('.n-base-select-option').filter({ hasText: 'DingTalk' }).click()
  await field(dialog, 'HMAC signing secret \\(optional\\)').fill('e2e-signing-secret')
  await dialog.getByRole('button', { name: 'Save' }).click()
  await expect(dialog).toBeHidden()

  const row = channels.getByRole('row').filter({ hasText: name })
  await expect(row).toContainText('DingTalk · http://127.0.0.1:')
  await expect(row).toContainText('Not tried yet')

  // the receiver refuses: the test fails and the channel says so
  await row.getByTestId(`channel-test-${name}`).click()
  await expect(page.getByText(/Test failed: .* answered HTTP 500/)).toBeVisible()
  await expect(row.getByTestId(`channel-status-${name}`)).toHaveAttribute('data-status', 'failing')
  await expect(row).toContainText('answered HTTP 500')

  // the receiver is back: delivered, signed, in DingTalk's body
  answer = 200
  await row.getByTestId(`channel-test-${name}`).click()
  await expect(page.getByText('Test message delivered.')).toBeVisible()
  await expect(row.getByTestId(`channel-status-${name}`)).toHaveAttribute('data-status', 'ok')
  // The delivered test message; the channel's own "resolved" notice may arrive before or after it, so it
  // is picked out by its text and the answer it got.
  const tests = received.filter(
    (r) =>
      r.status === 200 && String(JSON.parse(r.body)?.text?.content ?? '').includes('[ModelTrain] test message from'),
  )
  expect(tests).toHaveLength(1)
  const last = tests[0]
  expect(last.path).toBe('/hooks/room-7')
  expect(last.headers['x-modeltrain-signature']).toMatch(/^sha256=[0-9a-f]{64}$/)
  expect(JSON.parse(last.body).msgtype).toBe('text')
  await journeyShot(page, 'alerts-channels')

  // the channel's failure and its recovery are in the history, labelled with the instance
  await page
    .locator('.n-tabs-tab')
    .filter({ hasText: /^History$/ })
    .click()
  const history = page.getByTestId('alert-history')
  await history.getByPlaceholder('Alert key contains…').fill('alert_channel:')
  const rows = history.getByRole('row').filter({ hasText: `alert channel ${name} is failing` })
  await expect(async () => {
    await history.getByRole('button', { name: 'Refresh' }).click()
    await expect(rows.filter({ hasText: 'Resolved' })).toHaveCount(1, { timeout: 1000 })
  }).toPass({ timeout: 15_000 })
  await expect(rows.filter({ hasText: 'Raised' })).toHaveCount(1)
  await journeyShot(page, 'alerts-history')
})
