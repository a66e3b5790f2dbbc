import { onBeforeUnmount, ref } from 'vue'

export function useMediaQuery(query: string) {
  const mq = typeof window !== 'undefined' && window.matchMedia ? window.matchMedia(query) : null
  const matches = ref(!!mq?.matches)
  const onChange = (e: MediaQueryListEvent) => {
    matches.value = e.matches
  }
  mq?.addEventListener?.('change', onChange)
  onBeforeUnmount(() => mq?.removeEventListener?.('change', onChange))
  return matches
}
