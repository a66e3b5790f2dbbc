/** Thin typed wrappers over the server routes. */
import { http, rawRequest, downloadFile, buildUrl, type RequestOptions } from './http'
import type {
  Alert,
  AlertChannel,
  AlertChannelCreate,
  AlertChannelTestResult,
  AlertChannelUpdate,
  AlertEventPage,
  AuditAction,
  AuditOutcome,
  AuditPage,
  ApiKey,
  ApiKeyCreate,
  ApiKeyCreated,
  ApiKeySettings,
  AlertFeed,
  Backup,
  ChatModel,
  Conversation,
  ConversationSummary,
  LanInfo,
  LimitKind,
  LimitsRead,
  LimitsUpdate,
  LogLine,
  Metrics,
  ModelListError,
  OllamaModel,
  OllamaRuntime,
  OllamaStatus,
  Onboarding,
  Page,
  Provider,
  HostList,
  ModelRoute,
  KnowledgeCollection,
  KnowledgeCreate,
  KnowledgeDocument,
  KnowledgePassage,
  KnowledgeUpdate,
  Preset,
  PresetCreate,
  PresetUpdate,
  PullProgress,
  Readiness,
  RunningModel,
  SuggestedModelList,
  TokenResponse,
  UsageReport,
  User,
} from './types'

const enc = encodeURIComponent
const noRefresh: RequestOptions = { noRefresh: true }

export const authApi = {
  login: (email: string, password: string) =>
    http.post<TokenResponse>('/api/auth/login', { email, password }, { ...noRefresh, anonymous: true }),
  refresh: () => http.post<TokenResponse>('/api/auth/refresh', {}, { ...noRefresh, anonymous: true }),
  desktop: () => http.post<TokenResponse>('/api/auth/desktop', {}, { ...noRefresh, anonymous: true }),
  logout: () => http.post<void>('/api/auth/logout', {}, noRefresh),
  changePassword: (current_password: string, new_password: string) =>
    http.post<TokenResponse>('/api/auth/password', { current_password, new_password }),
  /** Desktop app only: the owner sets the still-initial password without knowing it. */
  desktopSetPassword: (new_password: string) =>
    http.post<TokenResponse>('/api/auth/desktop/password', { new_password }),
}

export const usersApi = {
  me: () => http.get<User>('/api/users/me'),
  updateMe: (display_name: string) => http.patch<User>('/api/users/me', { display_name }),
  list: (page: number, size: number) => http.get<Page<User>>('/api/users', { query: { page, size } }),
  create: (body: { email: string; password: string; display_name: string; role: string }) =>
    http.post<User>('/api/users', body),
  update: (id: User['id'], body: Partial<Pick<User, 'role' | 'is_active' | 'display_name'>>) =>
    http.patch<User>(`/api/users/${enc(String(id))}`, body),
  resetPassword: (id: User['id'], new_password: string) =>
    http.post<void>(`/api/users/${enc(String(id))}/password`, { new_password }),
  remove: (id: User['id']) => http.del<void>(`/api/users/${enc(String(id))}`),
}

export const healthApi = {
  live: () => http.get<{ status: string }>('/api/health', { anonymous: true, noRefresh: true }),
  ready: () => http.get<Readiness>('/api/health/ready'),
}

export const modelsApi = {
  list: () => http.get<{ items: ChatModel[]; errors?: ModelListError[] }>('/api/models'),
  /** The models with a capability (`embedding`: those that index knowledge collections). */
  withCapability: async (capability: string) => {
    const r = await http.get<{ items: ChatModel[] }>('/api/models', { query: { capability } })
    return (r.items ?? []).filter((m) => m.capabilities?.includes(capability))
  },
}

