import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ApiError } from './http'
import { uploadFile } from './upload'

/** A stand-in XMLHttpRequest the test drives: upload progress, a growing response, the end. */
class FakeXhr {
  static last: FakeXhr
  method = ''
  url = ''
  headers: Record<string, string> = {}
  body: unknown = null
  status = 0
  statusText = ''
  responseText = ''
  responseHeaders: Record<string, string> = {}
  upload: { onprogress?: (e: ProgressEvent) => void; onload?: () => void } = {}
  onprogress?: () => void
  onload?: () => void
  onerror?: () => void
  onabort?: () => void
  aborted = false

  constructor() {
    FakeXhr.last = this
  }
  open(method: string, url: string) {
    this.method = method
    this.url = url
  }
  setRequestHeader(name: string, value: string) {
    this.headers[name] = value
  }
  getResponseHeader(name: string): string | null {
    return this.responseHeaders[name] ?? null
  }
  send(body: unknown) {
    this.body = body
  }
  abort() {
    this.aborted = true
    this.onabort?.()
  }
  // --- driven by the test ---
  sent(loaded: number, total: number) {
    this.upload.onprogress?.({ loaded, total, lengthComputable: true } as ProgressEvent)
    if (loaded === total) this.upload.onload?.()
  }
  answer(status: number, contentType: string, text: string) {
    this.status = status
    this.responseHeaders['Content-Type'] = contentType
    this.responseText += text
    this.onprogress?.()
  }
  end() {
    this.onload?.()
  }
}

describe('uploadFile', () => {
  beforeEach(() => vi.stubGlobal('XMLHttpRequest', FakeXhr))
  afterEach(() => vi.unstubAllGlobals())

  it('streams the file, reports upload progress and the answer as events as it grows', async () => {
    const file = new Blob(['GGUF....'])
    const progress: Array<[number, number]> = []
    const events: string[] = []
    let uploaded = false
    const up = uploadFile('/api/ollama/models/import', { name: 'm', provider: undefined }, file, 'tok', {
      onUpload: (loaded, total) => progress.push([loaded, total]),
      onUploaded: () => (uploaded = true),
      onEvent: (e) => events.push(`${e.event} ${e.data}`),
    })
    const xhr = FakeXhr.last
    expect([xhr.method, xhr.url]).toEqual(['POST', '/api/ollama/models/import?name=m'])
    expect(xhr.headers).toMatchObject({ Authorization: 'Bearer tok', 'Content-Type': 'application/octet-stream' })
    expect(xhr.body).toBe(file) // the Blob itself: the browser streams it
    xhr.sent(4, 8)
    xhr.sent(8, 8)
    expect(progress).toEqual([
      [4, 8],
      [8, 8],
    ])
    expect(uploaded).toBe(true)
    xhr.answer(200, 'text/event-stream; charset=utf-8', 'event: progress\ndata: {"phase":"hash')
    expect(events).toEqual([])
    xhr.answer(200, 'text/event-stream; charset=utf-8', 'ing"}\n\nevent: done\ndata: {}\n\n')
    xhr.end()
    await up.done
    expect(events).toEqual(['progress {"phase":"hashing"}', 'done {}'])
  })

  it('rejects with the server error, or a network error, or an AbortError', async () => {
    const refused = uploadFile('/x', {}, new Blob(['x']), null)
    FakeXhr.last.answer(422, 'application/json', '{"code":"not_gguf","message":"no","detail":null}')
    FakeXhr.last.end()
    await expect(refused.done).rejects.toMatchObject({ status: 422, code: 'not_gguf', message: 'no' })
    expect(FakeXhr.last.headers.Authorization).toBeUndefined()

    const lost = uploadFile('/x', {}, new Blob(['x']), 't')
    FakeXhr.last.onerror?.()
    const error = await lost.done.catch((e) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error.status).toBe(0)

    const cancelled = uploadFile('/x', {}, new Blob(['x']), 't')
    cancelled.abort()
    expect(FakeXhr.last.aborted).toBe(true)
    await expect(cancelled.done).rejects.toMatchObject({ name: 'AbortError' })
  })
})
