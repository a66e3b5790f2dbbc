import { defineStore } from 'pinia'
import { computed, reactive, ref } from 'vue'
import { ollamaApi } from '@/api/endpoints'
import { ApiError } from '@/api/http'
import { parseData, readSse } from '@/api/sse'
import type { PullProgress } from '@/api/types'

export type PullState = 'running' | 'done' | 'error' | 'cancelled'

export interface PullEntry {
  name: string
  state: PullState
  progress: PullProgress
  error: string | null
  controller: AbortController | null
}

/** Model pulls: several at once, each with live progress; re-attached after a reload. */
export const usePullsStore = defineStore('pulls', () => {
  const entries = reactive(new Map<string, PullEntry>())
  /** Bumped whenever a pull finishes, so views can refresh the model list. */
  const finished = ref(0)
  const list = computed(() => [...entries.values()])
  const active = computed(() => list.value.filter((e) => e.state === 'running'))

  function entry(name: string): PullEntry {
    let e = entries.get(name)
    if (!e) {
      entries.set(name, {
        name,
        state: 'running',
        progress: { name, status: 'starting' },
        error: null,
        controller: null,
      })
      e = entries.get(name)!
    }
    return e
  }

  async function consume(name: string, open: (signal: AbortSignal) => Promise<Response>) {
    const e = entry(name)
    e.controller?.abort()
    const controller = new AbortController()
    e.controller = controller
    e.state = 'running'
    e.error = null
    let terminal = false
    try {
      const res = await open(controller.signal)
      await readSse(
        res,
        (ev) => {
          if (ev.event === 'progress') {
            const p = parseData<PullProgress>(ev)
            if (p) e.progress = { ...e.progress, ...p, name }
          } else if (ev.event === 'done') {
            terminal = true
            e.state = 'done'
            e.progress = { ...e.progress, status: 'success', percent: 100 }
            finished.value++
          } else if (ev.event === 'error') {
            terminal = true
            const p = parseData<{ code?: string; message?: string }>(ev)
            e.state = p?.code === 'cancelled' ? 'cancelled' : 'error'
            e.error = p?.message ?? null
          }
        },
        controller.signal,
      )
      if (!terminal && !controller.signal.aborted) {
        e.state = 'error'
        e.error = e.error ?? 'stream ended'
      }
    } catch (err) {
      if (controller.signal.aborted) return
      e.state = 'error'
      e.error = err instanceof ApiError ? err.message : String(err)
      if (err instanceof ApiError) throw err
    } finally {
      if (e.controller === controller) e.controller = null
    }
  }

  function start(name: string) {
    return consume(name, (signal) => ollamaApi.pull(name, signal))
  }

  /** After a reload: list the server's active pulls and follow each one's progress again. */
  async function reattach() {
    const items = await ollamaApi.pulls()
    for (const p of items) {
      const known = entries.get(p.name)
      if (p.state && p.state !== 'running' && !known) continue // finished before this page loaded
      const e = entry(p.name)
      e.progress = { ...e.progress, ...p }
      if (p.state && p.state !== 'running') {
        if (e.state === 'running' && !e.controller) {
          e.state = p.state === 'success' ? 'done' : p.state === 'cancelled' ? 'cancelled' : 'error'
          e.error = p.error?.message ?? null
        }
        continue
      }
      if (!e.controller && e.state === 'running') {
        consume(p.name, (signal) => ollamaApi.pullEvents(p.name, signal)).catch(() => {})
      }
    }
  }

  async function cancel(name: string) {
    const e = entries.get(name)
    try {
      await ollamaApi.cancelPull(name)
    } finally {
      if (e) {
        e.controller?.abort()
        e.state = 'cancelled'
      }
    }
  }

  function dismiss(name: string) {
    const e = entries.get(name)
    if (e && e.state !== 'running') entries.delete(name)
  }

  return { entries, list, active, finished, start, reattach, cancel, dismiss }
})
