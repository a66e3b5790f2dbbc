/** Language: the default follows the browser, the switch in Settings translates the UI and persists. */
import { expect, signIn, test } from './fixtures/test'

test('switching between English and 简体中文 in Settings', async ({ page }) => {
  await signIn(page)
  await page.goto('/settings')
  await expect(page.getByRole('heading', { name: 'Settings', level: 1 })).toBeVisible()
  await expect(page.locator('.rail [aria-label="Chat"]')).toBeVisible()

  await page.getByText('简体中文', { exact: true }).click()
  await expect(page.getByRole('heading', { name: '设置', level: 1 })).toBeVisible()
  await expect(page.locator('.rail [aria-label="对话"]')).toBeVisible()
  await expect(page.getByText('外观', { exact: true })).toBeVisible()
  await expect(page.locator('html')).toHaveAttribute('lang', 'zh-CN')

  // the choice survives a reload (and a new sign-in through the refresh cookie)
  await page.reload()
  await expect(page.getByRole('heading', { name: '设置', level: 1 })).toBeVisible()
  await page.goto('/chat')
  await expect(page.locator('#composer-input')).toHaveAttribute('aria-label', /[\u4e00-\u9fff]/)

  await page.goto('/settings')
  await page.getByText('English', { exact: true }).click()
  await expect(page.getByRole('heading', { name: 'Settings', level: 1 })).toBeVisible()
  await expect(page.locator('.rail [aria-label="Chat"]')).toBeVisible()
  await expect(page.locator('html')).toHaveAttribute('lang', 'en')
})

test.describe('a Chinese browser', () => {
  test.use({ locale: 'zh-CN' })

  test('gets the Chinese sign-in screen by default', async ({ page }) => {
    await page.goto('/login')
    await expect(page.getByRole('button', { name: '登录' })).toBeVisible()
    await expect(page.locator('html')).toHaveAttribute('lang', 'zh-CN')
  })
})
