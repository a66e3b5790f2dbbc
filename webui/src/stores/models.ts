import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { modelsApi } from '@/api/endpoints'
import type { ChatModel, ModelListError } from '@/api/types'

const KEY = 'modeltrain.model'

// type aliases, not interfaces: Naive UI's option types need the implicit index signature
export type PickerOption = { label: string; value: string }
export type PickerGroup = { type: 'group'; label: string; key: string; children: PickerOption[] }

/** Whether a catalog entry is a preset (a model configuration) rather than a model a provider lists. */
export const isPreset = (m: ChatModel) => m.source === 'config'

/**
 * The chat picker's options: presets in a group of their own (first), then the models of each provider. A host
 * group's models (served by several hosts) are in a group named after it, explicit routes in one of their own. A
 * single group of models (no presets, one provider) is shown flat.
 */
export function pickerOptions(
  items: ChatModel[],
  presetsLabel: string,
  routesLabel = 'Routes',
): PickerOption[] | PickerGroup[] {
  const presets: PickerGroup = { type: 'group', label: presetsLabel, key: 'presets', children: [] }
  const groups = new Map<string, PickerGroup>()
  for (const m of items) {
    if (isPreset(m)) {
      presets.children.push({ label: m.name, value: m.id })
      continue
    }
    const key = m.group ? `group:${m.group}` : m.source === 'route' ? 'routes' : String(m.provider?.id ?? 'default')
    const label = m.group ?? (m.source === 'route' ? routesLabel : (m.provider?.name ?? key))
    let g = groups.get(key)
    if (!g) groups.set(key, (g = { type: 'group', label, key, children: [] }))
    g.children.push({ label: m.name, value: m.id })
  }
  const list = [...groups.values()]
  if (!presets.children.length) return list.length === 1 ? list[0].children : list
  return [presets, ...list]
}

/** Models the current user can chat with (GET /api/models) and the one picked in the composer. */
export const useModelsStore = defineStore('models', () => {
  const items = ref<ChatModel[]>([])
  const loading = ref(false)
  const loaded = ref(false)
  const error = ref<unknown>(null)
  /** Providers that could not list their models (e.g. Ollama not running). */
  const providerErrors = ref<ModelListError[]>([])
  const selectedId = ref<string | null>(localStorage.getItem(KEY))

  const selected = computed(() => items.value.find((m) => m.id === selectedId.value) ?? null)
  /** What a preset can be based on: the models providers list (not other presets). */
  const baseModels = computed(() => items.value.filter((m) => !isPreset(m)))

  /** The catalog id of the listed model a preset (or any entry) runs on, or null when it is not listed. */
  function baseIdOf(m: Pick<ChatModel, 'model'> & { provider_id?: string; provider?: { id: string } }) {
    const pid = m.provider_id ?? m.provider?.id
    return baseModels.value.find((b) => b.provider.id === pid && b.model === m.model)?.id ?? null
  }

  function select(id: string | null) {
    selectedId.value = id
    try {
      if (id) localStorage.setItem(KEY, id)
      else localStorage.removeItem(KEY)
    } catch {
      /* ignore */
    }
  }

  async function load() {
    loading.value = true
    error.value = null
    try {
      const r = await modelsApi.list()
      items.value = r.items ?? []
      providerErrors.value = r.errors ?? []
      if (!selected.value && items.value.length) select(items.value[0].id)
    } catch (e) {
      error.value = e
    } finally {
      loading.value = false
      loaded.value = true
    }
  }

  /** Picks a model by id or by upstream model name (a conversation remembers one of them). */
  function selectMatching(ref: string | null | undefined) {
    if (!ref) return
    const m = items.value.find((x) => x.id === ref) ?? items.value.find((x) => x.model === ref || x.name === ref)
    if (m) select(m.id)
  }

  /** A readable name for a model reference stored on a message or conversation (an id or a name). */
  function displayName(ref: string | null | undefined): string {
    if (!ref) return ''
    const m = items.value.find((x) => x.id === ref)
    if (m) return m.name
    // opaque ids look like "ollama:<provider id>:<model>" or "cfg:<id>"
    const parts = /^ollama:[^:]+:(.+)$/.exec(ref)
    return parts ? parts[1] : ref
  }

  return {
    items,
    baseModels,
    baseIdOf,
    providerErrors,
    displayName,
    loading,
    loaded,
    error,
    selectedId,
    selected,
    select,
    load,
    selectMatching,
  }
})
