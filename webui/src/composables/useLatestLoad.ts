import { ref, type Ref } from 'vue'

export interface LatestLoad<T> {
  /** The latest answer; kept while a newer request runs, so the view does not flash empty. */
  data: Ref<T | null>
  /** The latest request's failure (cleared by its next success); views may set it themselves. */
  error: Ref<unknown>
  loading: Ref<boolean>
  /** Runs the fetch; an answer that arrives after a newer request started is dropped. */
  load: () => Promise<void>
}

/**
 * One remote read with loading and error state, where only the newest request counts: when the inputs change
 * quickly, a slow, stale answer never overwrites a newer one (nor its loading or error state).
 */
export function useLatestLoad<T>(fetch: () => Promise<T>): LatestLoad<T> {
  const data = ref<T | null>(null) as Ref<T | null>
  const error = ref<unknown>(null)
  const loading = ref(false)
  let seq = 0

  async function load() {
    const mine = ++seq
    loading.value = true
    try {
      const result = await fetch()
      if (mine !== seq) return
      data.value = result
      error.value = null
    } catch (e) {
      if (mine === seq) error.value = e
    } finally {
      if (mine === seq) loading.value = false
    }
  }

  return { data, error, loading, load }
}
