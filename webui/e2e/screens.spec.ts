/**
 * Screenshots of the main screens in English and Simplified Chinese, saved to e2e/screenshots/
 * (gitignored) for a look by eye: sign-in, chat, models, system, settings.
 */
import type { APIRequestContext, Page } from '@playwright/test'
import { SCREENSHOT_DIR } from './fixtures/env'
import { apiToken, expect, signIn, test } from './fixtures/test'

const SAMPLE_ANSWER = [
  'Here is a **short** answer with a list, code and math.',
  '',
  '1. Read the file',
  '2. Count the words',
  '',
  '```python',
  'from collections import Counter',
  '',
  'def top_words(path: str, n: int = 5) -> list[tuple[str, int]]:',
  '    with open(path, encoding="utf-8") as f:',
  '        return Counter(f.read().split()).most_common(n)',
  '```',
  '',
  'The mean is $\\bar{x} = \\frac{1}{n}\\sum_{i=1}^{n} x_i$.',
].join('\n')

/** A finished conversation, imported through the API (deterministic content for the screenshot). */
async function importConversation(request: APIRequestContext, title: string, question: string): Promise<string> {
  const token = await apiToken(request)
  const now = Date.now()
  const at = (s: number) => new Date(now - s * 1000).toISOString()
  const body = {
    format: 'modeltrain.conversations',
    version: 1,
    conversations: [
      {
        id: 'screens',
        title,
        created_at: at(60),
        model: 'llama3.2:latest',
        messages: [
          { id: 'q', parent_id: null, role: 'user', content: question, status: 'complete', created_at: at(50) },
          {
            id: 'a',
            parent_id: 'q',
            role: 'assistant',
            content: SAMPLE_ANSWER,
            status: 'complete',
            model: 'llama3.2:latest',
            created_at: at(40),
          },
        ],
      },
    ],
  }
  const r = await request.post('/api/conversations/import', {
    headers: { Authorization: `Bearer ${token}` },
    data: body,
  })
  expect(r.status(), await r.text()).toBe(201)
  const ids = (await r.json()).ids as Record<string, string>
  return ids.screens
}

async function shoot(page: Page, name: string) {
  await page.evaluate(() => document.fonts.ready)
  await page.screenshot({ path: `${SCREENSHOT_DIR}/${name}.png` })
}

for (const [locale, lang, strings] of [
  [
    'en-US',
    'en',
    {
      signIn: 'Sign in',
      title: 'Counting words in a file',
      question: 'How do I count the most common words in a file?',
      models: 'Local models',
      system: 'Health',
      settings: 'Settings',
    },
  ],
  [
    'zh-CN',
    'zh-CN',
    {
      signIn: '登录',
      title: '统计文件中的词频',
      question: '怎样统计一个文件里最常见的单词？',
      models: '本地模型',
      system: '健康状态',
      settings: '设置',
    },
  ],
] as const) {
  test.describe(`screens (${lang})`, () => {
    test.use({ locale })

    test(`main screens in ${lang}`, async ({ page, request }) => {
      await page.goto('/login')
      await expect(page.getByRole('button', { name: strings.signIn })).toBeVisible()
      await shoot(page, `${lang}-sign-in`)

      const id = await importConversation(request, strings.title, strings.question)
      await signIn(page)
      await page.goto(`/chat/${id}`)
      await expect(page.locator('.msg-assistant .md .katex').first()).toBeVisible()
      await expect(page.locator('.msg-assistant .md .hljs').first()).toBeVisible()
      await expect(page.locator('.sidebar')).toContainText(strings.title)
      await shoot(page, `${lang}-chat`)

      await page.goto('/models')
      await expect(page.getByRole('heading', { name: strings.models })).toBeVisible()
      await expect(
        page.locator('section.card').first().getByRole('cell', { name: 'llama3.2:latest', exact: true }),
      ).toBeVisible()
      await shoot(page, `${lang}-models`)

      await page.goto('/system')
      await expect(page.getByRole('heading', { name: strings.system })).toBeVisible()
      await expect(page.locator('.charts canvas').first()).toBeVisible()
      await expect(page.locator('.n-skeleton')).toHaveCount(0)
      await shoot(page, `${lang}-system`)

      await page.goto('/settings')
      await expect(page.getByRole('heading', { name: strings.settings, level: 1 })).toBeVisible()
      await shoot(page, `${lang}-settings`)
    })
  })
}
