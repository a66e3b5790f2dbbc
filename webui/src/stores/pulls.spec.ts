import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { usePullsStore } from './pulls'
import { usePrefsStore } from './prefs'

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })
const sse = (...events: Array<[string, unknown]>) =>
  new Response(events.map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`).join(''), {
    status: 200,
    headers: { 'Content-Type': 'text/event-stream' },
  })
const urls = (m: ReturnType<typeof vi.fn>) => m.mock.calls.map((c) => String(c[0]))

describe('pulls store, per Ollama host', () => {
  let fetchMock: ReturnType<typeof vi.fn>
  beforeEach(() => {
    setActivePinia(createPinia())
    fetchMock = vi.fn()
    vi.stubGlobal('fetch', fetchMock)
    localStorage.clear()
  })
  afterEach(() => vi.unstubAllGlobals())

  it('sends ?provider= for the chosen host and keeps each host’s pulls apart', async () => {
    const pulls = usePullsStore()
    fetchMock.mockResolvedValueOnce(sse(['progress', { status: 'pulling', percent: 50 }], ['done', {}]))
    await pulls.start('llama3.2')
    expect(urls(fetchMock)[0]).toBe('/api/ollama/pull')

    pulls.setProvider('p-2')
    expect(pulls.list).toEqual([]) // the default host's pull is not listed for another host
    fetchMock.mockResolvedValueOnce(sse(['progress', { status: 'pulling', percent: 10 }], ['done', {}]))
    await pulls.start('llama3.2')
    expect(urls(fetchMock)[1]).toBe('/api/ollama/pull?provider=p-2')
    expect(pulls.list.map((e) => [e.name, e.provider, e.state])).toEqual([['llama3.2', 'p-2', 'done']])
    expect(pulls.finished).toBe(2)

    pulls.dismiss('llama3.2')
    expect(pulls.list).toEqual([])
    pulls.setProvider(null)
    expect(pulls.list.map((e) => e.provider)).toEqual([null]) // dismissing on p-2 left the default's
  })

  it('re-attaches to and cancels the pulls of the chosen host', async () => {
    const pulls = usePullsStore()
    pulls.setProvider('p-2')
    fetchMock.mockResolvedValueOnce(json({ items: [{ name: 'qwen3:0.6b', state: 'running', status: 'pulling' }] }))
    fetchMock.mockReturnValueOnce(new Promise(() => {})) // the event stream stays open
    await pulls.reattach()
    expect(urls(fetchMock)[0]).toBe('/api/ollama/pulls?provider=p-2')
    expect(urls(fetchMock)[1]).toBe('/api/ollama/pulls/qwen3%3A0.6b/events?provider=p-2')
    expect(pulls.active.map((e) => e.name)).toEqual(['qwen3:0.6b'])

    fetchMock.mockResolvedValueOnce(new Response(null, { status: 204 }))
    await pulls.cancel('qwen3:0.6b')
    expect(urls(fetchMock)[2]).toBe('/api/ollama/pull/qwen3%3A0.6b?provider=p-2')
    expect(pulls.list[0].state).toBe('cancelled')
  })
})

describe('prefs store, Ollama host', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    localStorage.clear()
  })

  it('remembers the chosen host across reloads', async () => {
    const prefs = usePrefsStore()
    expect(prefs.ollamaHost).toBeNull()
    prefs.ollamaHost = 'p-2'
    await Promise.resolve()
    expect(localStorage.getItem('modeltrain.ollamaHost')).toBe('p-2')
    setActivePinia(createPinia())
    expect(usePrefsStore().ollamaHost).toBe('p-2')
    usePrefsStore().ollamaHost = null
    await Promise.resolve()
    expect(localStorage.getItem('modeltrain.ollamaHost')).toBeNull()
  })
})