/** Presets (`/api/model-configs`): the shared ones and the caller's own. */
export const presetsApi = {
  list: () => http.get<Page<Preset>>('/api/model-configs', { query: { page: 1, size: 200 } }),
  create: (body: PresetCreate) => http.post<Preset>('/api/model-configs', body),
  update: (id: Preset['id'], body: PresetUpdate) => http.patch<Preset>(`/api/model-configs/${enc(String(id))}`, body),
  duplicate: (id: Preset['id']) => http.post<Preset>(`/api/model-configs/${enc(String(id))}/duplicate`, {}),
  remove: (id: Preset['id']) => http.del<void>(`/api/model-configs/${enc(String(id))}`),
}

export interface ChatRequest {
  model: string
  content: string
  conversation_id?: string
  parent_id?: string | null
  options?: Record<string, unknown>
  /** Stored file ids (`POST /api/files`): images and documents for this message. */
  attachments?: string[]
  /** The conversation's knowledge collections; left out = unchanged. */
  knowledge?: string[]
}

export interface RegenerateRequest {
  model?: string
  options?: Record<string, unknown>
  attachments?: string[]
  knowledge?: string[]
}

export const chatApi = {
  /** Starts a streamed chat turn; the caller reads the SSE body. */
  send: (body: ChatRequest, signal?: AbortSignal) =>
    rawRequest('POST', '/api/chat', { body, signal, headers: { Accept: 'text/event-stream' } }),
  regenerate: (messageId: string, body: RegenerateRequest, signal?: AbortSignal) =>
    rawRequest('POST', `/api/chat/${enc(messageId)}/regenerate`, {
      body,
      signal,
      headers: { Accept: 'text/event-stream' },
    }),
  stop: (messageId: string) => http.post<void>(`/api/chat/${enc(messageId)}/stop`, {}),
}

export const conversationsApi = {
  list: (page: number, size: number, q?: string) =>
    http.get<Page<ConversationSummary>>('/api/conversations', { query: { page, size, q } }),
  get: (id: string) => http.get<Conversation>(`/api/conversations/${enc(id)}`),
  update: (id: string, body: Partial<Pick<Conversation, 'title' | 'pinned' | 'system_prompt' | 'options' | 'model'>>) =>
    http.patch<ConversationSummary>(`/api/conversations/${enc(id)}`, body),
  remove: (id: string) => http.del<void>(`/api/conversations/${enc(id)}`),
  search: (q: string) => http.get<{ items: ConversationSummary[] }>('/api/conversations/search', { query: { q } }),
  exportOne: (id: string, format: 'json' | 'markdown') =>
    downloadFile(
      `/api/conversations/${enc(id)}/export?format=${format}`,
      `conversation-${id}.${format === 'json' ? 'json' : 'md'}`,
    ),
  exportAll: () => downloadFile('/api/conversations/export', 'conversations.json'),
  import: (data: unknown) => http.post<{ imported?: number; items?: unknown[] }>('/api/conversations/import', data),
}

/** Every provider's host with its health, load and loaded models (admin). */
export const hostsApi = {
  list: () => http.get<HostList>('/api/hosts'),
  probe: () => http.post<HostList>('/api/hosts/probe', {}),
}

/** Explicit routes: one model served by several (provider, model) targets (admin). */
export const routesApi = {
  list: async () => (await http.get<{ items: ModelRoute[] }>('/api/routes')).items,
  create: (body: Record<string, unknown>) => http.post<ModelRoute>('/api/routes', body),
  update: (id: ModelRoute['id'], body: Record<string, unknown>) =>
    http.patch<ModelRoute>(`/api/routes/${enc(String(id))}`, body),
  remove: (id: ModelRoute['id']) => http.del<void>(`/api/routes/${enc(String(id))}`),
}

export const providersApi = {
  list: async () => {
    const r = await http.get<{ items: Provider[] } | Provider[]>('/api/providers')
    return Array.isArray(r) ? r : r.items
  },
  create: (body: Record<string, unknown>) => http.post<Provider>('/api/providers', body),
  update: (id: Provider['id'], body: Record<string, unknown>) =>
    http.patch<Provider>(`/api/providers/${enc(String(id))}`, body),
  remove: (id: Provider['id']) => http.del<void>(`/api/providers/${enc(String(id))}`),
  test: (id: Provider['id']) =>
    http.post<{ ok: boolean; models: string[]; error?: { code: string; message: string } | null }>(
      `/api/providers/${enc(String(id))}/test`,
      {},
    ),
}

