import { ref } from 'vue'
import { ollamaRuntimeApi } from '@/api/endpoints'
import { ApiError } from '@/api/http'
import { parseData, readSse } from '@/api/sse'
import type { OllamaRuntime } from '@/api/types'

/** One progress event of `POST /api/ollama/runtime/install` (or `/update`). */
export interface RuntimeProgress {
  phase: 'resolving' | 'downloading' | 'verifying' | 'unpacking' | 'starting' | string
  asset?: string
  completed?: number
  total?: number | null
  percent?: number | null
  bytes_per_s?: number | null
  version?: string
}

export type RuntimeJobState = 'idle' | 'running' | 'done' | 'error' | 'cancelled'

/** Error codes the install can end with; each has a translation under `ollamaRuntime.errors`. */
export const RUNTIME_ERROR_CODES = [
  'runtime_not_found',
  'runtime_network',
  'runtime_stalled',
  'runtime_truncated',
  'runtime_checksum_mismatch',
  'runtime_disk_full',
  'runtime_cancelled',
  'runtime_unsupported',
  'runtime_broken',
  'runtime_start_failed',
  'runtime_busy',
  'runtime_user_installed',
  'runtime_not_installed',
  'ollama_not_local',
] as const

/**
 * The Ollama runtime install/update flow: what is installed (`info`), the running job's progress, its end.
 * `error` holds a code (translate with `ollamaRuntime.errors.<code>` when known) and the server's message.
 */
export function useRuntimeInstall() {
  const info = ref<OllamaRuntime | null>(null)
  const loading = ref(false)
  const loadError = ref<unknown>(null)
  const state = ref<RuntimeJobState>('idle')
  const progress = ref<RuntimeProgress | null>(null)
  const error = ref<{ code: string; message: string } | null>(null)
  const version = ref<string | null>(null)
  let controller: AbortController | null = null

  async function load(check: boolean) {
    loading.value = true
    try {
      info.value = await ollamaRuntimeApi.get(check)
      loadError.value = null
    } catch (e) {
      loadError.value = e
    } finally {
      loading.value = false
    }
  }

  /** Runs an install or update to its end; resolves true when it succeeded. */
  async function run(kind: 'install' | 'update'): Promise<boolean> {
    controller?.abort()
    controller = new AbortController()
    state.value = 'running'
    error.value = null
    progress.value = { phase: 'resolving' }
    let ended = false
    try {
      const res = await ollamaRuntimeApi.start(kind, controller.signal)
      await readSse(
        res,
        (ev) => {
          if (ev.event === 'progress') {
            const p = parseData<RuntimeProgress>(ev)
            if (p) progress.value = p
          } else if (ev.event === 'done') {
            ended = true
            state.value = 'done'
            version.value = parseData<{ version?: string }>(ev)?.version ?? null
          } else if (ev.event === 'error') {
            ended = true
            const p = parseData<{ code?: string; message?: string }>(ev)
            error.value = { code: p?.code ?? 'runtime_failed', message: p?.message ?? '' }
            state.value = p?.code === 'runtime_cancelled' ? 'cancelled' : 'error'
          }
        },
        controller.signal,
      )
      if (!ended) {
        state.value = 'error'
        error.value = { code: 'runtime_network', message: '' }
      }
    } catch (e) {
      if (controller?.signal.aborted) return false
      state.value = 'error'
      error.value =
        e instanceof ApiError
          ? { code: e.code || 'runtime_failed', message: e.message }
          : { code: 'runtime_network', message: e instanceof Error ? e.message : '' }
    }
    return (state.value as RuntimeJobState) === 'done' // set by the event callback
  }

  async function cancel() {
    try {
      await ollamaRuntimeApi.cancel()
    } catch {
      // already ended: the stream reports how
    }
  }

  function dispose() {
    controller?.abort() // the job goes on on the server; only this view stops listening
  }

  return { info, loading, loadError, state, progress, error, version, load, run, cancel, dispose }
}
