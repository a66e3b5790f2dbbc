/** API shapes consumed by the UI (kept in step with the server's OpenAPI schema). */

export type Role = 'admin' | 'user'

export interface User {
  id: string | number
  email: string
  display_name: string | null
  role: Role
  is_active: boolean
  must_change_password: boolean
  created_at: string
  last_login_at: string | null
}

export interface TokenResponse {
  access_token: string
  token_type: 'bearer'
  expires_in: number
  user: User
}

export interface Page<T> {
  items: T[]
  total: number
  page: number
  size: number
}

export interface ProviderRef {
  id: string | number
  name: string
  kind: string
}

export interface ChatModel {
  id: string
  name: string
  provider: ProviderRef
  model: string
  capabilities: string[]
  source: 'ollama' | 'config'
}

export interface ConversationSummary {
  id: string
  title: string | null
  pinned: boolean
  model: string | null
  created_at: string
  updated_at: string
  snippet?: string
  highlights?: Array<[number, number]>
}

export type MessageStatus = 'streaming' | 'complete' | 'stopped' | 'error' | 'interrupted' | string

export interface Usage {
  prompt_tokens?: number
  completion_tokens?: number
  total_tokens?: number
  [k: string]: unknown
}

export interface Message {
  id: string
  parent_id: string | null
  role: 'user' | 'assistant' | 'system'
  content: string
  thinking?: string | null
  status: MessageStatus
  model?: string | null
  created_at: string
  usage?: Usage | null
  timings?: Record<string, number> | null
  error?: string | { code?: string; message?: string } | null
}

export interface ChatOptions {
  temperature?: number
  top_p?: number
  top_k?: number
  context_length?: number
  max_tokens?: number
  seed?: number
  [k: string]: unknown
}

export interface Conversation extends ConversationSummary {
  system_prompt?: string | null
  options?: ChatOptions | null
  messages: Message[]
}

export interface Provider {
  id: string | number
  name: string
  kind: 'ollama' | 'openai'
  base_url: string
  has_api_key: boolean
  api_key_masked: string | null
  is_default: boolean
  enabled: boolean
}

export type OllamaState = 'not_installed' | 'stopped' | 'starting' | 'running' | 'external' | 'crashed' | 'failed'

export interface OllamaStatus {
  state: OllamaState
  version: string | null
  url: string
  managed: boolean
  uptime_s: number | null
  restart_count: number
  last_error: string | null
}

export interface OllamaModel {
  name: string
  size: number
  family: string | null
  parameter_size: string | null
  quantization: string | null
  format: string | null
  digest: string
  modified_at: string
  capabilities?: string[]
}

export interface RunningModel {
  name: string
  size: number
  size_vram: number
  vram_share?: number
  pinned?: boolean
  expires_at: string | null
}

export interface PullProgress {
  name: string
  state?: 'running' | 'success' | 'error' | 'cancelled'
  error?: { code: string; message: string } | null
  status: string
  digest?: string | null
  total?: number | null
  completed?: number | null
  percent?: number | null
  bytes_per_s?: number | null
  eta_s?: number | null
  stalled?: boolean
}

export type Level = 'normal' | 'warning' | 'alert'

export interface Metrics {
  current: Record<string, number | string | null>
  status: Record<string, Level>
  thresholds: Record<string, unknown>
  history: Array<Record<string, number | string | null> & { ts: string | number }>
}

export interface Alert {
  id?: string | number
  key?: string
  level?: string
  metric?: string
  value?: number | string | null
  message: string
  since?: string
  until?: string | null
}

export interface LogLine {
  ts: string
  level: string
  logger: string
  message: string
}

export interface Backup {
  id: string
  created_at: string
  size: number
  sha256: string
  schema_revision: string | null
  app_version: string | null
  keep: boolean
  verified: boolean
}

export interface Readiness {
  status: 'ready' | 'not_ready'
  checks: Record<string, { ok: boolean; detail?: string | null }>
}

export interface LanInfo {
  enabled: boolean
  url: string | null
  host: string | null
  port: number | null
  addresses: string[]
}
