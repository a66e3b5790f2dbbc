import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { modelsApi } from '@/api/endpoints'
import type { ChatModel, ModelListError } from '@/api/types'

const KEY = 'modeltrain.model'

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
