import { defineConfig } from '@playwright/test'

/**
 * End-to-end tests against the real server (started by e2e/global-setup.ts with a fresh data directory,
 * serving the built webui/dist) and the fake Ollama (e2e/fixtures/fake_upstream.py).
 * Debian's Chromium only: never `playwright install`.
 */
export const CHROMIUM_ARGS = [
  // flags that work as root (Playwright adds --headless and a fresh --user-data-dir)
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // nothing may leave the machine, whatever a page asks for (docs/security.md, D1): names resolve to nothing
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
]

export default defineConfig({
  testDir: './e2e',
  testMatch: /.*\.spec\.ts$/,
  globalSetup: './e2e/global-setup.ts',
  outputDir: './test-results',
  timeout: 45_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  workers: Number(process.env.E2E_WORKERS || 2),
  reporter: process.env.CI ? [['list'], ['html', { open: 'never' }]] : [['list']],
  use: {
    browserName: 'chromium',
    launchOptions: { executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS },
    locale: 'en-US',
    timezoneId: 'UTC',
    colorScheme: 'light',
    viewport: { width: 1280, height: 800 },
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    actionTimeout: 10_000,
    navigationTimeout: 15_000,
  },
  projects: [
    // the administrator's initial password is changed once, first; every other spec signs in afterwards
    { name: 'first-start', testMatch: /auth\.spec\.ts$/ },
    { name: 'app', testIgnore: /auth\.spec\.ts$/, dependencies: ['first-start'], fullyParallel: true },
  ],
})
