/**
 * The files attached in the composer before a message is sent: each uploads at once (with progress) to
 * `POST /api/files`; a refused one stays as a chip that says why until it is removed.
 */
import { computed, ref } from 'vue'
import { ApiError } from '@/api/http'
import { rememberLocalFile, uploadChatFile, type FileUpload } from '@/api/files'
import type { FileRead } from '@/api/types'
import { kindOf, type LocalKind } from './kinds'

export type PendingState = 'uploading' | 'ready' | 'error'

/** Why a file is refused: a code the component turns into a sentence (`attachments.errors.<code>`). */
export type RefusalCode = 'type' | 'size' | 'server' | 'network'

export interface PendingFile {
  key: number
  name: string
  size: number
  mime: string
  kind: LocalKind
  state: PendingState
  /** Bytes sent / size, 0..1 */
  progress: number
  stored: FileRead | null
  error: { code: RefusalCode; message?: string } | null
  /** An object URL of a local image, for its thumbnail. */
  preview: string | null
}

export type Uploader = typeof uploadChatFile

let seq = 0

export function usePendingFiles(getToken: () => string | null, upload: Uploader = uploadChatFile) {
  const files = ref<PendingFile[]>([])
  const uploads = new Map<number, FileUpload>()

  const uploading = computed(() => files.value.some((f) => f.state === 'uploading'))
  const ready = computed(() => files.value.filter((f) => f.state === 'ready' && f.stored))
  const hasImages = computed(() => files.value.some((f) => f.kind === 'image' && f.state !== 'error'))
  const hasErrors = computed(() => files.value.some((f) => f.state === 'error'))

  const item = (key: number) => files.value.find((f) => f.key === key)

  function add(list: Iterable<File>) {
    for (const file of list) {
      const kind = kindOf(file)
      const key = ++seq
      const entry: PendingFile = {
        key,
        name: file.name || 'file',
        size: file.size,
        mime: file.type,
        kind: kind ?? 'document',
        state: kind ? 'uploading' : 'error',
        progress: 0,
        stored: null,
        error: kind ? null : { code: 'type' },
        preview: kind === 'image' && typeof URL.createObjectURL === 'function' ? URL.createObjectURL(file) : null,
      }
      files.value.push(entry)
      if (!kind) continue
      const up = upload(file, getToken, (loaded, total) => {
        const f = item(key)
        if (f && total > 0) f.progress = Math.min(1, loaded / total)
      })
      uploads.set(key, up)
      up.done.then(
        (stored) => {
          uploads.delete(key)
          const f = item(key)
          if (!f) return
          f.state = 'ready'
          f.progress = 1
          f.stored = stored
          if (kind === 'image') rememberLocalFile(stored.id, file)
        },
        (e: unknown) => {
          uploads.delete(key)
          const f = item(key)
          if (!f || (e instanceof DOMException && e.name === 'AbortError')) return
          f.state = 'error'
          f.error = refusal(e)
        },
      )
    }
  }

  function remove(key: number) {
    uploads.get(key)?.abort()
    uploads.delete(key)
    const i = files.value.findIndex((f) => f.key === key)
    if (i >= 0) {
      const [f] = files.value.splice(i, 1)
      if (f.preview && !f.stored) URL.revokeObjectURL(f.preview)
    }
  }

  /** After sending: the chips go; the stored files live on with the message. */
  function clear() {
    for (const f of [...files.value]) remove(f.key)
  }

  return { files, uploading, ready, hasImages, hasErrors, add, remove, clear }
}

export function refusal(e: unknown): { code: RefusalCode; message?: string } {
  if (e instanceof ApiError) {
    if (e.status === 0) return { code: 'network' }
    if (e.status === 413) return { code: 'size', message: e.message }
    if (e.status === 415) return { code: 'type', message: e.message }
    return { code: 'server', message: e.message }
  }
  return { code: 'server', message: e instanceof Error ? e.message : String(e) }
}
