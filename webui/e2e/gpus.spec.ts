/** System → Overview: the GPUs in the health monitor. The machine that runs the tests has no GPU: the two
 * GPUs are FAKE (demo data) — global-setup.ts generates an amdgpu sysfs tree whose figures move every second
 * and points MODELTRAIN_GPU_SYSFS_ROOT at it, so the server reads them through its real AMD code path. The
 * journey's screenshot (system-gpus) shows that fake data. A model loaded in the fake Ollama appears with
 * its VRAM next to the GPU totals. */
import { apiToken, expect, journeyShot, signIn, test } from './fixtures/test'

const MODEL = 'qwen3:0.6b'

test('system: GPU cards, utilization and memory charts, and the loaded models with their VRAM', async ({
  page,
  request,
}) => {
  const auth = { Authorization: `Bearer ${await apiToken(request)}` }
  const load = await request.post(`/api/ollama/running/${encodeURIComponent(MODEL)}/load`, { headers: auth })
  expect(load.status(), await load.text()).toBe(204)
  try {
    // the API first: the contract's fields, one entry per fake GPU
    const metrics = await (await request.get('/api/metrics', { headers: auth })).json()
    expect(metrics.gpus.map((g: { name: string }) => g.name)).toEqual([
      'Fake GPU A (demo data)',
      'Fake GPU B (demo data)',
    ])
    for (const g of metrics.gpus) {
      for (const key of ['name', 'utilization', 'memory_used', 'memory_total', 'temperature', 'level']) {
        expect(g).toHaveProperty(key)
      }
    }

    await signIn(page)
    await page.goto('/system')
    const panel = page.getByTestId('gpus')
    await expect(panel.getByRole('heading', { name: 'GPUs' })).toBeVisible()
    await expect(panel.getByTestId('gpu-0')).toContainText('GPU 0 · Fake GPU A (demo data)')
    await expect(panel.getByTestId('gpu-0')).toContainText('/ 52 GB')
    await expect(panel.getByTestId('gpu-1')).toContainText('Fake GPU B (demo data)')
    await expect(panel.getByTestId('gpu-1')).toContainText('°C')
    // the charts need two samples of history (one a second here)
    await expect(panel.getByRole('figure').filter({ hasText: 'GPU utilization (%)' })).toBeVisible()
    await expect(panel.getByRole('figure').filter({ hasText: 'GPU memory (%)' })).toBeVisible()
    const models = panel.getByTestId('gpu-models')
    await expect(models.getByRole('row').filter({ hasText: MODEL })).toContainText('100%')
    await expect(panel.getByTestId('gpu-vram-total')).toContainText('of 77 GB GPU memory')
    await panel.scrollIntoViewIfNeeded()
    await journeyShot(page, 'system-gpus')
  } finally {
    await request.post(`/api/ollama/running/${encodeURIComponent(MODEL)}/unload`, { headers: auth })
  }
})
