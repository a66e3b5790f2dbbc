import { describe, expect, it, vi } from 'vitest'
import { ApiError } from '@/api/http'
import type { FileRead } from '@/api/types'
import { usePendingFiles, type Uploader } from './usePendingFiles'

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
})
