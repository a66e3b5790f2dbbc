/**
 * Files for the chat and knowledge collections: `POST /api/files` (multipart, field `file`) with
 * upload progress — XMLHttpRequest, since fetch() reports none — and the authenticated bytes of a stored file
 * as an object URL for <img> (the access token is a header, never a URL parameter).
 */
import { ApiError, rawRequest, refreshOnce } from './http'
import { xhrError } from './upload'
import type { FileRead } from './types'

export interface FileUpload {
  /** The stored file; rejects with an ApiError (status 0: network) or an AbortError. */
  done: Promise<FileRead>
  abort: () => void
}

/**
 * Sends `file` to `POST /api/files`. `getToken` is read at send time; a 401 refreshes the session once and
 * sends again (the refresh is shared with every other request).
 */
export function uploadChatFile(
  file: File,
  getToken: () => string | null,
  onProgress?: (loaded: number, total: number) => void,
): FileUpload {
  let xhr: XMLHttpRequest | null = null
  let aborted = false

  const once = (token: string | null) =>
    new Promise<FileRead>((resolve, reject) => {
      const x = new XMLHttpRequest()
      xhr = x
      x.open('POST', '/api/files')
      if (token) x.setRequestHeader('Authorization', `Bearer ${token}`)
      x.setRequestHeader('Accept', 'application/json')
      x.upload.onprogress = (e) => onProgress?.(e.loaded, e.lengthComputable ? e.total : file.size)
      x.onload = () => {
        if (x.status >= 200 && x.status < 300) {
          try {
            resolve(JSON.parse(x.responseText) as FileRead)
          } catch {
            reject(new ApiError(x.status, 'bad_response', 'unexpected response'))
          }
        } else reject(xhrError(x))
      }
      x.onerror = () => reject(new ApiError(0, 'network_error', 'the upload failed'))
      x.onabort = () => reject(new DOMException('the upload was cancelled', 'AbortError'))
      const fd = new FormData()
      fd.append('file', file, file.name)
      x.send(fd)
    })

  const done = (async () => {
    try {
      return await once(getToken())
    } catch (e) {
      if (aborted || !(e instanceof ApiError) || e.status !== 401) throw e
      return await once(await refreshOnce())
    }
  })()
  return {
    done,
    abort: () => {
      aborted = true
      xhr?.abort()
    },
  }
}

export const fileUrl = (id: string) => `/api/files/${encodeURIComponent(id)}`

const blobUrls = new Map<string, Promise<string>>()

/** An object URL of a stored file's bytes (`thumbnail`: the server's small version), fetched once per page. */
export function fileObjectUrl(id: string, thumbnail = false): Promise<string> {
  const key = `${id}:${thumbnail ? 't' : 'f'}`
  let p = blobUrls.get(key)
  if (!p) {
    p = rawRequest('GET', fileUrl(id), thumbnail ? { query: { thumbnail: 1 } } : {})
      .then((res) => res.blob())
      .then((b) => URL.createObjectURL(b))
    p.catch(() => blobUrls.delete(key))
    blobUrls.set(key, p)
  }
  return p
}

/** Remembers a local file (just attached) as the bytes of a stored one, so its thumbnail needs no download. */
export function rememberLocalFile(id: string, file: Blob): void {
  const url = Promise.resolve(URL.createObjectURL(file))
  blobUrls.set(`${id}:t`, url)
  blobUrls.set(`${id}:f`, url)
}
