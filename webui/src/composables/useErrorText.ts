import { useI18n } from 'vue-i18n'
import { ApiError } from '@/api/http'

/** Turns any thrown value into one translated sentence that says what happened. */
export function errorKey(e: unknown): { key: string; params?: Record<string, unknown>; raw?: string } {
  if (e instanceof ApiError) {
    if (e.status === 0) return { key: 'errors.network' }
    if (e.status === 429) return { key: 'errors.rateLimited', params: { seconds: e.retryAfter ?? 30 } }
    if (e.code === 'password_change_required') return { key: 'errors.passwordChangeRequired' }
    if (e.status === 401) return { key: 'errors.unauthorized' }
    if (e.status === 403) return { key: 'errors.forbidden' }
    if (e.status === 404 || e.status === 405 || e.status === 501) return { key: 'errors.notAvailable' }
    if (e.status === 413) return { key: 'errors.tooLarge' }
    if (e.status === 507) return { key: 'errors.diskFull' }
    if (e.status === 503 || e.status === 502 || e.status === 504) return { key: 'errors.unavailable', raw: e.message }
    if (e.status === 409 || e.status === 422 || e.status === 400) return { key: 'errors.rejected', raw: e.message }
    return { key: 'errors.server', raw: e.message }
  }
  return { key: 'errors.unknown', raw: e instanceof Error ? e.message : undefined }
}

export function useErrorText() {
  const { t } = useI18n()
  return (e: unknown): string => {
    const { key, params, raw } = errorKey(e)
    const base = t(key, params || {})
    return raw && raw !== base ? `${base} (${raw})` : base
  }
}
