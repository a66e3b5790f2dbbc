import { computed, onBeforeUnmount, onMounted, reactive, ref, watch, type ComputedRef, type Ref } from 'vue'
import { useLatestLoad } from './useLatestLoad'

/** What a paged list endpoint answers: one page of rows and the total across pages. */
export interface Page<Row> {
  items: Row[]
  total: number
}

/** The row type of a page type. */
export type RowOf<P extends Page<unknown>> = P['items'][number]

/** The page a fetch asks for: 1-based `page`, and the same as a row `offset` for limit/offset endpoints. */
export interface PageRequest {
  page: number
  pageSize: number
  offset: number
}

export interface PagedQueryOptions<F extends object, Q, P extends Page<unknown>> {
  /** The blank filters (a fresh object per call): the initial state, and what "clear filters" restores. */
  filters: () => F
  /** Free-text filters: their changes reload after `debounceMs` of quiet; any other filter reloads at once. */
  textFilters?: (keyof F)[]
  /** The request query the filters stand for. */
  query: (filters: F) => Q
  fetch: (query: Q, page: PageRequest) => Promise<P>
  /** The table's "N in all" text. */
  totalLabel: (total: number) => string
  pageSize?: number
  pageSizes?: number[]
  debounceMs?: number
}

export interface PagedQuery<F extends object, Q, P extends Page<unknown>> {
  filters: F
  /** Whether any filter differs from its blank value (shows the "clear filters" button). */
  filtered: ComputedRef<boolean>
  clearFilters: () => void
  query: ComputedRef<Q>
  page: Ref<number>
  pageSize: Ref<number>
  data: Ref<P | null>
  rows: ComputedRef<RowOf<P>[]>
  error: Ref<unknown>
  loading: Ref<boolean>
  /** Reloads the current page (the refresh button). */
  load: () => Promise<void>
  /** NDataTable's `pagination` (remote): page, size picker and the total as prefix. */
  pagination: ComputedRef<{
    page: number
    pageSize: number
    itemCount: number
    pageSizes: number[]
    showSizePicker: boolean
    prefix: () => string
    onUpdatePage: (page: number) => void
    onUpdatePageSize: (size: number) => void
  }>
}

/**
 * A filtered, remotely paged list: filters in a reactive object (free text debounced), page and page size,
 * loading and error state, and only the newest answer counts. Any filter change goes back to page 1.
 * Generic over the filters `F`, the request query `Q` and the page `P` (its rows are `RowOf<P>`), so a page
 * type with extra fields (e.g. the alert history's `instances`) keeps them on `data`.
 * Loads on mount; call it from a component's setup.
 */
export function usePagedQuery<F extends object, Q, P extends Page<unknown>>(
  options: PagedQueryOptions<F, Q, P>,
): PagedQuery<F, Q, P> {
  const debounceMs = options.debounceMs ?? 300
  const textKeys = new Set<keyof F>(options.textFilters ?? [])
  const filters = reactive(options.filters()) as F
  const keys = Object.keys(options.filters()) as (keyof F)[]
  const blank = JSON.stringify(options.filters())

  const snapshot = () => Object.fromEntries(keys.map((k) => [k, JSON.stringify(filters[k])])) as Record<keyof F, string>
  const filtered = computed(() => JSON.stringify(filters) !== blank)
  function clearFilters() {
    Object.assign(filters, options.filters())
  }

  const query = computed(() => options.query(filters))
  const page = ref(1)
  const pageSize = ref(options.pageSize ?? 50)
  const { data, error, loading, load } = useLatestLoad(() =>
    options.fetch(query.value, {
      page: page.value,
      pageSize: pageSize.value,
      offset: (page.value - 1) * pageSize.value,
    }),
  )

  /** Back to page 1 and load: once, whether or not the page changes. */
  function restart() {
    if (page.value !== 1) page.value = 1
    else void load()
  }

  let debounce: ReturnType<typeof setTimeout> | undefined
  watch(snapshot, (now, before) => {
    const changed = keys.filter((k) => now[k] !== before[k])
    if (!changed.length) return
    clearTimeout(debounce)
    if (changed.every((k) => textKeys.has(k))) debounce = setTimeout(restart, debounceMs)
    else restart()
  })
  watch([page, pageSize], () => void load())
  onMounted(load)
  onBeforeUnmount(() => clearTimeout(debounce))

  const rows = computed(() => (data.value?.items ?? []) as RowOf<P>[])
  const pagination = computed(() => ({
    page: page.value,
    pageSize: pageSize.value,
    itemCount: data.value?.total ?? 0,
    pageSizes: options.pageSizes ?? [25, 50, 100, 200],
    showSizePicker: true,
    prefix: () => options.totalLabel(data.value?.total ?? 0),
    onUpdatePage: (p: number) => {
      page.value = p
    },
    onUpdatePageSize: (s: number) => {
      pageSize.value = s
      page.value = 1
    },
  }))

  return { filters, filtered, clearFilters, query, page, pageSize, data, rows, error, loading, load, pagination }
}
