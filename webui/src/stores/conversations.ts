import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { conversationsApi } from '@/api/endpoints'
import type { ConversationSummary } from '@/api/types'

const PAGE_SIZE = 50

/** The signed-in user's conversations as the sidebar lists them (paged), and the search over them. */
export const useConversationsStore = defineStore('conversations', () => {
  const conversations = ref<ConversationSummary[]>([])
  const total = ref(0)
  const page = ref(0)
  const listLoading = ref(false)
  const listError = ref<unknown>(null)
  const hasMore = computed(() => conversations.value.length < total.value)

  async function loadConversations(reset = true) {
    if (listLoading.value && !reset) return
    listLoading.value = true
    listError.value = null
    try {
      const next = reset ? 1 : page.value + 1
      const r = await conversationsApi.list(next, PAGE_SIZE)
      total.value = r.total
      page.value = next
      conversations.value = reset
        ? r.items
        : [...conversations.value, ...r.items.filter((i) => !conversations.value.some((c) => c.id === i.id))]
    } catch (e) {
      listError.value = e
    } finally {
      listLoading.value = false
    }
  }

  const searchResults = ref<ConversationSummary[] | null>(null)
  const searching = ref(false)
  let searchSeq = 0
  async function search(q: string) {
    const seq = ++searchSeq
    if (!q.trim()) {
      searchResults.value = null
      return
    }
    searching.value = true
    try {
      const r = await conversationsApi.search(q.trim())
      if (seq === searchSeq) searchResults.value = r.items
    } catch (e) {
      if (seq === searchSeq) {
        searchResults.value = []
        listError.value = e
      }
    } finally {
      if (seq === searchSeq) searching.value = false
    }
  }

  /** Updates a listed conversation, or puts a new one at the top. */
  function upsert(s: Partial<ConversationSummary> & { id: string }) {
    const i = conversations.value.findIndex((c) => c.id === s.id)
    if (i >= 0) conversations.value[i] = { ...conversations.value[i], ...s }
    else {
      const now = new Date().toISOString()
      conversations.value.unshift({ title: null, pinned: false, model: null, created_at: now, updated_at: now, ...s })
      total.value++
    }
  }

  async function rename(id: string, title: string) {
    await conversationsApi.update(id, { title })
    upsert({ id, title })
  }

  async function setPinned(id: string, pinned: boolean) {
    await conversationsApi.update(id, { pinned })
    upsert({ id, pinned })
  }

  async function remove(id: string) {
    await conversationsApi.remove(id)
    conversations.value = conversations.value.filter((c) => c.id !== id)
    total.value = Math.max(0, total.value - 1)
    if (searchResults.value) searchResults.value = searchResults.value.filter((c) => c.id !== id)
  }

  return {
    conversations,
    total,
    hasMore,
    listLoading,
    listError,
    loadConversations,
    searchResults,
    searching,
    search,
    upsert,
    rename,
    setPinned,
    remove,
  }
})
