import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { defineComponent, h } from 'vue'
import { NMessageProvider } from 'naive-ui'
import { i18n } from '@/i18n'
import HostsPanel from './HostsPanel.vue'

const list = vi.fn()
const probe = vi.fn()
vi.mock('@/api/endpoints', () => ({ hostsApi: { list: () => list(), probe: () => probe() } }))

const GIB = 1024 ** 3
const host = (name: string, state: string, extra: Record<string, unknown> = {}) => ({
  id: `id-${name}`,
  name,
  kind: 'ollama',
  base_url: `http://10.0.0.${name.length}:11434`,
  group: 'farm',
  priority: 0,
  weight: 1,
  is_default: false,
  enabled: state !== 'disabled',
  state,
  last_error: null,
  probe_latency_ms: 2.5,
  streams_in_flight: 0,
  consecutive_failures: 0,
  cooldown_seconds: 0,
  missing_models: [],
  probed: true,
  loaded_models: [],
  ...extra,
})

const wrappers: VueWrapper[] = []
function mountIt() {
  const Root = defineComponent({ render: () => h(NMessageProvider, null, { default: () => h(HostsPanel) }) })
  const w = mount(Root, { global: { plugins: [i18n] } })
  wrappers.push(w)
  return w
}

beforeAll(() => {
  i18n.global.locale.value = 'en'
})
afterEach(() => {
  wrappers.splice(0).forEach((w) => w.unmount())
  list.mockReset()
  probe.mockReset()
})

describe('HostsPanel', () => {
  it('shows each host with its state, probe latency, streams, loaded models (VRAM) and last error', async () => {
    list.mockResolvedValue({
      probe_seconds: 15,
      strategy: 'weighted',
      retries: 2,
      items: [
        host('a', 'healthy', {
          streams_in_flight: 3,
          loaded_models: [{ name: 'llama3.2:latest', size_vram: 2 * GIB, size: 2 * GIB }],
        }),
        host('b', 'cooling_down', { cooldown_seconds: 4, last_error: 'upstream_unreachable: refused' }),
        host('c', 'down', { probe_latency_ms: null, last_error: 'unreachable: ConnectError' }),
        host('d', 'disabled'),
      ],
    })
    const w = mountIt()
    await flushPromises()
    expect(w.find('[data-testid="host-state-a"]').text()).toBe('Healthy')
    expect(w.find('[data-testid="host-state-b"]').text()).toBe('Cooling down')
    expect(w.find('[data-testid="host-state-c"]').text()).toBe('Down')
    expect(w.find('[data-testid="host-state-d"]').text()).toBe('Disabled')
    const text = w.text()
    expect(text).toContain('llama3.2:latest')
    expect(text).toContain('2.5 ms')
    expect(text).toContain('4.0 s left')
    expect(text).toContain('unreachable: ConnectError')
    expect(text).toContain('Routing: weighted random, up to 2 retries')
  })

  it('probes at once on request', async () => {
    list.mockResolvedValue({ probe_seconds: 15, strategy: 'least_busy', retries: 1, items: [] })
    probe.mockResolvedValue({ probe_seconds: 15, strategy: 'least_busy', retries: 1, items: [host('a', 'down')] })
    const w = mountIt()
    await flushPromises()
    await w.find('[data-testid="hosts-probe"]').trigger('click')
    await flushPromises()
    expect(probe).toHaveBeenCalledOnce()
    expect(w.find('[data-testid="host-state-a"]').text()).toBe('Down')
  })
})
