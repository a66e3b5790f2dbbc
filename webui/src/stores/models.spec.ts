import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import type { ChatModel } from '@/api/types'
import { isPreset, pickerOptions, useModelsStore } from './models'

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })

const ollama = { id: 'p1', name: 'Ollama (local)', kind: 'ollama' as const }
const remote = { id: 'p2', name: 'LM Studio', kind: 'openai' as const }
const model = (
  id: string,
  name: string,
  provider: ChatModel['provider'] = ollama,
  source: ChatModel['source'] = 'ollama',
): ChatModel => ({
  id,
  name,
  provider,
  model: name,
  capabilities: ['completion'],
  source,
  shared: source === 'config' ? true : null,
  defaults: { system_prompt: '', temperature: null, top_p: null, context_length: null, max_tokens: null, options: {} },
})
const llama = model('ollama:p1:llama3.2', 'llama3.2')
const qwen = model('ollama:p1:qwen3', 'qwen3')
const gpt = model('openai:p2:gpt', 'gpt', remote, 'openai')
const preset = { ...model('cfg:c1', 'Terse', ollama, 'config'), model: 'qwen3' }

describe('the chat picker options', () => {
  it('is flat for one provider and no presets', () => {
    expect(pickerOptions([llama, qwen], 'Presets')).toEqual([
      { label: 'llama3.2', value: llama.id },
      { label: 'qwen3', value: qwen.id },
    ])
  })

  it('puts presets in their own group first, beside the providers’ models', () => {
    const options = pickerOptions([preset, llama, gpt], 'Presets')
    expect(options.map((g) => ('type' in g ? [g.label, g.children.map((c) => c.label)] : g))).toEqual([
      ['Presets', ['Terse']],
      ['Ollama (local)', ['llama3.2']],
      ['LM Studio', ['gpt']],
    ])
    expect(isPreset(preset) && !isPreset(llama)).toBe(true)
  })

  it('names a host group’s models after the group, and puts routes in a group of their own', () => {
    const grouped = { ...model('group:farm:llama3.2', 'llama3.2'), group: 'farm', hosts: [ollama, remote] }
    const route = { ...model('route:r1', 'smart', remote, 'route'), hosts: [remote] }
    const options = pickerOptions([grouped, llama, route], 'Presets', 'Routes')
    expect(options.map((g) => ('type' in g ? [g.label, g.children.map((c) => c.value)] : g))).toEqual([
      ['farm', ['group:farm:llama3.2']],
      ['Ollama (local)', ['ollama:p1:llama3.2']],
      ['Routes', ['route:r1']],
    ])
  })
})

describe('models store', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(json({ items: [preset, llama, qwen, gpt], errors: [] })))
    localStorage.clear()
  })
  afterEach(() => vi.unstubAllGlobals())

  it('offers only listed models as a preset’s base, and finds the one a preset runs on', async () => {
    const models = useModelsStore()
    await models.load()
    expect(models.baseModels.map((m) => m.id)).toEqual([llama.id, qwen.id, gpt.id])
    expect(models.baseIdOf(preset)).toBe(qwen.id)
    expect(models.baseIdOf({ provider_id: 'p1', model: 'llama3.2' })).toBe(llama.id)
    expect(models.baseIdOf({ provider_id: 'p2', model: 'llama3.2' })).toBeNull()
  })
})
