import { defineStore } from 'pinia'
import { computed, reactive, ref } from 'vue'
import { ollamaApi } from '@/api/endpoints'
import { ApiError } from '@/api/http'
import { parseData, readSse } from '@/api/sse'
import type { PullProgress } from '@/api/types'

export type PullState = 'running' | 'done' | 'error' | 'cancelled'

export interface PullEntry {
  name: string
  /** The Ollama provider the pull runs on (null: the default Ollama). */
  provider: string | null
  state: PullState
  progress: PullProgress
  error: string | null
  controller: AbortController | null
}

const keyOf = (provider: string | null, name: string) => `${provider ?? ''}\u0000${name}`

/**
 * Model pulls: several at once, each with live progress; re-attached after a reload. Each pull belongs to
 * one Ollama host; `list` and `active` show those of the host chosen with `setProvider`.
 */
export const usePullsStore = defineStore('pulls', () => {
  const entries = reactive(new Map<string, PullEntry>())
  /** The Ollama host the Models page shows (null: the default Ollama). */
  const provider = ref<string | null>(null)
  /** Bumped whenever a pull finishes, so views can refresh the model list. */
  const finished = ref(0)
  const list = computed(() => [...entries.values()].filter((e) => e.provider === provider.value))
  const active = computed(() => list.value.filter((e) => e.state === 'running'))

  function setProvider(id: string | null) {
    provider.value = id
  }

  function entry(name: string, host: string | null = provider.value): PullEntry {
    const key = keyOf(host, name)
    let e = entries.get(key)
    if (!e) {
      entries.set(key, {
        name,
        provider: host,
        state: 'running',
        progress: { name, status: 'starting' },
        error: null,
        controller: null,
      })
      e = entries.get(key)!
    }
    return e
  }

  async function consume(
    name: string,
    host: string | null,
    open: (signal: AbortSignal, host: string | null) => Promise<Response>,
  ) {
    const e = entry(name, host)
    e.controller?.abort()
    const controller = new AbortController()
    e.controller = controller
    e.state = 'running'
    e.error = null
    let terminal = false
    try {
      const res = await open(controller.signal, host)
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
    return consume(name, provider.value, (signal, host) => ollamaApi.pull(name, signal, host))
  }

  /** The same pull on another Ollama host (e.g. every host of a host group). */
  function startOn(name: string, host: string | null) {
    return consume(name, host, (signal, h) => ollamaApi.pull(name, signal, h))
  }

  /** After a reload: list the server's active pulls and follow each one's progress again. */
  async function reattach() {
    const host = provider.value
    const items = await ollamaApi.pulls(host)
    for (const p of items) {
      const known = entries.get(keyOf(host, p.name))
      if (p.state && p.state !== 'running' && !known) continue // finished before this page loaded
      const e = entry(p.name, host)
      e.progress = { ...e.progress, ...p }
      if (p.state && p.state !== 'running') {
        if (e.state === 'running' && !e.controller) {
          e.state = p.state === 'success' ? 'done' : p.state === 'cancelled' ? 'cancelled' : 'error'
          e.error = p.error?.message ?? null
        }
        continue
      }
      if (!e.controller && e.state === 'running') {
        consume(p.name, host, (signal, h) => ollamaApi.pullEvents(p.name, signal, h)).catch(() => {})
      }
    }
  }

  async function cancel(name: string) {
    const host = provider.value
    const e = entries.get(keyOf(host, name))
    try {
      await ollamaApi.cancelPull(name, host)
    } finally {
      if (e) {
        e.controller?.abort()
        e.state = 'cancelled'
      }
    }
  }

  function dismiss(name: string) {
    const key = keyOf(provider.value, name)
    const e = entries.get(key)
    if (e && e.state !== 'running') entries.delete(key)
  }

  return { entries, provider, setProvider, list, active, finished, start, startOn, reattach, cancel, dismiss }
})
