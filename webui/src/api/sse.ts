/**
 * Server-Sent Events parser following the WHATWG rules (docs/protocols.md, E.6), for fetch() streams.
 * Accepts CRLF, LF and CR line endings, lines and multi-byte characters split across chunks,
 * comments, multi-line data, a leading BOM; an unterminated event at EOF is discarded.
 */

export interface SseEvent {
  event: string
  data: string
  id: string
}

export class SseParser {
  private buf = ''
  private data = ''
  private hasData = false
  private eventType = ''
  private lastId = ''
  private started = false
  private pendingCR = false
  retry: number | null = null

  constructor(private readonly onEvent: (e: SseEvent) => void) {}

  /** Feed decoded text (use TextDecoder with {stream:true} for bytes). */
  push(text: string): void {
    if (!this.started && text.length) {
      this.started = true
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
    }
    if (this.pendingCR) {
      // a CR ended the previous chunk: a following LF belongs to it
      if (text.startsWith('\n')) text = text.slice(1)
      this.pendingCR = false
    }
    this.buf += text
    let start = 0
    const buf = this.buf
    for (let i = 0; i < buf.length; i++) {
      const c = buf.charCodeAt(i)
      if (c === 10 || c === 13) {
        const line = buf.slice(start, i)
        if (c === 13) {
          if (i + 1 < buf.length) {
            if (buf.charCodeAt(i + 1) === 10) i++
          } else {
            this.pendingCR = true
          }
        }
        start = i + 1
        this.line(line)
      }
    }
    this.buf = buf.slice(start)
  }

  /** End of stream: an event not terminated by a blank line is discarded. */
  end(): void {
    this.buf = ''
    this.data = ''
    this.hasData = false
    this.eventType = ''
  }

  private line(line: string): void {
    if (line === '') {
      this.dispatch()
      return
    }
    if (line.charCodeAt(0) === 58 /* : */) return
    const idx = line.indexOf(':')
    let field: string
    let value: string
    if (idx === -1) {
      field = line
      value = ''
    } else {
      field = line.slice(0, idx)
      value = line.slice(idx + 1)
      if (value.charCodeAt(0) === 32) value = value.slice(1)
    }
    switch (field) {
      case 'event':
        this.eventType = value
        break
      case 'data':
        this.data += value + '\n'
        this.hasData = true
        break
      case 'id':
        if (!value.includes('\u0000')) this.lastId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value)
        break
      default:
        break
    }
  }

  private dispatch(): void {
    if (!this.hasData) {
      this.eventType = ''
      return
    }
    let data = this.data
    if (data.endsWith('\n')) data = data.slice(0, -1)
    const event = this.eventType || 'message'
    this.data = ''
    this.hasData = false
    this.eventType = ''
    this.onEvent({ event, data, id: this.lastId })
  }
}

/** Reads a fetch Response body as SSE, calling onEvent for each event, until the stream ends. */
export async function readSse(res: Response, onEvent: (e: SseEvent) => void, signal?: AbortSignal): Promise<void> {
  if (!res.body) return
  const reader = res.body.getReader()
  const decoder = new TextDecoder('utf-8')
  const parser = new SseParser(onEvent)
  const abort = () => {
    reader.cancel().catch(() => {})
  }
  signal?.addEventListener('abort', abort, { once: true })
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      parser.push(decoder.decode(value, { stream: true }))
    }
    parser.push(decoder.decode())
    parser.end()
  } finally {
    signal?.removeEventListener('abort', abort)
    try {
      reader.releaseLock()
    } catch {
      /* already released */
    }
  }
}

/** Parses an SSE event's JSON data; returns null for malformed data. */
export function parseData<T>(e: SseEvent): T | null {
  try {
    return JSON.parse(e.data) as T
  } catch {
    return null
  }
}
