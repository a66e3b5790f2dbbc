import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import type { ChatModel } from '@/api/types'
import { findPulled, pulledName, runtimeFinding, useOnboardingStore } from './onboarding'

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })

const model = (name: string, providerId: string, source: ChatModel['source'] = 'ollama') =>
  ({
    id: `${source}:${providerId}:${name}`,
    name,
    model: name,
    source,
    provider: { id: providerId, name: providerId, kind: source === 'openai' ? 'openai' : 'ollama' },
    capabilities: ['completion'],
  }) as unknown as ChatModel

describe('onboarding helpers', () => {
  it('says what step 1 found from the Ollama state', () => {
    expect(runtimeFinding('running')).toBe('found')
    expect(runtimeFinding('external')).toBe('found')
    expect(runtimeFinding('stopped')).toBe('stopped')
    expect(runtimeFinding('crashed')).toBe('stopped')
    expect(runtimeFinding('not_installed')).toBe('missing')
    expect(runtimeFinding(null)).toBe('missing')
  })

  it('finds a pulled model in the chat catalog, with the tag Ollama adds', () => {
    expect(pulledName('qwen3')).toBe('qwen3:latest')
    expect(pulledName('qwen3:0.6b')).toBe('qwen3:0.6b')
    expect(pulledName('registry.local:5000/team/model')).toBe('registry.local:5000/team/model:latest')
    const items = [model('qwen3:0.6b', 'a'), model('qwen3:0.6b', 'b'), model('tinyllama:latest', 'a')]
    expect(findPulled(items, 'qwen3:0.6b', 'b')?.provider.id).toBe('b')
    expect(findPulled(items, 'qwen3:0.6b', null)?.provider.id).toBe('a')
    expect(findPulled(items, 'TinyLlama', 'a')?.model).toBe('tinyllama:latest')
    expect(findPulled(items, 'gemma3:1b', null)).toBeNull()
    expect(findPulled([model('qwen3:0.6b', 'c', 'openai')], 'qwen3:0.6b', null)).toBeNull()
  })
})

describe('onboarding store', () => {
  let fetchMock: ReturnType<typeof vi.fn>
  beforeEach(() => {
    setActivePinia(createPinia())
    fetchMock = vi.fn()
    vi.stubGlobal('fetch', fetchMock)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('asks the server once per signed-in user whether to open the guide', async () => {
    const store = useOnboardingStore()
    fetchMock.mockResolvedValueOnce(json({ state: 'pending', show: true, has_models: false }))
    expect(await store.shouldOpen('u1')).toBe(true)
    expect(await store.shouldOpen('u1')).toBe(false) // not again in this page load
    expect(fetchMock).toHaveBeenCalledTimes(1)
    expect(String(fetchMock.mock.calls[0][0])).toBe('/api/onboarding')

    fetchMock.mockResolvedValueOnce(json({ state: 'completed', show: false, has_models: true }))
    expect(await store.shouldOpen('u2')).toBe(false) // another user: asked again
    expect(store.state?.state).toBe('completed')
  })

  it('never blocks on an error, and records the state after an action', async () => {
    const store = useOnboardingStore()
    fetchMock.mockResolvedValueOnce(json({ code: 'upstream_error', message: 'boom' }, 500))
    expect(await store.shouldOpen('u1')).toBe(false)

    fetchMock.mockResolvedValueOnce(json({ state: 'skipped', show: false, has_models: false }))
    await store.act('skip')
    expect(String(fetchMock.mock.calls[1][0])).toBe('/api/onboarding/skip')
    expect(fetchMock.mock.calls[1][1]?.method).toBe('POST')
    expect(store.state).toEqual({ state: 'skipped', show: false, has_models: false })
  })
})
