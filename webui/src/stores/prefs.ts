import { defineStore } from 'pinia'
import { computed, ref, watch } from 'vue'
import { setLocale, i18n, type Locale } from '@/i18n'

export type ThemePref = 'light' | 'dark' | 'system'
const THEME_KEY = 'modeltrain.theme'

function readTheme(): ThemePref {
  try {
    const v = localStorage.getItem(THEME_KEY)
    if (v === 'light' || v === 'dark' || v === 'system') return v
  } catch {
    /* ignore */
  }
  return 'system'
}

export const usePrefsStore = defineStore('prefs', () => {
  const theme = ref<ThemePref>(readTheme())
  const locale = ref<Locale>(i18n.global.locale.value as Locale)
  const mq =
    typeof window !== 'undefined' && window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null
  const systemDark = ref(!!mq?.matches)
  mq?.addEventListener?.('change', (e) => {
    systemDark.value = e.matches
  })

  const isDark = computed(() => (theme.value === 'system' ? systemDark.value : theme.value === 'dark'))

  watch(theme, (v) => {
    try {
      localStorage.setItem(THEME_KEY, v)
    } catch {
      /* ignore */
    }
  })
  watch(
    isDark,
    (d) => {
      if (typeof document !== 'undefined') {
        document.documentElement.dataset.theme = d ? 'dark' : 'light'
        document.documentElement.style.colorScheme = d ? 'dark' : 'light'
      }
    },
    { immediate: true },
  )

  function setLanguage(l: Locale) {
    locale.value = l
    setLocale(l)
  }
  setLocale(locale.value)

  return { theme, locale, isDark, setLanguage }
})
