import { ref, watch } from 'vue'
import { useI18n } from 'vue-i18n'
import {
  fenceLanguages,
  hasKatex,
  isLanguageLoaded,
  needsMath,
  registerLanguage,
  renderMarkdown,
  setKatex,
  setLabels,
} from '@/lib/markdown'
import { languageLoaders } from '@/lib/hljsLanguages'

/** Bumped whenever a lazily loaded piece (KaTeX, a grammar, labels) changes how text renders. */
const renderEpoch = ref(0)
let katexPromise: Promise<void> | null = null
const langPromises = new Map<string, Promise<void>>()
const cache = new Map<string, string>()
const CACHE_MAX = 400

function bump() {
  cache.clear()
  renderEpoch.value++
}

function loadKatex() {
  if (!katexPromise) {
    katexPromise = import('@/lib/katexLoader')
      .then((m) => {
        setKatex(m.default)
        bump()
      })
      .catch(() => {
        katexPromise = null
      })
  }
  return katexPromise
}

function loadLanguage(name: string) {
  if (isLanguageLoaded(name) || !languageLoaders[name]) return
  if (!langPromises.has(name)) {
    langPromises.set(
      name,
      languageLoaders[name]()
        .then((m) => {
          registerLanguage(name, m.default)
          bump()
        })
        .catch(() => {
          langPromises.delete(name)
        }),
    )
  }
}

/** Starts loading what `src` needs (math, grammars); rendering updates when they arrive. */
export function prepare(src: string) {
  if (!hasKatex() && needsMath(src)) void loadKatex()
  for (const l of fenceLanguages(src)) loadLanguage(l)
}

/** Cached, sanitised markdown rendering. */
export function renderCached(src: string): string {
  void renderEpoch.value // dependency for reactive callers
  const hit = cache.get(src)
  if (hit !== undefined) {
    cache.delete(src)
    cache.set(src, hit)
    return hit
  }
  prepare(src)
  const html = renderMarkdown(src)
  cache.set(src, html)
  if (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value as string)
  return html
}

/** Keeps the renderer's translated labels (copy-code buttons) in step with the locale. */
export function useMarkdownLabels() {
  const { t, locale } = useI18n()
  watch(
    locale,
    () => {
      setLabels({ copy: t('chat.copyCode') })
      bump()
    },
    { immediate: true },
  )
}

export function useMarkdown() {
  return { render: renderCached, prepare, epoch: renderEpoch }
}
