import { defineStore } from 'pinia'
import { computed, ref, shallowRef, triggerRef } from 'vue'
import { chatApi, conversationsApi, type ChatRequest } from '@/api/endpoints'
import { ApiError } from '@/api/http'
import { parseData, readSse } from '@/api/sse'
import type { ChatOptions, Conversation, ConversationSummary, Message } from '@/api/types'
import { buildTree, currentPath, selectBranchOf, siblingInfo, parentKey } from './chatTree'
import { useModelsStore } from './models'

const PAGE_SIZE = 50
let tmpSeq = 0
const tmpId = (kind: string) => `tmp-${kind}-${++tmpSeq}`

interface StreamState {
  assistantId: string
  controller: AbortController
  stopRequested: boolean
}

interface DonePayload {
  message?: Partial<Message>
  usage?: Message['usage']
  timings?: Record<string, number>
}

export const useChatStore = defineStore('chat', () => {
  // ---- conversation list -------------------------------------------------------------
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
      conversations.value = reset ? r.items : [...conversations.value, ...r.items.filter((i) => !conversations.value.some((c) => c.id === i.id))]
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

  // ---- the open conversation ------------------------------------------------------------
  const current = ref<Conversation | null>(null)
  const messages = ref<Message[]>([])
  const selected = ref<Record<string, string>>({})
  const loading = ref(false)
  const loadError = ref<unknown>(null)
  /** Settings chosen before the first message of a new conversation. */
  const draftSystemPrompt = ref('')
  const draftOptions = ref<ChatOptions>({})
  const timings = shallowRef<Record<string, Record<string, number>>>({})

  const tree = computed(() => buildTree(messages.value))
  const path = computed(() => currentPath(tree.value, selected.value))
  const currentId = computed(() => current.value?.id ?? null)

  const stream = shallowRef<StreamState | null>(null)
  const isStreaming = computed(() => stream.value !== null)

  function newChat() {
    if (isStreaming.value) return
    current.value = null
    messages.value = []
    selected.value = {}
    loadError.value = null
    draftSystemPrompt.value = ''
    draftOptions.value = {}
  }

  let openSeq = 0
  async function open(id: string) {
    if (current.value?.id === id && messages.value.length) return
    const seq = ++openSeq
    loading.value = true
    loadError.value = null
    try {
      const c = await conversationsApi.get(id)
      if (seq !== openSeq) return
      current.value = { ...c, messages: [] }
      messages.value = c.messages ?? []
      selected.value = {}
      useModelsStore().selectMatching(c.model)
    } catch (e) {
      if (seq !== openSeq) return
      current.value = null
      messages.value = []
      loadError.value = e
    } finally {
      if (seq === openSeq) loading.value = false
    }
  }

  function siblings(m: Message) {
    return siblingInfo(tree.value, m)
  }

  function showSibling(id: string) {
    selected.value = selectBranchOf(tree.value, selected.value, id)
  }

  function find(id: string) {
    return messages.value.find((m) => m.id === id)
  }

  function upsertSummary(s: Partial<ConversationSummary> & { id: string }) {
    const i = conversations.value.findIndex((c) => c.id === s.id)
    if (i >= 0) conversations.value[i] = { ...conversations.value[i], ...s }
    else {
      const now = new Date().toISOString()
      conversations.value.unshift({ title: null, pinned: false, model: null, created_at: now, updated_at: now, ...s })
      total.value++
    }
  }

  // ---- streaming ----------------------------------------------------------------------------
  function requestOptions(): ChatOptions | undefined {
    const o = { ...(current.value?.options ?? draftOptions.value ?? {}) }
    for (const k of Object.keys(o)) if (o[k] === null || o[k] === undefined || o[k] === '') delete o[k]
    return Object.keys(o).length ? o : undefined
  }

  async function runStream(open: (signal: AbortSignal) => Promise<Response>, tmpUser: string | null, tmpAsst: string) {
    const controller = new AbortController()
    const st: StreamState = { assistantId: tmpAsst, controller, stopRequested: false }
    stream.value = st
    let asstId = tmpAsst
    let finished = false
    let createdConversation = false
    const asst = () => find(asstId)
    try {
      const res = await open(controller.signal)
      const ct = res.headers.get('Content-Type') || ''
      if (!ct.includes('text/event-stream')) throw new ApiError(res.status, 'bad_stream', 'unexpected response')
      await readSse(
        res,
        (ev) => {
          if (ev.event === 'meta') {
            const meta = parseData<{ conversation_id: string; user_message_id?: string; assistant_message_id?: string }>(ev)
            if (!meta) return
            if (tmpUser && meta.user_message_id) {
              const u = find(tmpUser)
              if (u) u.id = meta.user_message_id
              const a = find(tmpAsst)
              if (a) a.parent_id = meta.user_message_id
            }
            if (meta.assistant_message_id) {
              const a = find(tmpAsst)
              if (a) a.id = meta.assistant_message_id
              asstId = meta.assistant_message_id
              st.assistantId = asstId
              triggerRef(stream)
              if (st.stopRequested) void chatApi.stop(asstId).catch(() => controller.abort())
            }
            selected.value = selectBranchOf(tree.value, {}, asstId)
            if (!current.value) {
              createdConversation = true
              current.value = {
                id: meta.conversation_id, title: null, pinned: false, model: useModelsStore().selectedId,
                created_at: new Date().toISOString(), updated_at: new Date().toISOString(),
                system_prompt: draftSystemPrompt.value || null, options: { ...draftOptions.value }, messages: [],
              }
              upsertSummary({ id: meta.conversation_id })
              if (draftSystemPrompt.value) {
                void conversationsApi.update(meta.conversation_id, { system_prompt: draftSystemPrompt.value }).catch(() => {})
              }
            }
          } else if (ev.event === 'delta') {
            const d = parseData<{ content?: string; thinking?: string }>(ev)
            const a = asst()
            if (!d || !a) return
            if (d.content) a.content += d.content
            if (d.thinking) a.thinking = (a.thinking ?? '') + d.thinking
          } else if (ev.event === 'done') {
            finished = true
            const d = parseData<DonePayload>(ev)
            const a = asst()
            if (a && d) {
              const m = d.message ?? {}
              if (m.id && m.id !== a.id) {
                a.id = m.id
                asstId = m.id
              }
              if (typeof m.content === 'string') a.content = m.content
              if (m.thinking !== undefined) a.thinking = m.thinking
              a.status = m.status ?? 'complete'
              if (m.model) a.model = m.model
              a.usage = d.usage ?? m.usage ?? a.usage
              if (d.timings) timings.value = { ...timings.value, [a.id]: d.timings }
            } else if (a) a.status = 'complete'
          } else if (ev.event === 'error') {
            finished = true
            const d = parseData<{ code?: string; message?: string }>(ev)
            const a = asst()
            if (a) {
              a.status = 'error'
              a.error = { code: d?.code, message: d?.message }
            }
          }
        },
        controller.signal,
      )
    } catch (e) {
      const a = asst()
      if (a && !controller.signal.aborted) {
        a.status = 'error'
        a.error = e instanceof ApiError ? { code: e.code, message: e.message } : { message: String(e) }
      }
    } finally {
      const a = asst()
      if (a && !finished && a.status === 'streaming') a.status = st.stopRequested || controller.signal.aborted ? 'stopped' : 'interrupted'
      stream.value = null
      if (current.value) {
        upsertSummary({ id: current.value.id, updated_at: new Date().toISOString() })
        // the server titles a new conversation after the first exchange
        if (createdConversation) {
          const id = current.value.id
          setTimeout(() => void refreshSummary(id), 1500)
          setTimeout(() => void refreshSummary(id), 6000)
        }
      }
    }
  }

  async function refreshSummary(id: string) {
    try {
      const c = await conversationsApi.get(id)
      upsertSummary({ id, title: c.title, pinned: c.pinned, updated_at: c.updated_at, model: c.model })
      if (current.value?.id === id) current.value = { ...current.value, title: c.title }
    } catch {
      /* not important */
    }
  }

  function addLocal(m: Omit<Message, 'created_at' | 'status'> & Partial<Pick<Message, 'status'>>): Message {
    const msg: Message = { status: 'complete', created_at: new Date().toISOString(), thinking: null, usage: null, error: null, ...m }
    messages.value.push(msg)
    return msg
  }

  /** Sends a user message; `parentId` undefined = continue the shown path, null = new root. */
  async function send(content: string, parentId?: string | null) {
    const models = useModelsStore()
    if (isStreaming.value || !content.trim() || !models.selectedId) return
    const leaf = path.value[path.value.length - 1]
    const parent = parentId === undefined ? (leaf?.id ?? null) : parentId
    const u = addLocal({ id: tmpId('u'), parent_id: parent, role: 'user', content })
    const a = addLocal({ id: tmpId('a'), parent_id: u.id, role: 'assistant', content: '', status: 'streaming', model: models.selected?.name })
    selected.value = selectBranchOf(tree.value, selected.value, a.id)
    const body: ChatRequest = { model: models.selectedId, content }
    if (current.value) {
      body.conversation_id = current.value.id
      body.parent_id = parent
    }
    const options = requestOptions()
    if (options) body.options = options
    await runStream((signal) => chatApi.send(body, signal), u.id, a.id)
  }

  /** Edit = a new user message beside the edited one (same parent), answered afresh. */
  async function edit(m: Message, content: string) {
    if (m.role !== 'user') return
    await send(content, m.parent_id && tree.value.byId.has(m.parent_id) ? m.parent_id : null)
  }

  async function regenerate(m: Message) {
    const models = useModelsStore()
    if (isStreaming.value || m.role !== 'assistant' || m.id.startsWith('tmp-')) return
    const a = addLocal({ id: tmpId('a'), parent_id: m.parent_id, role: 'assistant', content: '', status: 'streaming', model: models.selected?.name })
    selected.value = selectBranchOf(tree.value, selected.value, a.id)
    const body: { model?: string; options?: ChatOptions } = {}
    if (models.selectedId) body.model = models.selectedId
    const options = requestOptions()
    if (options) body.options = options
    await runStream((signal) => chatApi.regenerate(m.id, body, signal), null, a.id)
  }

  async function stop() {
    const st = stream.value
    if (!st) return
    st.stopRequested = true
    if (st.assistantId.startsWith('tmp-')) {
      // no server id yet: closing the connection is the stop signal
      setTimeout(() => st.controller.abort(), 1500)
      return
    }
    try {
      await chatApi.stop(st.assistantId)
    } catch {
      st.controller.abort()
      return
    }
    // the server ends the stream with `done`; do not wait forever for it
    setTimeout(() => {
      if (stream.value?.controller === st.controller) st.controller.abort()
    }, 3000)
  }

  // ---- conversation actions --------------------------------------------------------------------
  async function rename(id: string, title: string) {
    await conversationsApi.update(id, { title })
    upsertSummary({ id, title })
    if (current.value?.id === id) current.value = { ...current.value, title }
  }

  async function setPinned(id: string, pinned: boolean) {
    await conversationsApi.update(id, { pinned })
    upsertSummary({ id, pinned })
  }

  async function remove(id: string) {
    await conversationsApi.remove(id)
    conversations.value = conversations.value.filter((c) => c.id !== id)
    total.value = Math.max(0, total.value - 1)
    if (searchResults.value) searchResults.value = searchResults.value.filter((c) => c.id !== id)
    if (current.value?.id === id) newChat()
  }

  async function saveSettings(systemPrompt: string, options: ChatOptions) {
    if (!current.value) {
      draftSystemPrompt.value = systemPrompt
      draftOptions.value = options
      return
    }
    await conversationsApi.update(current.value.id, { system_prompt: systemPrompt || null, options })
    current.value = { ...current.value, system_prompt: systemPrompt || null, options }
  }

  async function setModel(modelId: string) {
    useModelsStore().select(modelId)
    if (current.value) {
      try {
        await conversationsApi.update(current.value.id, { model: modelId })
      } catch {
        /* the model is also sent with each message */
      }
    }
  }

  return {
    conversations, total, hasMore, listLoading, listError, loadConversations,
    searchResults, searching, search,
    current, currentId, messages, selected, loading, loadError, tree, path, timings,
    draftSystemPrompt, draftOptions,
    stream, isStreaming,
    newChat, open, siblings, showSibling, send, edit, regenerate, stop,
    rename, setPinned, remove, saveSettings, setModel, parentKey,
  }
})
