import { createI18n } from 'vue-i18n'
import en from './locales/en'
import zhCN from './locales/zh-CN'

export type Locale = 'en' | 'zh-CN'
export const LOCALES: Locale[] = ['zh-CN', 'en']
const STORAGE_KEY = 'modeltrain.locale'

export function detectLocale(
  langs: readonly string[] = typeof navigator !== 'undefined' ? navigator.languages || [navigator.language] : [],
): Locale {
  for (const l of langs) {
    if (!l) continue
    const low = l.toLowerCase()
    if (low.startsWith('zh')) return 'zh-CN'
    if (low.startsWith('en')) return 'en'
  }
  return 'en'
}

export function initialLocale(): Locale {
  try {
    const saved = localStorage.getItem(STORAGE_KEY)
    if (saved === 'en' || saved === 'zh-CN') return saved
  } catch {
    /* storage unavailable */
  }
  return detectLocale()
}

export function persistLocale(l: Locale): void {
  try {
    localStorage.setItem(STORAGE_KEY, l)
  } catch {
    /* ignore */
  }
}

export const i18n = createI18n({
  legacy: false,
  locale: initialLocale(),
  fallbackLocale: 'en',
  messages: { en, 'zh-CN': zhCN },
  missingWarn: false,
  fallbackWarn: false,
})

export function setLocale(l: Locale): void {
  i18n.global.locale.value = l
  persistLocale(l)
  if (typeof document !== 'undefined') document.documentElement.lang = l
}

/** Current locale outside of components (for Intl formatting). */
export function currentLocale(): Locale {
  return i18n.global.locale.value as Locale
}
