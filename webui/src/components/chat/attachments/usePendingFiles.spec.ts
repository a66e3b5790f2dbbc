import { describe, expect, it, vi } from 'vitest'
import { ApiError } from '@/api/http'
import type { FileRead } from '@/api/types'
import { refusalText, usePendingFiles, type Uploader } from './usePendingFiles'

/** An uploader the test settles by hand, with the progress callback it was given. */
function fakeUploader() {
  const calls: Array<{
    file: File
    progress: (loaded: number, total: number) => void
    resolve: (f: FileRead) => void
    reject: (e: unknown) => void
    abort: ReturnType<typeof vi.fn>
  }> = []
  const upload: Uploader = (file, _token, onProgress) => {
    let resolve!: (f: FileRead) => void
    let reject!: (e: unknown) => void
    const done = new Promise<FileRead>((res, rej) => {
      resolve = res
      reject = rej
    })
    const abort = vi.fn(() => reject(new DOMException('cancelled', 'AbortError')))
    calls.push({ file, progress: onProgress ?? (() => {}), resolve, reject, abort })
    return { done, abort }
  }
  return { upload, calls }
}

const stored = (id: string, name: string, mime: string): FileRead => ({
  id,
  name,
  mime,
  size: 4,
  kind: mime.startsWith('image/') ? 'image' : 'document',
  sha256: '0'.repeat(64),
  created_at: '2026-12-05T00:00:00Z',
})

const tick = () => new Promise((r) => setTimeout(r, 0))

describe('usePendingFiles', () => {
  it('uploads each file at once with progress, and offers the stored ones for sending', async () => {
    const { upload, calls } = fakeUploader()
    const p = usePendingFiles(() => 'tok', upload)
    p.add([new File(['abcd'], 'notes.md', { type: 'text/markdown' })])
    expect(p.uploading.value).toBe(true)
    calls[0].progress(2, 4)
    expect(p.files.value[0].progress).toBe(0.5)
    calls[0].resolve(stored('f1', 'notes.md', 'text/markdown'))
    await tick()
    expect(p.uploading.value).toBe(false)
    expect(p.ready.value.map((f) => f.stored?.id)).toEqual(['f1'])
  })

  it('refuses a file of the wrong kind without uploading it, and says why', () => {
    const { upload, calls } = fakeUploader()
    const p = usePendingFiles(() => null, upload)
    p.add([new File(['MZ'], 'setup.exe', { type: 'application/x-msdownload' })])
    expect(calls).toHaveLength(0)
    expect(p.files.value[0]).toMatchObject({ state: 'error', error: { code: 'type' } })
    expect(p.ready.value).toHaveLength(0)
  })

  it('keeps the server refusal (too large) on the chip until it is removed', async () => {
    const { upload, calls } = fakeUploader()
    const p = usePendingFiles(() => null, upload)
    p.add([new File(['x'], 'big.pdf', { type: 'application/pdf' })])
    calls[0].reject(new ApiError(413, 'file_too_large', 'the file is over 20 MB'))
    await tick()
    expect(p.files.value[0]).toMatchObject({
      state: 'error',
      error: { code: 'size', message: 'the file is over 20 MB' },
    })
    expect(p.hasErrors.value).toBe(true)
    p.remove(p.files.value[0].key)
    expect(p.files.value).toHaveLength(0)
  })

  it('cancels an upload that is removed before it ends', async () => {
    const { upload, calls } = fakeUploader()
    const p = usePendingFiles(() => null, upload)
    p.add([new File(['x'], 'a.txt', { type: 'text/plain' })])
    p.remove(p.files.value[0].key)
    expect(calls[0].abort).toHaveBeenCalled()
    await tick()
    expect(p.files.value).toHaveLength(0)
  })

  it('knows when images are attached (for the vision check)', () => {
    const { upload } = fakeUploader()
    const p = usePendingFiles(() => null, upload)
    p.add([new File(['x'], 'a.txt', { type: 'text/plain' })])
    expect(p.hasImages.value).toBe(false)
    p.add([new File(['x'], 'cat.png', { type: 'image/png' })])
    expect(p.hasImages.value).toBe(true)
  })

  it('uploads at most `parallel` at once and resolves with the stored ones in order', async () => {
    const { upload, calls } = fakeUploader()
    const p = usePendingFiles(() => 'tok', upload, { parallel: 2 })
    const names = ['a.md', 'b.md', 'c.md']
    const result = p.add(names.map((n) => new File(['x'], n, { type: 'text/markdown' })))
    expect(calls.map((c) => c.file.name)).toEqual(['a.md', 'b.md'])
    calls[1].resolve(stored('f2', 'b.md', 'text/markdown'))
    await tick()
    expect(calls.map((c) => c.file.name)).toEqual(['a.md', 'b.md', 'c.md']) // c took b's turn
    calls[2].resolve(stored('f3', 'c.md', 'text/markdown'))
    calls[0].reject(new ApiError(500, 'internal', 'boom'))
    expect((await result).map((f) => f.id)).toEqual(['f2', 'f3'])
    expect(p.files.value.map((f) => f.state)).toEqual(['error', 'ready', 'ready'])
  })

  it('never sends a file removed while it waited its turn', async () => {
    const { upload, calls } = fakeUploader()
    const p = usePendingFiles(() => 'tok', upload, { parallel: 1 })
    const result = p.add([
      new File(['x'], 'a.md', { type: 'text/markdown' }),
      new File(['y'], 'b.md', { type: 'text/markdown' }),
    ])
    p.remove(p.files.value[1].key)
    calls[0].resolve(stored('f1', 'a.md', 'text/markdown'))
    expect((await result).map((f) => f.id)).toEqual(['f1'])
    expect(calls).toHaveLength(1)
  })

  it('refuses an image where only documents are taken, and drops the stored ones on request', async () => {
    const { upload, calls } = fakeUploader()
    const p = usePendingFiles(() => 'tok', upload, { documentsOnly: true })
    const result = p.add([
      new File(['x'], 'cat.png', { type: 'image/png' }),
      new File(['x'], 'a.md', { type: 'text/markdown' }),
    ])
    expect(calls.map((c) => c.file.name)).toEqual(['a.md'])
    expect(p.files.value[0]).toMatchObject({ state: 'error', error: { code: 'notDocument' } })
    calls[0].resolve(stored('f1', 'a.md', 'text/markdown'))
    await result
    p.dropStored()
    expect(p.files.value.map((f) => f.name)).toEqual(['cat.png'])
  })
})

describe('refusalText', () => {
  const t = (key: string) => `<${key}>`
  it('names the reason, with the server words in brackets except for a lost connection', () => {
    expect(refusalText(t, null)).toBe('')
    expect(refusalText(t, { code: 'size', message: 'over 20 MB' })).toBe('<attachments.errors.size> (over 20 MB)')
    expect(refusalText(t, { code: 'network', message: 'Failed to fetch' })).toBe('<attachments.errors.network>')
  })
})
