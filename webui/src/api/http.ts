/**
 * The one HTTP module of the web UI.
 *
 * - adds `Authorization: Bearer <access>` (the token is held in memory by the auth store);
 * - sends JSON with `Content-Type: application/json` on every unsafe method (the server's CSRF rule);
 * - on a 401 it refreshes the session once, coalescing concurrent refreshes into one request,
 *   then retries; when the refresh fails it hands over to `onSessionLost` (back to sign-in);
 * - on 403 `password_change_required` it calls `onPasswordChangeRequired`.
 */

export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly detail: unknown
  readonly retryAfter: number | null

  constructor(status: number, code: string, message: string, detail?: unknown, retryAfter: number | null = null) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.detail = detail
    this.retryAfter = retryAfter
  }
}

export interface AuthHooks {
  getToken: () => string | null
  /** Returns a fresh access token, or throws when the session cannot be refreshed. */
  refresh: () => Promise<string>
  onSessionLost: () => void
  onPasswordChangeRequired: () => void
}

let hooks: AuthHooks = {
  getToken: () => null,
  refresh: () => Promise.reject(new ApiError(401, 'unauthenticated', 'Not signed in')),
  onSessionLost: () => {},
  onPasswordChangeRequired: () => {},
}

export function configureAuth(h: Partial<AuthHooks>): void {
  hooks = { ...hooks, ...h }
}

let inflightRefresh: Promise<string> | null = null

/** One refresh at a time: every caller that hits a 401 meanwhile awaits the same promise. */
export function refreshOnce(): Promise<string> {
  if (!inflightRefresh) {
    inflightRefresh = hooks.refresh().finally(() => {
      inflightRefresh = null
    })
  }
  return inflightRefresh
}

export type Query = Record<string, string | number | boolean | null | undefined>

export interface RequestOptions {
  query?: Query
  body?: unknown
  signal?: AbortSignal
  /** Skip the 401 -> refresh -> retry dance (used by the auth endpoints themselves). */
  noRefresh?: boolean
  /** Do not attach the bearer token. */
  anonymous?: boolean
  headers?: Record<string, string>
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

export function buildUrl(path: string, query?: Query): string {
  if (!query) return path
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === '') continue
    params.set(k, String(v))
  }
  const qs = params.toString()
  return qs ? `${path}${path.includes('?') ? '&' : '?'}${qs}` : path
}

function parseRetryAfter(res: Response): number | null {
  const v = res.headers.get('Retry-After')
  if (!v) return null
  const n = Number(v)
  if (Number.isFinite(n)) return n
  const d = Date.parse(v)
  return Number.isFinite(d) ? Math.max(0, Math.round((d - Date.now()) / 1000)) : null
}

export async function toApiError(res: Response): Promise<ApiError> {
  let code = `http_${res.status}`
  let message = res.statusText || `HTTP ${res.status}`
  let detail: unknown
  try {
    const ct = res.headers.get('Content-Type') || ''
    if (ct.includes('application/json')) {
      const data = await res.json()
      if (data && typeof data === 'object') {
        if (typeof data.code === 'string') code = data.code
        if (typeof data.message === 'string') message = data.message
        else if (typeof data.detail === 'string') message = data.detail
        detail = data.detail
      }
    }
  } catch {
    /* body not JSON: keep the status text */
  }
  return new ApiError(res.status, code, message, detail, parseRetryAfter(res))
}

/** A network failure (server down, offline) as an ApiError with status 0. */
function networkError(e: unknown): ApiError {
  if (e instanceof DOMException && e.name === 'AbortError') throw e
  return new ApiError(0, 'network_error', e instanceof Error ? e.message : String(e))
}

async function send(method: string, path: string, opts: RequestOptions, token: string | null): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json', ...(opts.headers || {}) }
  let body: BodyInit | undefined
  if (opts.body instanceof FormData) {
    body = opts.body
  } else if (UNSAFE.has(method)) {
    headers['Content-Type'] = 'application/json'
    body = JSON.stringify(opts.body ?? {})
  }
  if (token && !opts.anonymous) headers.Authorization = `Bearer ${token}`
  try {
    return await fetch(buildUrl(path, opts.query), {
      method,
      headers,
      body,
      credentials: 'same-origin',
      signal: opts.signal,
    })
  } catch (e) {
    throw networkError(e)
  }
}

/** Low level: performs the request with auth handling and returns the successful Response. */
export async function rawRequest(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
  method = method.toUpperCase()
  let res = await send(method, path, opts, hooks.getToken())
  if (res.status === 401 && !opts.noRefresh && !opts.anonymous) {
    let token: string
    try {
      token = await refreshOnce()
    } catch {
      hooks.onSessionLost()
      throw await toApiError(res)
    }
    res = await send(method, path, opts, token)
    if (res.status === 401) {
      hooks.onSessionLost()
      throw await toApiError(res)
    }
  }
  if (!res.ok) {
    const err = await toApiError(res)
    if (err.status === 403 && err.code === 'password_change_required') hooks.onPasswordChangeRequired()
    throw err
  }
  return res
}

export async function request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await rawRequest(method, path, opts)
  if (res.status === 204 || res.status === 205) return undefined as T
  const ct = res.headers.get('Content-Type') || ''
  if (ct.includes('application/json')) return (await res.json()) as T
  return (await res.text()) as unknown as T
}

export const http = {
  get: <T = unknown>(path: string, opts?: RequestOptions) => request<T>('GET', path, opts),
  post: <T = unknown>(path: string, body?: unknown, opts?: RequestOptions) =>
    request<T>('POST', path, { ...opts, body }),
  put: <T = unknown>(path: string, body?: unknown, opts?: RequestOptions) => request<T>('PUT', path, { ...opts, body }),
  patch: <T = unknown>(path: string, body?: unknown, opts?: RequestOptions) =>
    request<T>('PATCH', path, { ...opts, body }),
  del: <T = unknown>(path: string, opts?: RequestOptions) => request<T>('DELETE', path, opts),
}

/** Downloads an authenticated resource and hands it to the browser as a file. */
export async function downloadFile(path: string, fallbackName: string): Promise<void> {
  const res = await rawRequest('GET', path)
  const blob = await res.blob()
  const cd = res.headers.get('Content-Disposition') || ''
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd)
  let name = fallbackName
  if (m) {
    try {
      name = decodeURIComponent(m[1])
    } catch {
      name = m[1]
    }
  }
  const url = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = url
  a.download = name.replace(/[\\/]/g, '_')
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}

/** Tells whether an error means "this route does not exist on the server (yet)". */
export function isMissingRoute(e: unknown): boolean {
  return e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)
}
