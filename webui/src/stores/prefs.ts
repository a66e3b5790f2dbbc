import { defineStore } from 'pinia'
import { computed, ref, watch } from 'vue'
import { setLocale, i18n, type Locale } from '@/i18n'

export type ThemePref = 'light' | 'dark' | 'system'
const THEME_KEY = 'modeltrain.theme'
const OLLAMA_HOST_KEY = 'modeltrain.ollamaHost'

function readKey(key: string): string | null {
  try {
    return localStorage.getItem(key)
  } catch {
    return null
  }
}

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
  /** The Ollama provider id the Models page manages (null: the default Ollama). */
  const ollamaHost = ref<string | null>(readKey(OLLAMA_HOST_KEY))
  watch(ollamaHost, (v) => {
    try {
      if (v) localStorage.setItem(OLLAMA_HOST_KEY, v)
      else localStorage.removeItem(OLLAMA_HOST_KEY)
    } catch {
      /* ignore */
    }
  })
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

  return { theme, locale, isDark, setLanguage, ollamaHost }
})
