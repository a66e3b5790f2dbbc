import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { useAuthStore } from './auth'

const user = {
  id: 1,
  email: 'admin@example.com',
  display_name: 'Admin',
  role: 'admin',
  is_active: true,
  must_change_password: true,
  created_at: '',
  last_login_at: null,
}
const tokens = (access: string, u = user, desktop = false) =>
  new Response(JSON.stringify({ access_token: access, token_type: 'bearer', expires_in: 1800, user: u, desktop }), {
    status: 200,
    headers: { 'Content-Type': 'application/json' },
  })
const status = (s: number) =>
  new Response(s === 204 ? null : JSON.stringify({ code: 'x', message: 'x' }), {
    status: s,
    headers: { 'Content-Type': 'application/json' },
  })

describe('auth store', () => {
  let fetchMock: ReturnType<typeof vi.fn>
  beforeEach(() => {
    setActivePinia(createPinia())
    fetchMock = vi.fn()
    vi.stubGlobal('fetch', fetchMock)
    localStorage.clear()
    sessionStorage.clear()
  })
  afterEach(() => vi.unstubAllGlobals())

  it('keeps the access token in memory only', async () => {
    fetchMock.mockResolvedValueOnce(tokens('secret-access'))
    const auth = useAuthStore()
    await auth.login('admin@example.com', 'pw')
    expect(auth.accessToken).toBe('secret-access')
    expect(auth.isAdmin).toBe(true)
    expect(auth.mustChangePassword).toBe(true)
    const stored = JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage })
    expect(stored).not.toContain('secret-access')
    const [, init] = fetchMock.mock.calls[0]
    expect(init.credentials).toBe('same-origin')
    expect(init.headers['Content-Type']).toBe('application/json')
  })

  it('bootstrap resumes from the refresh cookie', async () => {
    fetchMock.mockResolvedValueOnce(tokens('from-cookie'))
    const auth = useAuthStore()
    await auth.bootstrap()
    expect(fetchMock.mock.calls[0][0]).toBe('/api/auth/refresh')
    expect(JSON.parse(fetchMock.mock.calls[0][1].body)).toEqual({})
    expect(auth.accessToken).toBe('from-cookie')
  })

  it('bootstrap tries the desktop sign-in once when refresh fails, ignoring 401/404', async () => {
    fetchMock.mockResolvedValueOnce(status(401)).mockResolvedValueOnce(tokens('desktop'))
    const auth = useAuthStore()
    await auth.bootstrap()
    expect(fetchMock.mock.calls.map((c) => c[0])).toEqual(['/api/auth/refresh', '/api/auth/desktop'])
    expect(auth.accessToken).toBe('desktop')

    setActivePinia(createPinia())
    fetchMock.mockReset()
    fetchMock.mockResolvedValueOnce(status(401)).mockResolvedValueOnce(status(404))
    const again = useAuthStore()
    await again.bootstrap()
    await again.bootstrap()
    expect(fetchMock).toHaveBeenCalledTimes(2)
    expect(again.isAuthenticated).toBe(false)
  })

  it('a password change continues with the fresh session the server returns', async () => {
    fetchMock.mockResolvedValueOnce(tokens('first'))
    const auth = useAuthStore()
    await auth.login('admin@example.com', 'initial')
    expect(auth.passwordChangeForced).toBe(true)
    fetchMock.mockResolvedValueOnce(tokens('second', { ...user, must_change_password: false }))
    await auth.changePassword('initial', 'new-password-1')
    expect(fetchMock.mock.calls[1][0]).toBe('/api/auth/password')
    expect(JSON.parse(fetchMock.mock.calls[1][1].body)).toEqual({
      current_password: 'initial',
      new_password: 'new-password-1',
    })
    expect(fetchMock).toHaveBeenCalledTimes(2)
    expect(auth.accessToken).toBe('second')
    expect(auth.mustChangePassword).toBe(false)
    expect(auth.passwordChangeForced).toBe(false)
  })

  it('the desktop owner is offered, not forced, the password change and sets it without the old one', async () => {
    fetchMock.mockResolvedValueOnce(status(401)).mockResolvedValueOnce(tokens('desk', user, true))
    const auth = useAuthStore()
    await auth.bootstrap()
    expect(auth.desktopSession).toBe(true)
    expect(auth.mustChangePassword).toBe(true)
    expect(auth.passwordChangeForced).toBe(false)
    fetchMock.mockResolvedValueOnce(tokens('after', { ...user, must_change_password: false }))
    await auth.setDesktopPassword('my-new-password-1')
    expect(fetchMock.mock.calls[2][0]).toBe('/api/auth/desktop/password')
    expect(JSON.parse(fetchMock.mock.calls[2][1].body)).toEqual({ new_password: 'my-new-password-1' })
    expect(auth.accessToken).toBe('after')
    expect(auth.desktopSession).toBe(false)
    expect(auth.mustChangePassword).toBe(false)
  })

  it('logout clears the session even when the server is unreachable', async () => {
    fetchMock.mockResolvedValueOnce(tokens('t'))
    const auth = useAuthStore()
    await auth.login('a@b.c', 'pw')
    fetchMock.mockRejectedValueOnce(new TypeError('offline'))
    await auth.logout()
    expect(auth.accessToken).toBeNull()
    expect(auth.user).toBeNull()
  })
})
