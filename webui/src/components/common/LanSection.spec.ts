import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { defineComponent, h } from 'vue'
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { NMessageProvider } from 'naive-ui'
import { i18n } from '@/i18n'
import LanSection from './LanSection.vue'

const toCanvas = vi.fn(async () => undefined)
vi.mock('qrcode', () => ({ toCanvas }))
const get = vi.fn()
vi.mock('@/api/endpoints', () => ({ lanApi: { get: () => get(), put: vi.fn() } }))

const FINGERPRINT = Array.from({ length: 32 }, (_, i) => i.toString(16).padStart(2, '0').toUpperCase()).join(':')
const ON = {
  enabled: true,
  url: 'https://192.168.1.20:8765',
  host: '0.0.0.0',
  port: 8765,
  urls: ['https://192.168.1.20:8765'],
  addresses: ['192.168.1.20', 'mybox', 'mybox.local'],
  error: null,
  ca_fingerprint_sha256: FINGERPRINT,
  ca_download_url: 'http://192.168.1.20:8765/api/lan/ca.crt',
  ca_download_path: '/api/lan/ca.crt',
  certificate_expires_at: '2027-07-01T12:00:00Z',
}

const wrappers: VueWrapper[] = []
function mountIt() {
  const Host = defineComponent({ render: () => h(NMessageProvider, null, { default: () => h(LanSection) }) })
  const w = mount(Host, { global: { plugins: [i18n] }, attachTo: document.body })
  wrappers.push(w)
  return w
}

beforeAll(() => {
  i18n.global.locale.value = 'en'
})
afterEach(() => {
  wrappers.splice(0).forEach((w) => w.unmount())
  toCanvas.mockClear()
})

describe('LanSection', () => {
  it('shows the https URL, its QR code, the CA fingerprint and the CA download', async () => {
    get.mockResolvedValue(ON)
    const w = mountIt()
    await flushPromises()
    await flushPromises()
    expect(w.find('a.mono').attributes('href')).toBe('https://192.168.1.20:8765')
    expect(toCanvas).toHaveBeenCalledWith(expect.anything(), 'https://192.168.1.20:8765', expect.anything())
    const ca = w.find('[data-testid="lan-ca"]')
    expect(ca.text()).toContain(FINGERPRINT)
    expect(ca.text()).toContain('http://192.168.1.20:8765/api/lan/ca.crt')
    const download = ca.find('a[download]')
    expect(download.attributes('href')).toBe('/api/lan/ca.crt')
    expect(download.text()).toBe('Download CA certificate')
  })

  it('shows no CA section while LAN access is off', async () => {
    get.mockResolvedValue({ enabled: false, url: null, host: '0.0.0.0', port: 8765, urls: [], addresses: [] })
    const w = mountIt()
    await flushPromises()
    expect(w.find('[data-testid="lan-ca"]').exists()).toBe(false)
    expect(toCanvas).not.toHaveBeenCalled()
  })
})
