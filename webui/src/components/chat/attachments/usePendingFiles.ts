/**
 * Files on their way to `POST /api/files`: the composer's attachments before a message is sent, and the
 * documents added to a knowledge collection. Each uploads with progress (at most `parallel` at once); a
 * refused one stays in the list, saying why, until it is removed.
 */
import { computed, ref } from 'vue'
import { ApiError } from '@/api/http'
import { rememberLocalFile, uploadChatFile, type FileUpload } from '@/api/files'
import type { FileRead } from '@/api/types'
import { kindOf, type LocalKind } from './kinds'

export type PendingState = 'uploading' | 'ready' | 'error'

/** Why a file is refused: a code the component turns into a sentence (`attachments.errors.<code>`). */
export type RefusalCode = 'type' | 'notDocument' | 'size' | 'server' | 'network'

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

export interface PendingOptions {
  /** Only documents (a knowledge collection): an image is refused with `notDocument`. */
  documentsOnly?: boolean
  /** At most this many uploads at once (a folder may hold hundreds of files); the rest wait their turn. */
  parallel?: number
}

let seq = 0

export function usePendingFiles(
  getToken: () => string | null,
  upload: Uploader = uploadChatFile,
  options: PendingOptions = {},
) {
  const files = ref<PendingFile[]>([])
  const uploads = new Map<number, FileUpload>()
  const parallel = options.parallel ?? Infinity
  const waiting: Array<() => void> = []
  let running = 0

  const uploading = computed(() => files.value.some((f) => f.state === 'uploading'))
  const ready = computed(() => files.value.filter((f) => f.state === 'ready' && f.stored))
  const hasImages = computed(() => files.value.some((f) => f.kind === 'image' && f.state !== 'error'))
  const hasErrors = computed(() => files.value.some((f) => f.state === 'error'))

  const item = (key: number) => files.value.find((f) => f.key === key)

  /** Adds the files and starts their uploads; resolves, once every one of them has ended, with those
   * stored (in the order given; refused, failed and removed ones left out). */
  function add(list: Iterable<File>): Promise<FileRead[]> {
    const results: Array<Promise<FileRead | null>> = []
    for (const file of list) {
      const kind = kindOf(file)
      const refused = options.documentsOnly && kind !== 'document' ? 'notDocument' : !kind ? 'type' : null
      const key = ++seq
      const entry: PendingFile = {
        key,
        name: file.name || 'file',
        size: file.size,
        mime: file.type,
        kind: kind ?? 'document',
        state: refused ? 'error' : 'uploading',
        progress: 0,
        stored: null,
        error: refused ? { code: refused } : null,
        preview:
          !refused && kind === 'image' && typeof URL.createObjectURL === 'function' ? URL.createObjectURL(file) : null,
      }
      files.value.push(entry)
      if (!refused) results.push(inTurn(() => send(key, file, kind === 'image')))
    }
    return Promise.all(results).then((stored) => stored.filter((f): f is FileRead => f !== null))
  }

  /** Runs `job` when fewer than `parallel` uploads are running. */
  async function inTurn<T>(job: () => Promise<T>): Promise<T> {
    if (running >= parallel) await new Promise<void>((go) => waiting.push(go))
    running++
    try {
      return await job()
    } finally {
      running--
      waiting.shift()?.()
    }
  }

  async function send(key: number, file: File, image: boolean): Promise<FileRead | null> {
    if (!item(key)) return null // removed while it waited its turn
    const up = upload(file, getToken, (loaded, total) => {
      const f = item(key)
      if (f && total > 0) f.progress = Math.min(1, loaded / total)
    })
    uploads.set(key, up)
    try {
      const stored = await up.done
      const f = item(key)
      if (!f) return null
      f.state = 'ready'
      f.progress = 1
      f.stored = stored
      if (image) rememberLocalFile(stored.id, file)
      return stored
    } catch (e) {
      const f = item(key)
      if (f && !(e instanceof DOMException && e.name === 'AbortError')) {
        f.state = 'error'
        f.error = refusal(e)
      }
      return null
    } finally {
      uploads.delete(key)
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

  /** The stored ones leave the list (a collection took them); refused ones stay until removed. */
  function dropStored() {
    for (const f of files.value.filter((x) => x.state === 'ready')) remove(f.key)
  }

  return { files, uploading, ready, hasImages, hasErrors, add, remove, clear, dropStored }
}

/** The sentence for a refused file (the server's own words in brackets, where it gave some). */
export function refusalText(t: (key: string) => string, error: PendingFile['error']): string {
  if (!error) return ''
  const base = t(`attachments.errors.${error.code}`)
  return error.message && error.code !== 'network' ? `${base} (${error.message})` : base
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
