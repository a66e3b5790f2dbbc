import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { createPinia } from 'pinia'
import { defineComponent, h, ref } from 'vue'
import { i18n } from '@/i18n'
import CollectionFormModal from './CollectionFormModal.vue'

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })

const model = (id: string, name: string, capabilities: string[]) => ({
  id,
  name,
  model: name,
  capabilities,
  provider: { id: 'p1', name: 'Ollama', kind: 'ollama' },
  source: 'ollama',
  defaults: {},
})

let wrapper: VueWrapper | null = null
beforeAll(() => {
  i18n.global.locale.value = 'en'
})
afterEach(() => {
  wrapper?.unmount()
  wrapper = null
  vi.unstubAllGlobals()
  document.body.innerHTML = ''
})

describe('CollectionFormModal', () => {
  it('offers only the embedding models and creates the collection with the one picked', async () => {
    const fetchMock = vi.fn(async (url: string, init?: RequestInit) => {
      if (url.startsWith('/api/models'))
        return json({
          items: [
            model('ollama:p1:llama3.2', 'llama3.2', ['completion']),
            model('ollama:p1:nomic', 'nomic-embed-text', ['embedding']),
          ],
        })
      if (url === '/api/knowledge' && init?.method === 'POST') {
        const body = JSON.parse(String(init.body))
        return json({ id: 'k1', ...body, shared: false, writable: true, status: 'empty' }, 201)
      }
      return json({}, 404)
    })
    vi.stubGlobal('fetch', fetchMock)
    const saved = vi.fn()
    const Host = defineComponent({
      setup: () => {
        const show = ref(true)
        return () =>
          h(CollectionFormModal, {
            show: show.value,
            'onUpdate:show': (v: boolean) => (show.value = v),
            onSaved: saved,
          })
      },
    })
    wrapper = mount(Host, { global: { plugins: [i18n, createPinia()] }, attachTo: document.body })
    await flushPromises()
    expect(fetchMock.mock.calls[0][0]).toBe('/api/models?capability=embedding')

    const name = document.querySelector<HTMLInputElement>('input[aria-label="Name"]')!
    name.value = 'Handbook'
    name.dispatchEvent(new Event('input'))
    await flushPromises()
    // the only embedding model is chosen for the user; the chat model is not offered
    const selection = document.querySelector('.n-base-selection')!
    expect(selection.textContent).toContain('nomic-embed-text')
    const create = [...document.querySelectorAll('button')].find((b) => b.textContent?.trim() === 'Create')!
    create.click()
    await flushPromises()
    const post = fetchMock.mock.calls.find(([u, i]) => u === '/api/knowledge' && i?.method === 'POST')!
    expect(JSON.parse(String(post[1]!.body))).toEqual({
      name: 'Handbook',
      description: '',
      embedding_model: 'ollama:p1:nomic',
    })
    expect(saved).toHaveBeenCalledWith(expect.objectContaining({ id: 'k1', name: 'Handbook' }))
  })
})
