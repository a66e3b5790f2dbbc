import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ApiError, configureAuth, http } from './http'

function json(status: number, body: unknown, headers: Record<string, string> = {}) {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  })
}

describe('http', () => {
  let token: string | null
  let refresh: ReturnType<typeof vi.fn<() => Promise<string>>>
  let lost: ReturnType<typeof vi.fn<() => void>>
  let pcr: ReturnType<typeof vi.fn<() => void>>
  let fetchMock: ReturnType<typeof vi.fn<(url: string, init: RequestInit) => Promise<Response>>>

  beforeEach(() => {
    token = 'old'
    lost = vi.fn<() => void>()
    pcr = vi.fn<() => void>()
    refresh = vi.fn(async (): Promise<string> => {
      await new Promise((r) => setTimeout(r, 10))
      token = 'new'
      return 'new'
    })
    configureAuth({ getToken: () => token, refresh, onSessionLost: lost, onPasswordChangeRequired: pcr })
    fetchMock = vi.fn(async (_url: string, init: RequestInit) => {
      const auth = (init.headers as Record<string, string>).Authorization
      return auth === 'Bearer new' ? json(200, { ok: true }) : json(401, { code: 'unauthenticated', message: 'no' })
    })
    vi.stubGlobal('fetch', fetchMock)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('adds the bearer token, same-origin credentials and JSON content type on unsafe methods', async () => {
    token = 'new'
    await http.post('/api/x', { a: 1 })
    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit & { headers: Record<string, string> }]
    expect(url).toBe('/api/x')
    expect(init.credentials).toBe('same-origin')
    expect(init.headers.Authorization).toBe('Bearer new')
    expect(init.headers['Content-Type']).toBe('application/json')
    expect(init.body).toBe('{"a":1}')
  })

  it('sends {} as the body of an unsafe request without one', async () => {
    token = 'new'
    await http.del('/api/x')
    expect(fetchMock.mock.calls[0][1].body).toBe('{}')
    expect((fetchMock.mock.calls[0][1].headers as Record<string, string>)['Content-Type']).toBe('application/json')
  })

  it('coalesces concurrent 401s into a single refresh, then retries each request', async () => {
    const results = await Promise.all([
      http.get('/api/a'),
      http.get('/api/b'),
      http.get('/api/c'),
      http.post('/api/d', {}),
    ])
    expect(results).toEqual([{ ok: true }, { ok: true }, { ok: true }, { ok: true }])
    expect(refresh).toHaveBeenCalledTimes(1)
    expect(fetchMock).toHaveBeenCalledTimes(8)
    expect(lost).not.toHaveBeenCalled()
  })

  it('returns to sign-in once the refresh fails', async () => {
    refresh.mockImplementation(async () => {
      throw new ApiError(401, 'unauthenticated', 'expired')
    })
    const p = Promise.allSettled([http.get('/api/a'), http.get('/api/b')])
    const r = await p
    expect(r.every((x) => x.status === 'rejected')).toBe(true)
    expect(refresh).toHaveBeenCalledTimes(1)
    expect(lost).toHaveBeenCalled()
  })

  it('a later 401 after a finished refresh triggers a new refresh', async () => {
    await http.get('/api/a')
    token = 'old'
    await http.get('/api/b')
    expect(refresh).toHaveBeenCalledTimes(2)
  })

  it('maps error bodies, Retry-After and password_change_required', async () => {
    token = 'new'
    fetchMock.mockResolvedValueOnce(json(429, { code: 'rate_limited', message: 'slow down' }, { 'Retry-After': '12' }))
    const e = (await http.get('/api/x').catch((x) => x)) as ApiError
    expect(e).toBeInstanceOf(ApiError)
    expect(e.status).toBe(429)
    expect(e.code).toBe('rate_limited')
    expect(e.retryAfter).toBe(12)

    fetchMock.mockResolvedValueOnce(json(403, { code: 'password_change_required', message: 'change it' }))
    await http.get('/api/y').catch(() => {})
    expect(pcr).toHaveBeenCalled()
  })

  it('does not refresh for requests marked noRefresh', async () => {
    const e = (await http.post('/api/auth/login', {}, { noRefresh: true }).catch((x) => x)) as ApiError
    expect(e.status).toBe(401)
    expect(refresh).not.toHaveBeenCalled()
  })

  it('turns a network failure into status 0', async () => {
    token = 'new'
    fetchMock.mockRejectedValueOnce(new TypeError('Failed to fetch'))
    const e = (await http.get('/api/x').catch((x) => x)) as ApiError
    expect(e.status).toBe(0)
    expect(e.code).toBe('network_error')
  })
})
