import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { defineComponent, nextTick } from 'vue'
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { usePagedQuery, type Page, type PageRequest } from './usePagedQuery'

interface Row {
  id: string
}
interface Query {
  level?: string
  key?: string
}
type Answer = Page<Row> & { extra: string }

/** A fetch whose answers the test hands out, in any order. */
function controlledFetch() {
  const calls: { query: Query; page: PageRequest; resolve: (a: Answer) => void; reject: (e: unknown) => void }[] = []
  const fetch = vi.fn(
    (query: Query, page: PageRequest) =>
      new Promise<Answer>((resolve, reject) => calls.push({ query, page, resolve, reject })),
  )
  const answer = (extra: string, total = 1): Answer => ({ items: [{ id: extra }], total, extra })
  return { fetch, calls, answer }
}

const wrappers: VueWrapper[] = []
function host(fetch: (q: Query, p: PageRequest) => Promise<Answer>) {
  let api!: ReturnType<typeof setup>
  function setup() {
    return usePagedQuery({
      filters: () => ({ level: null as string | null, key: '', tags: [] as string[] }),
      textFilters: ['key'],
      query: (f): Query => ({ level: f.level ?? undefined, key: f.key.trim() || undefined }),
      fetch,
      totalLabel: (n) => `${n} in all`,
    })
  }
  const w = mount(
    defineComponent({
      setup() {
        api = setup()
        return () => null
      },
    }),
  )
  wrappers.push(w)
  return api
}

afterEach(() => {
  wrappers.splice(0).forEach((w) => w.unmount())
  vi.useRealTimers()
})

describe('usePagedQuery', () => {
  let c: ReturnType<typeof controlledFetch>
  beforeEach(() => {
    c = controlledFetch()
  })

  it('loads the first page on mount and exposes the page, its rows and the total', async () => {
    const q = host(c.fetch)
    expect(c.fetch).toHaveBeenCalledTimes(1)
    expect(c.calls[0].page).toEqual({ page: 1, pageSize: 50, offset: 0 })
    expect(q.loading.value).toBe(true)
    c.calls[0].resolve(c.answer('a', 120))
    await flushPromises()
    expect(q.loading.value).toBe(false)
    expect(q.rows.value).toEqual([{ id: 'a' }])
    expect(q.data.value?.extra).toBe('a')
    expect(q.pagination.value.itemCount).toBe(120)
    expect(q.pagination.value.prefix()).toBe('120 in all')
    expect(q.pagination.value.pageSizes).toEqual([25, 50, 100, 200])
  })

  it('drops a stale answer (and a stale failure) that arrives after a newer one', async () => {
    const q = host(c.fetch)
    q.filters.level = 'alert'
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(2)
    expect(c.calls[1].query).toEqual({ level: 'alert', key: undefined })

    c.calls[1].resolve(c.answer('new'))
    await flushPromises()
    expect(q.data.value?.extra).toBe('new')
    expect(q.loading.value).toBe(false)

    c.calls[0].resolve(c.answer('old'))
    await flushPromises()
    expect(q.data.value?.extra).toBe('new')

    q.filters.level = 'warning'
    await nextTick()
    q.filters.level = null
    await nextTick()
    c.calls[3].resolve(c.answer('latest'))
    c.calls[2].reject(new Error('stale'))
    await flushPromises()
    expect(q.error.value).toBeNull()
    expect(q.data.value?.extra).toBe('latest')
  })

  it('keeps the last page on a failure and clears the error on the next success', async () => {
    const q = host(c.fetch)
    c.calls[0].resolve(c.answer('a'))
    await flushPromises()
    void q.load()
    c.calls[1].reject(new Error('down'))
    await flushPromises()
    expect(q.error.value).toBeInstanceOf(Error)
    expect(q.data.value?.extra).toBe('a')
    void q.load()
    c.calls[2].resolve(c.answer('b'))
    await flushPromises()
    expect(q.error.value).toBeNull()
  })

  it('goes back to page 1 when a filter or the page size changes, with one request each', async () => {
    const q = host(c.fetch)
    q.pagination.value.onUpdatePage(3)
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(2)
    expect(c.calls[1].page).toEqual({ page: 3, pageSize: 50, offset: 100 })

    q.filters.tags.push('x') // a change inside an array counts too
    await nextTick()
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(3)
    expect(q.page.value).toBe(1)
    expect(c.calls[2].page.page).toBe(1)

    q.pagination.value.onUpdatePage(2)
    await nextTick()
    q.pagination.value.onUpdatePageSize(25)
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(5)
    expect(c.calls[4].page).toEqual({ page: 1, pageSize: 25, offset: 0 })
  })

  it('debounces the text filter: one request 300 ms after the last keystroke, on page 1', async () => {
    vi.useFakeTimers()
    const q = host(c.fetch)
    q.pagination.value.onUpdatePage(2)
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(2)

    for (const text of ['c', 'cp', 'cpu']) {
      q.filters.key = text
      await nextTick()
      vi.advanceTimersByTime(200)
    }
    expect(c.fetch).toHaveBeenCalledTimes(2)
    vi.advanceTimersByTime(99)
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(2)
    vi.advanceTimersByTime(1)
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(3)
    expect(c.calls[2].query).toEqual({ level: undefined, key: 'cpu' })
    expect(c.calls[2].page.page).toBe(1)
  })

  it('loads at once, and only once, when a text and another filter change together (clear filters)', async () => {
    vi.useFakeTimers()
    const q = host(c.fetch)
    expect(q.filtered.value).toBe(false)
    q.filters.level = 'alert'
    await nextTick()
    q.filters.key = 'disk'
    await nextTick()
    vi.advanceTimersByTime(300)
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(3)
    expect(q.filtered.value).toBe(true)

    q.filters.key = 'disk.' // a pending debounce ...
    await nextTick()
    q.clearFilters() // ... is superseded by the clear
    await nextTick()
    expect(q.filtered.value).toBe(false)
    expect(c.fetch).toHaveBeenCalledTimes(4)
    expect(c.calls[3].query).toEqual({ level: undefined, key: undefined })
    vi.advanceTimersByTime(1000)
    await nextTick()
    expect(c.fetch).toHaveBeenCalledTimes(4)
  })
})
