import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { authApi, usersApi } from '@/api/endpoints'
import { ApiError } from '@/api/http'
import type { TokenResponse, User } from '@/api/types'

/** Serialises refreshes across tabs so a rotated refresh cookie is never replayed by a sibling tab. */
async function withCrossTabLock<T>(fn: () => Promise<T>): Promise<T> {
  const locks = typeof navigator !== 'undefined' ? (navigator as Navigator & { locks?: LockManager }).locks : undefined
  if (locks?.request) return locks.request('modeltrain-auth-refresh', fn) as Promise<T>
  return fn()
}

export const useAuthStore = defineStore('auth', () => {
  // The access token lives in memory only: never in localStorage or sessionStorage.
  const accessToken = ref<string | null>(null)
  const user = ref<User | null>(null)
  const expiresAt = ref<number>(0)
  /** The desktop owner's session inside the desktop app: the initial password is offered, not forced. */
  const desktopSession = ref(false)
  let bootstrapPromise: Promise<void> | null = null
  let refreshTimer: ReturnType<typeof setTimeout> | null = null

  const isAuthenticated = computed(() => !!accessToken.value && !!user.value)
  const isAdmin = computed(() => user.value?.role === 'admin')
  const mustChangePassword = computed(() => !!user.value?.must_change_password)
  /** The password change blocks everything else, except for the desktop owner (who is offered it). */
  const passwordChangeForced = computed(() => mustChangePassword.value && !desktopSession.value)

  function scheduleRefresh(expiresIn: number) {
    if (refreshTimer) clearTimeout(refreshTimer)
    if (!expiresIn || expiresIn <= 0) return
    // refresh at ~80 % of the lifetime, so long streams do not start with an expired token
    const ms = Math.max(10_000, expiresIn * 800)
    refreshTimer = setTimeout(() => {
      refresh().catch(() => {
        /* the next request will notice and return to sign-in */
      })
    }, ms)
  }

  function apply(t: TokenResponse) {
    accessToken.value = t.access_token
    user.value = t.user
    expiresAt.value = Date.now() + (t.expires_in || 0) * 1000
    desktopSession.value = !!t.desktop
    scheduleRefresh(t.expires_in)
  }

  function clear() {
    accessToken.value = null
    user.value = null
    expiresAt.value = 0
    desktopSession.value = false
    if (refreshTimer) clearTimeout(refreshTimer)
    refreshTimer = null
  }

  async function login(email: string, password: string) {
    apply(await authApi.login(email, password))
  }

  /** Used by the HTTP module (coalesced there). Returns the new access token or throws. */
  async function refresh(): Promise<string> {
    try {
      const t = await withCrossTabLock(() => authApi.refresh())
      apply(t)
      return t.access_token
    } catch (e) {
      clear()
      throw e
    }
  }

  /** Once per page load: resume the session from the refresh cookie, or from the desktop shell. */
  function bootstrap(): Promise<void> {
    if (!bootstrapPromise) {
      bootstrapPromise = (async () => {
        try {
          await refresh()
          return
        } catch {
          /* no session cookie: maybe we run inside the desktop app */
        }
        try {
          apply(await authApi.desktop())
        } catch (e) {
          if (!(e instanceof ApiError)) throw e
          // 401/404 (not the desktop app, or no desktop token): stay signed out
        }
      })().catch(() => {
        clear()
      })
    }
    return bootstrapPromise
  }

  async function logout() {
    try {
      await authApi.logout()
    } catch {
      /* signing out locally is what matters */
    }
    clear()
  }

  /** Changes the password. The server revokes every other session and answers with a fresh one. */
  async function changePassword(current: string, next: string) {
    apply(await authApi.changePassword(current, next))
  }

  /** Desktop owner only: set the initial password without knowing it (the server checks the session). */
  async function setDesktopPassword(next: string) {
    apply(await authApi.desktopSetPassword(next))
  }

  async function reloadMe() {
    user.value = await usersApi.me()
  }

  async function updateDisplayName(name: string) {
    user.value = await usersApi.updateMe(name)
  }

  function markPasswordChangeRequired() {
    if (user.value) user.value = { ...user.value, must_change_password: true }
  }

  return {
    accessToken,
    user,
    expiresAt,
    isAuthenticated,
    isAdmin,
    mustChangePassword,
    desktopSession,
    passwordChangeForced,
    login,
    refresh,
    bootstrap,
    logout,
    changePassword,
    setDesktopPassword,
    reloadMe,
    updateDisplayName,
    clear,
    markPasswordChangeRequired,
  }
})
