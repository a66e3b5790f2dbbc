/**
 * Starts the fake Ollama and the real ModelTrain server (fresh temporary data directory, the built
 * webui/dist, INITIAL_ADMIN_PASSWORD set, free ports), exports the server URL to the specs through
 * MT_E2E_URL, and returns the teardown that stops both and removes the directory.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { INITIAL_ADMIN_PASSWORD, SCREENSHOT_DIR, WEBUI_DIR } from './fixtures/env'
import { startFakeOllama, startServer } from './fixtures/processes.mjs'

export default async function globalSetup(): Promise<() => Promise<void>> {
  const dist = resolve(WEBUI_DIR, 'dist')
  if (!existsSync(join(dist, 'index.html'))) {
    throw new Error(`${dist}/index.html is missing: build the web UI first (npm run build)`)
  }
  mkdirSync(SCREENSHOT_DIR, { recursive: true })
  const tmp = mkdtempSync(join(tmpdir(), 'modeltrain-e2e-'))
  const started: Array<{ stop: () => Promise<void> }> = []
  const teardown = async () => {
    for (const p of started.reverse()) await p.stop()
    rmSync(tmp, { recursive: true, force: true })
  }
  try {
    const fake = await startFakeOllama({ tokenDelay: 0.02, pullTick: 0.5 })
    started.push(fake)
    const server = await startServer({
      MODELTRAIN_DATA_DIR: join(tmp, 'data'),
      MODELTRAIN_BACKUP_DIR: join(tmp, 'backups'),
      INITIAL_ADMIN_PASSWORD,
      MODELTRAIN_OLLAMA_URL: fake.url,
      MODELTRAIN_OLLAMA_AUTOSTART: 'false',
      MODELTRAIN_WEBUI_DIST: dist,
      MODELTRAIN_BACKUP_SCHEDULE: 'off',
      MODELTRAIN_METRICS_INTERVAL_SECONDS: '1',
      MODELTRAIN_LOG_LEVEL: 'INFO',
      MODELTRAIN_API_DOCS: 'true', // api-docs.spec.ts
    })
    started.push(server)
    process.env.MT_E2E_URL = server.url
    process.env.MT_E2E_FAKE_OLLAMA_URL = fake.url
  } catch (e) {
    await teardown()
    throw e
  }
  return teardown
}