/** Which Ollama host a call is about: `?provider=<id>` (none: the server's default Ollama). */
export type OllamaHost = string | null | undefined
const at = (provider: OllamaHost, opts: RequestOptions = {}): RequestOptions => ({
  ...opts,
  query: { ...opts.query, provider: provider ?? undefined },
})

/** The fields of POST /api/ollama/models/create: a base model with fields, or a Modelfile. */
export interface OllamaCreateBody {
  name: string
  from?: string
  system?: string
  parameters?: Record<string, unknown>
  modelfile?: string
  quantize?: 'q4_K_M' | 'q4_K_S' | 'q8_0'
}

export const ollamaApi = {
  status: (provider?: OllamaHost) => http.get<OllamaStatus>('/api/ollama/status', at(provider)),
  action: (a: 'start' | 'stop' | 'restart') => http.post<OllamaStatus | void>(`/api/ollama/${a}`, {}),
  logs: (tail = 200) => http.get<{ lines: string[] }>('/api/ollama/logs', { query: { tail } }),
  models: (provider?: OllamaHost) => http.get<{ items: OllamaModel[] }>('/api/ollama/models', at(provider)),
  model: (name: string, provider?: OllamaHost) =>
    http.get<Record<string, unknown>>(`/api/ollama/models/${enc(name)}`, at(provider)),
  remove: (name: string, provider?: OllamaHost) => http.del<void>(`/api/ollama/models/${enc(name)}`, at(provider)),
  copy: (source: string, destination: string, provider?: OllamaHost) =>
    http.post<void>('/api/ollama/models/copy', { source, destination }, at(provider)),
  create: (body: OllamaCreateBody, provider?: OllamaHost) =>
    http.post<unknown>('/api/ollama/models/create', body, at(provider)),
  running: (provider?: OllamaHost) => http.get<{ items: RunningModel[] }>('/api/ollama/running', at(provider)),
  /** Loads a model into memory; `keepAlive` -1 pins it there. */
  load: (name: string, keepAlive?: number | string, provider?: OllamaHost) =>
    http.post<void>(
      `/api/ollama/running/${enc(name)}/load`,
      keepAlive === undefined ? {} : { keep_alive: keepAlive },
      at(provider),
    ),
  unload: (name: string, provider?: OllamaHost) =>
    http.post<void>(`/api/ollama/running/${enc(name)}/unload`, {}, at(provider)),
  pull: (name: string, signal?: AbortSignal, provider?: OllamaHost) =>
    rawRequest(
      'POST',
      '/api/ollama/pull',
      at(provider, { body: { name }, signal, headers: { Accept: 'text/event-stream' } }),
    ),
  pulls: async (provider?: OllamaHost) => {
    const r = await http.get<{ items: PullProgress[] } | PullProgress[]>('/api/ollama/pulls', at(provider))
    return Array.isArray(r) ? r : r.items
  },
  pullEvents: (name: string, signal?: AbortSignal, provider?: OllamaHost) =>
    rawRequest(
      'GET',
      `/api/ollama/pulls/${enc(name)}/events`,
      at(provider, { signal, headers: { Accept: 'text/event-stream' } }),
    ),
  cancelPull: (name: string, provider?: OllamaHost) => http.del<void>(`/api/ollama/pull/${enc(name)}`, at(provider)),
}

/** The Ollama runtime ModelTrain installs per user (admin). `install`/`update` answer an SSE stream. */
export const ollamaRuntimeApi = {
  get: (check = false) => http.get<OllamaRuntime>('/api/ollama/runtime', check ? { query: { check: true } } : {}),
  start: (kind: 'install' | 'update', signal?: AbortSignal) =>
    rawRequest('POST', `/api/ollama/runtime/${kind}`, { body: {}, signal, headers: { Accept: 'text/event-stream' } }),
  cancel: () => http.del<OllamaRuntime>('/api/ollama/runtime/install'),
}

