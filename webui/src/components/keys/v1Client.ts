/**
 * A minimal client for ModelTrain's OpenAI-compatible `/v1` API, used by the "try it" panel.
 *
 * It authenticates with an API key (`Authorization: Bearer mt-…`) and nothing else: never the UI's
 * access token (a UI token never authenticates `/v1`, docs/security.md). It calls `fetch` directly,
 * not the UI's `http` client, so no session header or token refresh can slip in.
 */
import { readSse, parseData } from '@/api/sse'

/** An error from `/v1`, in OpenAI's shape `{"error": {"message", "type", "code"}}`. */
export class V1Error extends Error {
  constructor(
    message: string,
    readonly code: string | null,
    readonly status: number,
    readonly type: string | null = null,
  ) {
    super(message)
    this.name = 'V1Error'
  }
}

export interface V1Model {
  id: string
  owned_by?: string
}

export interface V1Usage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
}

export interface V1ChatResult {
  text: string
  usage: V1Usage | null
  /** Milliseconds from sending the request to the first content token (null when none came). */
  ttftMs: number | null
  /** Milliseconds from sending the request to the end of the stream. */
  totalMs: number
  finishReason: string | null
}

interface ErrorBody {
  error?: { message?: string; type?: string; code?: string | null }
}

interface Chunk extends ErrorBody {
  choices?: Array<{ delta?: { content?: string | null }; finish_reason?: string | null }>
  usage?: V1Usage | null
}

/** The error object of an OpenAI-shaped body (or null when there is none). */
export function errorFrom(body: unknown, status: number): V1Error | null {
  const err = (body as ErrorBody | null)?.error
  if (!err || typeof err !== 'object') return null
  return new V1Error(err.message || `HTTP ${status}`, err.code ?? null, status, err.type ?? null)
}

async function failure(res: Response): Promise<V1Error> {
  let body: unknown = null
  try {
    body = await res.json()
  } catch {
    /* not JSON */
  }
  return errorFrom(body, res.status) ?? new V1Error(`HTTP ${res.status}`, null, res.status)
}

const headers = (key: string) => ({ Authorization: `Bearer ${key.trim()}` })

/** `GET /v1/models` with the key: the models this key may use. */
export async function listModels(base: string, key: string, signal?: AbortSignal): Promise<V1Model[]> {
  const res = await fetch(`${base}/models`, { headers: headers(key), signal, credentials: 'omit' })
  if (!res.ok) throw await failure(res)
  const body = (await res.json()) as { data?: V1Model[] }
  return body.data ?? []
}

export function chatBody(model: string, message: string) {
  return {
    model,
    messages: [{ role: 'user', content: message }],
    stream: true,
    stream_options: { include_usage: true },
  }
}

/**
 * `POST /v1/chat/completions` streamed: `onDelta` gets each piece of the reply; resolves with the whole
 * reply, the usage numbers and the time to the first token. Rejects with a `V1Error` for an error
 * answer or an error object inside the stream.
 */
export async function streamChat(
  base: string,
  key: string,
  model: string,
  message: string,
  onDelta: (text: string) => void,
  signal?: AbortSignal,
  now: () => number = () => performance.now(),
): Promise<V1ChatResult> {
  const started = now()
  const res = await fetch(`${base}/chat/completions`, {
    method: 'POST',
    headers: { ...headers(key), 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify(chatBody(model, message)),
    signal,
    credentials: 'omit',
  })
  if (!res.ok) throw await failure(res)
  const result: V1ChatResult = { text: '', usage: null, ttftMs: null, totalMs: 0, finishReason: null }
  let streamError: V1Error | null = null
  let done = false
  await readSse(
    res,
    (e) => {
      if (done || streamError) return
      if (e.data === '[DONE]') {
        done = true
        return
      }
      const chunk = parseData<Chunk>(e)
      if (!chunk) return
      const err = errorFrom(chunk, 200)
      if (err) {
        streamError = err
        return
      }
      if (chunk.usage) result.usage = chunk.usage
      for (const choice of chunk.choices ?? []) {
        const piece = choice.delta?.content
        if (piece) {
          if (result.ttftMs === null) result.ttftMs = now() - started
          result.text += piece
          onDelta(piece)
        }
        if (choice.finish_reason) result.finishReason = choice.finish_reason
      }
    },
    signal,
  )
  if (streamError) throw streamError
  result.totalMs = now() - started
  return result
}

/** Quotes a string for a POSIX shell (single quotes). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

/** The curl command equivalent to `streamChat` (the key as typed: the user asked to see it). */
export function curlFor(base: string, key: string, model: string, message: string): string {
  return [
    `curl -N ${base}/chat/completions`,
    `  -H ${shellQuote(`Authorization: Bearer ${key.trim() || 'mt-…'}`)}`,
    `  -H 'Content-Type: application/json'`,
    `  -d ${shellQuote(JSON.stringify(chatBody(model, message)))}`,
  ].join(' \\\n')
}
