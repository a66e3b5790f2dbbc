import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { useRuntimeInstall } from './useRuntimeInstall'

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })
const sse = (...events: Array<[string, unknown]>) =>
  new Response(events.map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`).join(''), {
    status: 200,
    headers: { 'Content-Type': 'text/event-stream' },
  })
const urls = (m: ReturnType<typeof vi.fn>) => m.mock.calls.map((c) => `${c[1]?.method ?? 'GET'} ${String(c[0])}`)

describe('useRuntimeInstall', () => {
  let fetchMock: ReturnType<typeof vi.fn>
  beforeEach(() => {
    fetchMock = vi.fn()
    vi.stubGlobal('fetch', fetchMock)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('asks for the size with ?check=true and follows an install to done', async () => {
    const job = useRuntimeInstall()
    fetchMock.mockResolvedValueOnce(json({ source: null, size: 1234, latest_version: '0.13.0' }))
    await job.load(true)
    expect(job.info.value?.size).toBe(1234)

    fetchMock.mockResolvedValueOnce(
      sse(
        ['progress', { phase: 'downloading', completed: 617, total: 1234, percent: 50, bytes_per_s: 100 }],
        ['done', { version: '0.13.0', changed: true }],
      ),
    )
    expect(await job.run('install')).toBe(true)
    expect(job.state.value).toBe('done')
    expect(job.version.value).toBe('0.13.0')
    expect(job.progress.value?.percent).toBe(50)
    expect(urls(fetchMock)).toEqual(['GET /api/ollama/runtime?check=true', 'POST /api/ollama/runtime/install'])
  })

  it('keeps the error code of a failed job and of a refused start', async () => {
    const job = useRuntimeInstall()
    fetchMock.mockResolvedValueOnce(sse(['error', { code: 'runtime_checksum_mismatch', message: 'bad sum' }]))
    expect(await job.run('install')).toBe(false)
    expect(job.state.value).toBe('error')
    expect(job.error.value).toEqual({ code: 'runtime_checksum_mismatch', message: 'bad sum' })

    fetchMock.mockResolvedValueOnce(json({ code: 'runtime_user_installed', message: 'yours' }, 409))
    expect(await job.run('update')).toBe(false)
    expect(job.error.value?.code).toBe('runtime_user_installed')

    fetchMock.mockResolvedValueOnce(sse(['error', { code: 'runtime_cancelled', message: 'cancelled' }]))
    await job.run('install')
    expect(job.state.value).toBe('cancelled')
  })

  it('cancels with DELETE and treats a stream that ends early as a network error', async () => {
    const job = useRuntimeInstall()
    fetchMock.mockResolvedValueOnce(sse(['progress', { phase: 'resolving' }]))
    await job.run('install')
    expect(job.error.value?.code).toBe('runtime_network')
    fetchMock.mockResolvedValueOnce(json({ source: null }))
    await job.cancel()
    expect(urls(fetchMock)[1]).toBe('DELETE /api/ollama/runtime/install')
  })
})
