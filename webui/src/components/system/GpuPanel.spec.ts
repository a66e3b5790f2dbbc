import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { i18n } from '@/i18n'
import type { Metrics } from '@/api/types'
import GpuPanel from './GpuPanel.vue'

const running = vi.fn()
vi.mock('@/api/endpoints', () => ({ ollamaApi: { running: () => running() } }))
// the charts (ECharts on a canvas) are the e2e spec's business
vi.mock('@/components/system/MetricChart.vue', () => ({ default: { props: ['title'], template: '<figure />' } }))

const GIB = 1024 ** 3
const GPU = {
  index: 0,
  vendor: 'nvidia',
  name: 'NVIDIA H200',
  utilization: 37,
  memory_used: 14 * GIB,
  memory_total: 141 * GIB,
  memory_percent: 9.93,
  temperature: 41,
  power_watts: 118.5,
  power_limit_watts: 700,
  level: 'warning',
}

function metrics(gpus: unknown[]): Metrics {
  return { gpus, history: [] } as unknown as Metrics
}

const wrappers: VueWrapper[] = []
function mountIt(m: Metrics) {
  const w = mount(GpuPanel, { props: { metrics: m }, global: { plugins: [i18n] } })
  wrappers.push(w)
  return w
}

beforeAll(() => {
  i18n.global.locale.value = 'en'
})
afterEach(() => {
  wrappers.splice(0).forEach((w) => w.unmount())
  running.mockReset()
})

describe('GpuPanel', () => {
  it('shows nothing, and asks for no loaded models, without a GPU', async () => {
    const w = mountIt(metrics([]))
    await flushPromises()
    expect(w.find('[data-testid="gpus"]').exists()).toBe(false)
    expect(running).not.toHaveBeenCalled()
  })

  it('shows each GPU with its level and the loaded models with their VRAM', async () => {
    running.mockResolvedValue({
      items: [{ name: 'llama3.2:latest', size: 4 * GIB, size_vram: 4 * GIB, vram_share: 1 }],
    })
    const w = mountIt(metrics([GPU]))
    await flushPromises()
    const card = w.find('[data-testid="gpu-0"]')
    expect(card.classes()).toContain('lv-warning')
    expect(card.text()).toContain('GPU 0 · NVIDIA H200')
    expect(card.text()).toContain('Warning')
    expect(card.text()).toContain('41 °C')
    expect(card.text()).toContain('700 W')
    expect(w.find('[data-testid="gpu-models"]').text()).toContain('llama3.2:latest')
    expect(w.find('[data-testid="gpu-vram-total"]').text()).toBe('Loaded models use 4.3 GB of 151 GB GPU memory')
  })

  it('leaves the models table out when the local Ollama cannot be asked', async () => {
    running.mockRejectedValue(new Error('no ollama'))
    const w = mountIt(metrics([GPU]))
    await flushPromises()
    expect(w.find('[data-testid="gpu-0"]').exists()).toBe(true)
    expect(w.find('[data-testid="gpu-vram-total"]').exists()).toBe(false)
  })
})
