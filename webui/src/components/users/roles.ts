import { computed } from 'vue'
import { useI18n } from 'vue-i18n'
import type { Role } from '@/api/types'

/** The roles an administrator can give, as select options. */
export function useRoleOptions() {
  const { t } = useI18n()
  return computed<Array<{ label: string; value: Role }>>(() => [
    { label: t('users.roles.user'), value: 'user' },
    { label: t('users.roles.admin'), value: 'admin' },
  ])
}