export const opsApi = {
  metrics: () => http.get<Metrics>('/api/metrics'),
  alerts: async (): Promise<AlertFeed> => {
    const r = await http.get<(Partial<AlertFeed> & { items?: Alert[] }) | Alert[]>('/api/alerts')
    if (Array.isArray(r)) return { active: r, recent: [], instance: '', instances: [] }
    return {
      active: r.active ?? r.items ?? [],
      recent: r.recent ?? [],
      instance: r.instance ?? '',
      instances: r.instances ?? [],
    }
  },
  logs: (q: { tail?: number; level?: string; q?: string }) =>
    http.get<{ lines: LogLine[]; host?: string; instance?: string }>('/api/logs', { query: q }),
  backups: () => http.get<{ items: Backup[] }>('/api/backups'),
  createBackup: () => http.post<Backup>('/api/backups', {}),
  downloadBackup: (id: string) => downloadFile(`/api/backups/${enc(id)}/download`, `modeltrain-backup-${id}`),
  restoreBackup: (id: string) => http.post<unknown>(`/api/backups/${enc(id)}/restore`, {}),
  uploadRestore: (file: File) => {
    const fd = new FormData()
    fd.append('file', file, file.name)
    return http.post<unknown>('/api/backups/upload-restore', fd)
  },
  removeBackup: (id: string) => http.del<void>(`/api/backups/${enc(id)}`),
  keepBackup: (id: string, keep: boolean) => http.patch<Backup>(`/api/backups/${enc(id)}`, { keep }),
}

export const keysApi = {
  list: (userId?: string) => http.get<{ items: ApiKey[] }>(userId ? `/api/keys?user_id=${enc(userId)}` : '/api/keys'),
  create: (body: ApiKeyCreate) => http.post<ApiKeyCreated>('/api/keys', body),
  revoke: (id: string) => http.del<void>(`/api/keys/${enc(id)}`),
  settings: () => http.get<ApiKeySettings>('/api/keys/settings'),
  putSettings: (body: ApiKeySettings) => http.put<ApiKeySettings>('/api/keys/settings', body),
}

/** Limits: `null` = unlimited, a kind left out = unchanged. */
export const limitsApi = {
  mine: () => http.get<LimitsRead>('/api/users/me/limits'),
  user: (id: string) => http.get<LimitsRead>(`/api/users/${enc(id)}/limits`),
  putUser: (id: string, body: LimitsUpdate) => http.put<LimitsRead>(`/api/users/${enc(id)}/limits`, body),
  /** Drop a user's own limit of one kind: the role default applies again. */
  resetUser: (id: string, kind: LimitKind) => http.del<LimitsRead>(`/api/users/${enc(id)}/limits/${enc(kind)}`),
  key: (id: string) => http.get<LimitsRead>(`/api/keys/${enc(id)}/limits`),
  putKey: (id: string, body: LimitsUpdate) => http.put<LimitsRead>(`/api/keys/${enc(id)}/limits`, body),
}

export interface UsageQuery {
  granularity?: 'raw' | 'day'
  from?: string
  to?: string
  user_id?: string
  key_id?: string
  model?: string
}

export const usageApi = {
  get: (q: UsageQuery) => http.get<UsageReport>('/api/usage', { query: { ...q } }),
  downloadCsv: (q: UsageQuery) => downloadFile(buildUrl('/api/usage.csv', { ...q }), 'modeltrain-usage.csv'),
}

export const lanApi = {
  get: () => http.get<LanInfo>('/api/lan'),
  put: (body: { enabled: boolean; host?: string; port?: number; password: string }) =>
    http.put<LanInfo>('/api/lan', body),
}

