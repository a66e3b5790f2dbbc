/** Chat against the real server and the fake Ollama: streaming, Stop, Regenerate, Edit with branches. */
import { expect, lastAssistant, newChat, send, signIn, test, waitIdle } from './fixtures/test'

test.beforeEach(async ({ page }) => {
  await signIn(page)
  await newChat(page)
})

test('an answer streams in progressively and is kept after a reload', async ({ page }) => {
  await send(page, '[[words 150]]')
  await expect(page.locator('.msg-user-text').last()).toHaveText('[[words 150]]')
  const answer = lastAssistant(page).locator('.md')
  // record the text length of the growing answer on every DOM change until the stream ends
  const lengths = await answer.evaluate(
    (el) =>
      new Promise<number[]>((resolve) => {
        const seen: number[] = [el.textContent?.length ?? 0]
        const obs = new MutationObserver(() => {
          seen.push(el.textContent?.length ?? 0)
          if (!document.querySelector('button[aria-label="Stop"]') || el.textContent?.includes('w150')) {
            obs.disconnect()
            resolve(seen)
          }
        })
        obs.observe(el, { childList: true, subtree: true, characterData: true })
      }),
  )
  const distinct = [...new Set(lengths)]
  expect(distinct.length, `text grew in steps: ${distinct.join(',')}`).toBeGreaterThanOrEqual(5)
  expect(distinct).toEqual([...distinct].sort((a, b) => a - b))
  await waitIdle(page)
  await expect(answer).toContainText('w1 w2 w3')
  await expect(answer).toContainText('w149 w150')

  await page.reload()
  await expect(lastAssistant(page).locator('.md')).toContainText('w149 w150')
  await expect(page.locator('.msg-user-text').last()).toHaveText('[[words 150]]')
})

test('Stop ends a long answer and keeps what arrived', async ({ page }) => {
  await send(page, '[[words 5000]]')
  const answer = lastAssistant(page).locator('.md')
  await expect(answer).toContainText('w20 ')
  await page.getByRole('button', { name: 'Stop' }).click()
  await waitIdle(page)
  await expect(lastAssistant(page)).toContainText('Stopped')
  const kept = (await answer.textContent()) ?? ''
  expect(kept).toContain('w20')
  expect(kept).not.toContain('w5000')
  // the partial answer is what the server saved
  await page.reload()
  await expect(lastAssistant(page)).toContainText('Stopped')
  await expect(lastAssistant(page).locator('.md')).toContainText('w20')
})

test('Esc stops a streaming answer', async ({ page }) => {
  await send(page, '[[words 5000]]')
  await expect(lastAssistant(page).locator('.md')).toContainText('w5 ')
  await page.keyboard.press('Escape')
  await waitIdle(page)
  await expect(lastAssistant(page)).toContainText('Stopped')
})

test('Regenerate adds a version; previous/next switch between them', async ({ page }) => {
  await send(page, '[[count]] first')
  await waitIdle(page)
  const answer = lastAssistant(page)
  await expect(answer.locator('.md')).toContainText(/Answer number \d+\./)
  const first = (await answer.locator('.md').textContent())!.trim()

  await answer.hover()
  await answer.getByRole('button', { name: 'Regenerate' }).click()
  await waitIdle(page)
  await expect(answer.locator('.msg-branch-pos')).toHaveText('2 / 2')
  await expect(answer.locator('.md')).toContainText(/Answer number \d+\./)
  const second = (await answer.locator('.md').textContent())!.trim()
  expect(second).not.toBe(first)

  await answer.getByRole('button', { name: 'Previous version' }).click()
  await expect(answer.locator('.msg-branch-pos')).toHaveText('1 / 2')
  await expect(answer.locator('.md')).toHaveText(first)
  await expect(answer.getByRole('button', { name: 'Previous version' })).toBeDisabled()

  await answer.getByRole('button', { name: 'Next version' }).click()
  await expect(answer.locator('.msg-branch-pos')).toHaveText('2 / 2')
  await expect(answer.locator('.md')).toHaveText(second)
})

test('Edit branches the conversation; previous/next show each branch with its answer', async ({ page }) => {
  await send(page, '[[count]] original question')
  await waitIdle(page)
  const question = page.locator('.msg-user').first()
  const firstAnswer = (await lastAssistant(page).locator('.md').textContent())!.trim()

  await question.hover()
  await question.getByRole('button', { name: 'Edit' }).click()
  const editor = question.locator('.msg-edit textarea')
  await expect(editor).toBeFocused()
  await editor.fill('[[count]] edited question')
  await editor.press('Enter')
  await waitIdle(page)

  await expect(question.locator('.msg-user-text')).toHaveText('[[count]] edited question')
  await expect(question.locator('.msg-branch-pos')).toHaveText('2 / 2')
  await expect(page.locator('.msg')).toHaveCount(2)
  const editedAnswer = (await lastAssistant(page).locator('.md').textContent())!.trim()
  expect(editedAnswer).not.toBe(firstAnswer)

  await question.getByRole('button', { name: 'Previous version' }).click()
  await expect(question.locator('.msg-user-text')).toHaveText('[[count]] original question')
  await expect(lastAssistant(page).locator('.md')).toHaveText(firstAnswer)
  await expect(question.locator('.msg-branch-pos')).toHaveText('1 / 2')

  await question.getByRole('button', { name: 'Next version' }).click()
  await expect(question.locator('.msg-user-text')).toHaveText('[[count]] edited question')
  await expect(lastAssistant(page).locator('.md')).toHaveText(editedAnswer)

  // the branch tree comes back from the server
  await page.reload()
  await expect(page.locator('.msg-user').first().locator('.msg-branch-pos')).toHaveText(/\d \/ 2/)
})

test('a new conversation gets its generated title from the stream, without polling or a reload', async ({ page }) => {
  const fetched: string[] = []
  page.on('request', (r) => {
    if (r.method() === 'GET' && /\/api\/conversations\/[0-9a-f-]{36}$/.test(r.url())) fetched.push(r.url())
  })
  // the fake titles an [[echo]] conversation with the first line of the echoed text
  await send(page, '[[echo]]Rivers of Europe\nThe Danube and the Rhine.')
  await waitIdle(page)
  await expect(page.locator('.chat-title')).toHaveText('Rivers of Europe')
  await expect(page.locator('.sidebar .item-title').filter({ hasText: /^Rivers of Europe$/ })).toHaveCount(1)
  expect(fetched, 'the title came with the chat stream').toEqual([])
})
