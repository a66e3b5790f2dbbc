/**
 * The limits' display logic, kept free of components so it can be tested on its own: the bar of one limit,
 * the form's changes, and the sentence a chat shows when a 429 names a limit.
 */
import type { LimitItem, LimitKind, LimitsUpdate } from '@/api/types'
import { ApiError } from '@/api/http'
import { formatDateTime, formatRelative } from '@/composables/useFormat'

export const LIMIT_KINDS: readonly LimitKind[] = [
  'requests_per_minute',
  'tokens_per_minute',
  'tokens_per_day',
  'tokens_per_month',
  'concurrent_streams',
]

/** The error codes of a 429 that names a limit (`detail`: {limit, value, scope, resets_at, retry_after}). */
export const LIMIT_CODES = ['rate_limited', 'quota_exceeded', 'too_many_streams'] as const

/** Share of the limit used, 0..100 (null: unlimited or not counted). */
export function limitPercent(item: Pick<LimitItem, 'limit' | 'used'>): number | null {
  if (item.limit === null || item.limit === undefined || item.limit <= 0) return null
  const used = item.used ?? 0
  return Math.min(100, Math.max(0, (used / item.limit) * 100))
}

export type BarStatus = 'success' | 'warning' | 'error'

export function barStatus(item: Pick<LimitItem, 'limit' | 'used' | 'remaining'>): BarStatus {
  const p = limitPercent(item)
  if (p === null) return 'success'
  if (item.remaining === 0 || p >= 100) return 'error'
  return p >= 80 ? 'warning' : 'success'
}

/** The limits in a fixed order (the server's, with any unknown kind dropped). */
export function orderedLimits(items: readonly LimitItem[]): LimitItem[] {
  return LIMIT_KINDS.flatMap((k) => items.filter((i) => i.kind === k))
}

/** A user's limits (an administrator, from Users) or an API key's (its owner, from the key list). */
export interface LimitsTarget {
  kind: 'user' | 'key'
  id: string
  /** The user's e-mail or the key's name, for the title. */
  label: string
}

// --- the form -----------------------------------------------------------------------------------------

/** One field: a number, or null = unlimited (on a key: no key limit, the user's applies). */
export interface LimitField {
  kind: LimitKind
  value: number | null
  /** The value the field started from (what the server has as override / key limit). */
  initial: number | null
  /** Whether the subject has its own value (a user override, a key's limit) rather than the role default. */
  own: boolean
}

/** The fields of the form: a user's override (`mode: 'user'`) or a key's own limit (`mode: 'key'`). */
export function formFields(items: readonly LimitItem[], mode: 'user' | 'key'): LimitField[] {
  return orderedLimits(items).map((i) => {
    if (mode === 'key') return { kind: i.kind, value: i.key_limit ?? null, initial: i.key_limit ?? null, own: true }
    // a role default shows as the starting value; it is sent only when someone changes it
    return { kind: i.kind, value: i.user_limit, initial: i.user_limit, own: i.source === 'user' }
  })
}

/** Only the fields that changed: a kind left out stays as it is on the server (a role default stays one). */
export function formChanges(fields: readonly LimitField[]): LimitsUpdate {
  const out: LimitsUpdate = {}
  for (const f of fields) {
    const value = f.value === null ? null : Math.round(f.value)
    if (value !== f.initial) out[f.kind] = value
  }
  return out
}

// --- the chat's 429 -----------------------------------------------------------------------------------

export interface LimitHit {
  code: (typeof LIMIT_CODES)[number]
  kind: LimitKind
  value: number | null
  scope: 'user' | 'key'
  resetsAt: string | null
  retryAfter: number | null
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v)
}

/** The limit a failed reply hit, from an ApiError or the `{code, message, detail}` stored on the message. */
export function limitHit(error: unknown): LimitHit | null {
  let code: unknown
  let detail: unknown
  let retryAfter: number | null = null
  if (error instanceof ApiError) {
    code = error.code
    detail = error.detail
    retryAfter = error.retryAfter
  } else if (isRecord(error)) {
    code = error.code
    detail = error.detail
    if (typeof error.retry_after === 'number') retryAfter = error.retry_after
  } else return null
  if (typeof code !== 'string' || !(LIMIT_CODES as readonly string[]).includes(code) || !isRecord(detail)) return null
  const kind = detail.limit
  if (typeof kind !== 'string' || !(LIMIT_KINDS as readonly string[]).includes(kind)) return null
  return {
    code: code as LimitHit['code'],
    kind: kind as LimitKind,
    value: typeof detail.value === 'number' ? detail.value : null,
    scope: detail.scope === 'key' ? 'key' : 'user',
    resetsAt: typeof detail.resets_at === 'string' ? detail.resets_at : null,
    retryAfter: typeof detail.retry_after === 'number' ? detail.retry_after : retryAfter,
  }
}

type Translate = (key: string, params?: Record<string, unknown>) => string

/** "You have reached your limit of 1 requests per minute. It renews in 42 seconds (4 Dec 2026, 20:31)." */
export function limitHitText(hit: LimitHit, t: Translate, locale?: string, now = Date.now()): string {
  const kind = t(`limits.short.${hit.kind}`)
  const value = hit.value ?? '—'
  if (hit.kind === 'concurrent_streams') return t('limits.chatStreams', { value })
  const resets = hit.resetsAt ?? (hit.retryAfter !== null ? new Date(now + hit.retryAfter * 1000).toISOString() : null)
  const when = resets ? formatRelative(resets, locale, now) : '—'
  const at = resets ? formatDateTime(resets, locale) : '—'
  return t(hit.scope === 'key' ? 'limits.chatHitKey' : 'limits.chatHit', { value, kind, when, at })
}
