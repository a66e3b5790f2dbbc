import type { KnowledgeDocumentStatus } from '@/api/types'

/** Still moving: worth polling for. Accepts a collection's status too ('indexing'). */
export function isActive(status: string | null | undefined): boolean {
  return status === 'queued' || status === 'indexing'
}

export const STATUS_TAG: Record<KnowledgeDocumentStatus, 'default' | 'info' | 'success' | 'error' | 'warning'> = {
  queued: 'default',
  indexing: 'info',
  ready: 'success',
  error: 'error',
  cancelled: 'warning',
}

/**
 * The model name in a catalog id (`ollama:<provider uuid>:<name>`, `openai:…`; a name with other characters
 * is `~<base64url>`), for showing a collection's embedding model the chat catalog does not list.
 */
export function modelNameOf(id: string | null | undefined): string {
  if (!id) return ''
  const m = /^[a-z]+:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:(.+)$/i.exec(id)
  if (!m) return id
  if (!m[1].startsWith('~')) return m[1]
  try {
    const b64 = m[1].slice(1).replace(/-/g, '+').replace(/_/g, '/')
    return new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))
  } catch {
    return id
  }
}
