/**
 * Starts the fake Ollama and the real ModelTrain server (fresh temporary data directory, the built
 * webui/dist, INITIAL_ADMIN_PASSWORD set, free ports), exports the server URL to the specs through
 * MT_E2E_URL, and returns the teardown that stops both and removes the directory.
 *
 * The server sees two FAKE GPUs (demo data, for gpus.spec.ts and the System page screenshots): an amdgpu
 * sysfs tree generated here (MODELTRAIN_GPU_SYSFS_ROOT, the real AMD code path) whose figures change
 * every second.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { INITIAL_ADMIN_PASSWORD, SCREENSHOT_DIR, WEBUI_DIR } from './fixtures/env'
import { startFakeOllama, startServer } from './fixtures/processes.mjs'

const GIB = 1024 ** 3

/** Two fake amdgpu cards under `root`, their figures moving with `tick` (demo data, labelled as such). */
function writeFakeGpus(root: string, tick: number): void {
  const cards = [
    { card: 'card0', name: 'Fake GPU A (demo data)', total: 48 * GIB, busy: 55, mem: 0.62, temp: 63, watts: 210 },
    { card: 'card1', name: 'Fake GPU B (demo data)', total: 24 * GIB, busy: 20, mem: 0.35, temp: 51, watts: 95 },
  ]
  for (const [i, c] of cards.entries()) {
    const wave = Math.sin(tick / 6 + i * 2)
    const device = join(root, c.card, 'device')
    const hwmon = join(device, 'hwmon', 'hwmon0')
    mkdirSync(hwmon, { recursive: true })
    const put = (dir: string, file: string, value: string | number) => writeFileSync(join(dir, file), `${value}\n`)
    put(device, 'product_name', c.name)
    put(device, 'gpu_busy_percent', Math.max(0, Math.round(c.busy + 25 * wave)))
    put(device, 'mem_info_vram_total', c.total)
    put(device, 'mem_info_vram_used', Math.round(c.total * (c.mem + 0.08 * wave)))
    put(hwmon, 'temp1_input', Math.round((c.temp + 6 * wave) * 1000))
    put(hwmon, 'power1_average', Math.round((c.watts + 40 * wave) * 1e6))
  }
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  const dist = resolve(WEBUI_DIR, 'dist')
  if (!existsSync(join(dist, 'index.html'))) {
    throw new Error(`${dist}/index.html is missing: build the web UI first (npm run build)`)
  }
  mkdirSync(SCREENSHOT_DIR, { recursive: true })
  const tmp = mkdtempSync(join(tmpdir(), 'modeltrain-e2e-'))
  const started: Array<{ stop: () => Promise<void> }> = []
  const gpuRoot = join(tmp, 'fake-gpus')
  let tick = 0
  writeFakeGpus(gpuRoot, tick)
  const gpuTimer = setInterval(() => writeFakeGpus(gpuRoot, ++tick), 1000)
  gpuTimer.unref()
  const teardown = async () => {
    clearInterval(gpuTimer)
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
      MODELTRAIN_GPU_SYSFS_ROOT: gpuRoot, // fake GPUs (demo data): gpus.spec.ts
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
