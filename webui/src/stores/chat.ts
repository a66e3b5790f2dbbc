import { defineStore } from 'pinia'
import { computed, ref, shallowRef, triggerRef } from 'vue'
import { chatApi, conversationsApi, type ChatRequest, type RegenerateRequest } from '@/api/endpoints'
import { ApiError } from '@/api/http'
import { parseData, readSse, type SseEvent } from '@/api/sse'
import type {
  ChatOptions,
  ChatStreamData,
  Citation,
  Conversation,
  FileRead,
  Message,
  MessageAttachment,
} from '@/api/types'
import { buildTree, currentPath, selectBranchOf, siblingInfo, parentKey } from './chatTree'
import { useConversationsStore } from './conversations'
import { useModelsStore } from './models'

/** A file to send with a message: just uploaded (FileRead) or kept from an earlier message. */
export type OutgoingFile = Pick<FileRead, 'id' | 'name' | 'mime' | 'size'> & { kind?: FileRead['kind'] }

function asAttachment(f: OutgoingFile): MessageAttachment {
  return {
    id: f.id,
    name: f.name,
    mime: f.mime,
    size: f.size,
    kind: f.kind === 'image' || (!f.kind && f.mime.startsWith('image/')) ? 'image' : 'document',
  }
}

/** The numbered sources a stream event may carry (`meta` or `done`, or the saved message in `done`). */
function citationsOf(v: unknown): Citation[] | null {
  const c = v && typeof v === 'object' ? (v as { citations?: unknown }).citations : undefined
  return Array.isArray(c) ? (c as Citation[]) : null
}

let tmpSeq = 0
const tmpId = (kind: string) => `tmp-${kind}-${++tmpSeq}`

interface StreamState {
  assistantId: string
  controller: AbortController
  stopRequested: boolean
}

