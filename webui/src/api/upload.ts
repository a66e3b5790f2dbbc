/**
 * Uploads a file as the raw request body with XMLHttpRequest — fetch() reports no upload progress — and
 * reads a `text/event-stream` answer as it arrives (docs/protocols.md, E.6). The browser streams the File
 * from disk: it is never read into memory.
 */
import { ApiError, buildUrl, type Query } from './http'
import { SseParser, type SseEvent } from './sse'

export interface UploadHandlers {
  /** Bytes of the body sent so far. */
  onUpload?: (loaded: number, total: number) => void
  /** The body has been sent in full; the server now works on it. */
  onUploaded?: () => void
  /** Each event of a `text/event-stream` answer. */
  onEvent?: (e: SseEvent) => void
}

export interface Upload {
  /** Settles when the answer has ended: rejects with an ApiError (status 0: network), or an AbortError. */
  done: Promise<void>
  abort: () => void
}

/** The ApiError of a finished XMLHttpRequest that failed: the server's `{code, message}` when it sent one. */
export function xhrError(xhr: XMLHttpRequest): ApiError {
  let code = `http_${xhr.status}`
  let message = xhr.statusText || `HTTP ${xhr.status}`
  let detail: unknown
  try {
    const data = JSON.parse(xhr.responseText)
    if (data && typeof data === 'object') {
      if (typeof data.code === 'string') code = data.code
      if (typeof data.message === 'string') message = data.message
      detail = data.detail
    }
  } catch {
    /* not JSON: keep the status text */
  }
  const retry = Number(xhr.getResponseHeader('Retry-After'))
  return new ApiError(xhr.status, code, message, detail, Number.isFinite(retry) && retry > 0 ? retry : null)
}

export function uploadFile(
  path: string,
  query: Query,
  file: Blob,
  token: string | null,
  handlers: UploadHandlers = {},
): Upload {
  const xhr = new XMLHttpRequest()
  const parser = new SseParser((e) => handlers.onEvent?.(e))
  let seen = 0
  const feed = () => {
    const ok = xhr.status >= 200 && xhr.status < 300
    if (!ok || !(xhr.getResponseHeader('Content-Type') || '').includes('text/event-stream')) return
    const text = xhr.responseText
    if (text.length > seen) {
      parser.push(text.slice(seen))
      seen = text.length
    }
  }
  const done = new Promise<void>((resolve, reject) => {
    xhr.open('POST', buildUrl(path, query))
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`)
    xhr.setRequestHeader('Content-Type', 'application/octet-stream')
    xhr.setRequestHeader('Accept', 'text/event-stream, application/json')
    xhr.upload.onprogress = (e) => handlers.onUpload?.(e.loaded, e.lengthComputable ? e.total : file.size)
    xhr.upload.onload = () => handlers.onUploaded?.()
    xhr.onprogress = feed
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        feed()
        parser.end()
        resolve()
      } else {
        reject(xhrError(xhr))
      }
    }
    xhr.onerror = () => reject(new ApiError(0, 'network_error', 'the upload failed'))
    xhr.onabort = () => reject(new DOMException('the upload was cancelled', 'AbortError'))
    xhr.send(file)
  })
  return { done, abort: () => xhr.abort() }
}