export const onboardingApi = {
  get: () => http.get<Onboarding>('/api/onboarding'),
  act: (action: 'complete' | 'skip' | 'reopen') => http.post<Onboarding>(`/api/onboarding/${action}`, {}),
  models: () => http.get<SuggestedModelList>('/api/onboarding/models'),
}

export interface AuditQuery {
  actor?: string
  action?: AuditAction[]
  target_kind?: string
  target_id?: string
  outcome?: AuditOutcome
  /** ISO 8601 times */
  from?: string
  to?: string
}

/** `?action=` repeats once per action; buildUrl handles single values only. */
function auditUrl(path: string, q: AuditQuery, page?: { limit: number; offset: number }): string {
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries({ ...q, ...page })) {
    if (Array.isArray(v)) v.forEach((a) => params.append(k, String(a)))
    else if (v !== undefined && v !== null && v !== '') params.set(k, String(v))
  }
  const qs = params.toString()
  return qs ? `${path}?${qs}` : path
}

export interface AlertHistoryQuery {
  level?: 'warning' | 'alert'
  state?: 'raised' | 'changed' | 'resolved'
  key?: string
  instance?: string
  /** ISO 8601 times */
  from?: string
  to?: string
}

export const alertsApi = {
  history: (q: AlertHistoryQuery, page: number, size: number) =>
    http.get<AlertEventPage>('/api/alerts/history', { query: { ...q, page, size } }),
  channels: () => http.get<{ items: AlertChannel[] }>('/api/alerts/channels'),
  createChannel: (body: AlertChannelCreate) => http.post<AlertChannel>('/api/alerts/channels', body),
  updateChannel: (id: string, body: AlertChannelUpdate) =>
    http.patch<AlertChannel>(`/api/alerts/channels/${enc(id)}`, body),
  removeChannel: (id: string) => http.del<void>(`/api/alerts/channels/${enc(id)}`),
  testChannel: (id: string) => http.post<AlertChannelTestResult>(`/api/alerts/channels/${enc(id)}/test`, {}),
}

export const auditApi = {
  list: (q: AuditQuery, limit: number, offset: number) =>
    http.get<AuditPage>(auditUrl('/api/audit', q, { limit, offset })),
  downloadCsv: (q: AuditQuery) => downloadFile(auditUrl('/api/audit.csv', q), 'modeltrain-audit.csv'),
}

/** Knowledge collections (`/api/knowledge`): the caller's own and the shared ones; documents index in the background. */
export const knowledgeApi = {
  list: () => http.get<KnowledgeCollection[]>('/api/knowledge'),
  get: (id: string) => http.get<KnowledgeCollection>(`/api/knowledge/${enc(id)}`),
  create: (body: KnowledgeCreate) => http.post<KnowledgeCollection>('/api/knowledge', body),
  update: (id: string, body: KnowledgeUpdate) => http.patch<KnowledgeCollection>(`/api/knowledge/${enc(id)}`, body),
  remove: (id: string) => http.del<void>(`/api/knowledge/${enc(id)}`),
  documents: (id: string) => http.get<KnowledgeDocument[]>(`/api/knowledge/${enc(id)}/documents`),
  addDocuments: (id: string, fileIds: string[]) =>
    http.post<KnowledgeDocument[]>(`/api/knowledge/${enc(id)}/documents`, { file_ids: fileIds }),
  removeDocument: (id: string, fileId: string) => http.del<void>(`/api/knowledge/${enc(id)}/documents/${enc(fileId)}`),
  reindex: (id: string) => http.post<KnowledgeCollection>(`/api/knowledge/${enc(id)}/reindex`, {}),
  cancel: (id: string) => http.post<KnowledgeCollection>(`/api/knowledge/${enc(id)}/cancel`, {}),
  search: (id: string, query: string, limit = 5) =>
    http.post<KnowledgePassage[]>(`/api/knowledge/${enc(id)}/search`, { query, limit }),
}