/** The open conversation: its messages and branches, and the reply being streamed into it. */
export const useChatStore = defineStore('chat', () => {
  const list = useConversationsStore()

  const current = ref<Conversation | null>(null)
  const messages = ref<Message[]>([])
  const selected = ref<Record<string, string>>({})
  const loading = ref(false)
  const loadError = ref<unknown>(null)
  /** Settings chosen before the first message of a new conversation. */
  const draftSystemPrompt = ref('')
  const draftOptions = ref<ChatOptions>({})
  /** The knowledge collections the open (or the next new) conversation uses. */
  const knowledge = ref<string[]>([])
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
    knowledge.value = []
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
      knowledge.value = Array.isArray(c.knowledge) ? [...c.knowledge] : []
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

  /** A title the server gave a conversation (the `title` stream event) or the user set. */
  function applyTitle(id: string, title: string) {
    list.upsert({ id, title })
    if (current.value?.id === id) current.value = { ...current.value, title }
  }

  async function refreshSummary(id: string) {
    try {
      const c = await conversationsApi.get(id)
      list.upsert({ id, title: c.title, pinned: c.pinned, updated_at: c.updated_at, model: c.model })
      if (current.value?.id === id) current.value = { ...current.value, title: c.title }
    } catch {
      /* not important */
    }
  }

  // ---- streaming ----------------------------------------------------------------------------
  function requestOptions(): ChatOptions | undefined {
    const o = { ...(current.value?.options ?? draftOptions.value ?? {}) }
    for (const k of Object.keys(o)) if (o[k] === null || o[k] === undefined || o[k] === '') delete o[k]
    return Object.keys(o).length ? o : undefined
  }

  /**
   * Streams one reply (events: meta, delta..., then done or error, then possibly title). Resolves when the
   * reply has ended (done, error, or the stream failed); a `title` that follows `done` for a new
   * conversation is still read afterwards and updates the list.
   */
  async function runStream(open: (signal: AbortSignal) => Promise<Response>, tmpUser: string | null, tmpAsst: string) {
    const controller = new AbortController()
    const st: StreamState = { assistantId: tmpAsst, controller, stopRequested: false }
    stream.value = st
    let asstId = tmpAsst
    let finished = false
    let createdConversation: string | null = null
    let titled = false
    let replyEnded!: () => void
    const ended = new Promise<void>((resolve) => (replyEnded = resolve))
    const asst = () => find(asstId)

    function onMeta(meta: ChatStreamData<'meta'>) {
      if (tmpUser) {
        const u = find(tmpUser)
        if (u) u.id = meta.user_message_id
        const a = find(tmpAsst)
        if (a) a.parent_id = meta.user_message_id
      }
      // how the prompt's files are used (image, whole document, passages)
      const u = find(meta.user_message_id)
      if (u && meta.attachments?.length) u.attachments = meta.attachments
      const a = find(tmpAsst)
      if (a) {
        a.id = meta.assistant_message_id
        const cites = citationsOf(meta)
        if (cites) a.citations = cites
      }
      asstId = meta.assistant_message_id
      st.assistantId = asstId
      triggerRef(stream)
      if (st.stopRequested) void chatApi.stop(asstId).catch(() => controller.abort())
      selected.value = selectBranchOf(tree.value, {}, asstId)
      if (!current.value) {
        createdConversation = meta.conversation_id
        const now = new Date().toISOString()
        current.value = {
          id: meta.conversation_id,
          title: null,
          pinned: false,
          model: useModelsStore().selectedId,
          created_at: now,
          updated_at: now,
          system_prompt: draftSystemPrompt.value || null,
          options: { ...draftOptions.value },
          knowledge: [...knowledge.value],
          messages: [],
        }
        list.upsert({ id: meta.conversation_id })
        if (draftSystemPrompt.value) {
          void conversationsApi.update(meta.conversation_id, { system_prompt: draftSystemPrompt.value }).catch(() => {})
        }
      }
    }

    function onDone(d: ChatStreamData<'done'>) {
      const a = asst()
      if (!a) return
      const m = d.message ?? {}
      if (m.id && m.id !== a.id) {
        a.id = m.id
        asstId = m.id
      }
      if ('content' in m) {
        // the message as saved (read defensively: a proxy or an older server may send less)
        if (typeof m.content === 'string') a.content = m.content
        if (m.thinking !== undefined) a.thinking = m.thinking
        if (m.model) a.model = m.model
        if (m.served_by) a.served_by = m.served_by // a routed model: the host that answered
      }
      const cites = citationsOf(m) ?? citationsOf(d)
      if (cites) a.citations = cites
      a.status = m.status ?? 'complete'
      a.usage = d.usage ?? a.usage
      if (d.timings) timings.value = { ...timings.value, [a.id]: d.timings }
    }

    function onEvent(ev: SseEvent) {
      if (ev.event === 'meta') {
        const meta = parseData<ChatStreamData<'meta'>>(ev)
        if (meta) onMeta(meta)
      } else if (ev.event === 'delta') {
        const d = parseData<ChatStreamData<'delta'>>(ev)
        const a = asst()
        if (!d || !a) return
        if (d.content) a.content += d.content
        if (d.thinking) a.thinking = (a.thinking ?? '') + d.thinking
      } else if (ev.event === 'done') {
        finished = true
        const d = parseData<ChatStreamData<'done'>>(ev)
        if (d) onDone(d)
        else {
          const a = asst()
          if (a) a.status = 'complete'
        }
        replyEnded()
      } else if (ev.event === 'error') {
        finished = true
        const d = parseData<ChatStreamData<'error'>>(ev)
        const a = asst()
        if (a) {
          a.status = 'error'
          a.error = { code: d?.code, message: d?.message }
        }
        replyEnded()
      } else if (ev.event === 'title') {
        const d = parseData<ChatStreamData<'title'>>(ev)
        if (d) {
          titled = true
          applyTitle(d.conversation_id, d.title)
        }
      }
    }

    const reading = (async () => {
      const res = await open(controller.signal)
      const ct = res.headers.get('Content-Type') || ''
      if (!ct.includes('text/event-stream')) throw new ApiError(res.status, 'bad_stream', 'unexpected response')
      await readSse(res, onEvent, controller.signal)
    })()
    // When the stream ends, a new conversation that got no title event is read once for the one it has.
    void reading
      .catch(() => {})
      .then(() => {
        if (createdConversation && !titled) void refreshSummary(createdConversation)
      })

    try {
      await Promise.race([reading, ended])
    } catch (e) {
      const a = asst()
      if (a && !controller.signal.aborted) {
        a.status = 'error'
        // a 429 keeps the limit it names (detail) so the message can say which, and when it renews
        a.error =
          e instanceof ApiError
            ? { code: e.code, message: e.message, detail: e.detail, retry_after: e.retryAfter }
            : { message: String(e) }
      }
    } finally {
      const a = asst()
      if (a && !finished && a.status === 'streaming')
        a.status = st.stopRequested || controller.signal.aborted ? 'stopped' : 'interrupted'
      if (stream.value === st) stream.value = null
      if (current.value) list.upsert({ id: current.value.id, updated_at: new Date().toISOString() })
    }
  }

  function addLocal(m: Omit<Message, 'created_at' | 'status'> & Partial<Pick<Message, 'status'>>): Message {
    const msg: Message = {
      status: 'complete',
      created_at: new Date().toISOString(),
      thinking: null,
      usage: null,
      error: null,
      ...m,
    }
    messages.value.push(msg)
    return msg
  }

  /**
   * Sends a user message; `parentId` undefined = continue the shown path, null = new root. `files`: stored
   * uploads sent as `attachments` (a message may be files alone).
   */
  async function send(content: string, parentId?: string | null, files: OutgoingFile[] = []) {
    const models = useModelsStore()
    if (isStreaming.value || (!content.trim() && !files.length) || !models.selectedId) return
    const leaf = path.value[path.value.length - 1]
    const parent = parentId === undefined ? (leaf?.id ?? null) : parentId
    const u = addLocal({
      id: tmpId('u'),
      parent_id: parent,
      role: 'user',
      content,
      attachments: files.length ? files.map(asAttachment) : null,
    })
    const a = addLocal({
      id: tmpId('a'),
      parent_id: u.id,
      role: 'assistant',
      content: '',
      status: 'streaming',
      model: models.selected?.name,
    })
    selected.value = selectBranchOf(tree.value, selected.value, a.id)
    const body: ChatRequest = { model: models.selectedId, content }
    if (current.value) {
      body.conversation_id = current.value.id
      body.parent_id = parent
    }
    const options = requestOptions()
    if (options) body.options = options
    if (files.length) body.attachments = files.map((f) => f.id)
    if (knowledge.value.length || current.value?.knowledge?.length) body.knowledge = [...knowledge.value]
    await runStream((signal) => chatApi.send(body, signal), u.id, a.id)
  }

  /** Edit = a new user message beside the edited one (same parent), answered afresh. */
  async function edit(m: Message, content: string) {
    if (m.role !== 'user') return
    // the edited message keeps its files
    await send(content, m.parent_id && tree.value.byId.has(m.parent_id) ? m.parent_id : null, m.attachments ?? [])
  }

  /** Continue a reply cut off mid-stream: a new prompt (`prompt`, in the user's language) after it, so the
   * model sees its partial text and goes on from there. */
  async function continueReply(m: Message, prompt: string) {
    if (isStreaming.value || m.role !== 'assistant' || m.id.startsWith('tmp-')) return
    await send(prompt, m.id)
  }

  async function regenerate(m: Message) {
    const models = useModelsStore()
    if (isStreaming.value || m.role !== 'assistant' || m.id.startsWith('tmp-')) return
    const a = addLocal({
      id: tmpId('a'),
      parent_id: m.parent_id,
      role: 'assistant',
      content: '',
      status: 'streaming',
      model: models.selected?.name,
    })
    selected.value = selectBranchOf(tree.value, selected.value, a.id)
    const body: RegenerateRequest = {}
    if (models.selectedId) body.model = models.selectedId
    const options = requestOptions()
    if (options) body.options = options
    // the question keeps its files on the server (attachments here would add more)
    if (knowledge.value.length || current.value?.knowledge?.length) body.knowledge = [...knowledge.value]
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

  // ---- actions on conversations that may be the open one ----------------------------------------
  async function rename(id: string, title: string) {
    await list.rename(id, title)
    if (current.value?.id === id) current.value = { ...current.value, title }
  }

  async function remove(id: string) {
    await list.remove(id)
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

  /** Chooses the collections the conversation uses; an open conversation keeps them (sent with the next message). */
  function setKnowledge(ids: string[]) {
    knowledge.value = [...ids]
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
    current,
    currentId,
    messages,
    selected,
    loading,
    loadError,
    tree,
    path,
    timings,
    draftSystemPrompt,
    draftOptions,
    knowledge,
    setKnowledge,
    stream,
    isStreaming,
    newChat,
    open,
    siblings,
    showSibling,
    send,
    edit,
    regenerate,
    continueReply,
    stop,
    rename,
    remove,
    saveSettings,
    setModel,
    parentKey,
  }
})
