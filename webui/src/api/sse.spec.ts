import { describe, expect, it } from 'vitest'
import { SseParser, readSse, type SseEvent } from './sse'

function parse(chunks: string[]): SseEvent[] {
  const out: SseEvent[] = []
  const p = new SseParser((e) => out.push(e))
  for (const c of chunks) p.push(c)
  p.end()
  return out
}

describe('SseParser', () => {
  it('parses named events with JSON data', () => {
    const ev = parse(['event: meta\ndata: {"a":1}\n\nevent: delta\ndata: {"content":"hi"}\n\n'])
    expect(ev).toEqual([
      { event: 'meta', data: '{"a":1}', id: '' },
      { event: 'delta', data: '{"content":"hi"}', id: '' },
    ])
  })

  it('defaults the type to message and resets it after dispatch', () => {
    const ev = parse(['event: x\ndata: 1\n\ndata: 2\n\n'])
    expect(ev.map((e) => e.event)).toEqual(['x', 'message'])
  })

  it('handles chunk boundaries anywhere, including inside field names and values', () => {
    const text = 'event: delta\ndata: {"content":"hello"}\n\n'
    for (let i = 1; i < text.length; i++) {
      const ev = parse([text.slice(0, i), text.slice(i)])
      expect(ev).toEqual([{ event: 'delta', data: '{"content":"hello"}', id: '' }])
    }
    const bytes = text.split('')
    expect(parse(bytes)).toHaveLength(1)
  })

  it('accepts CRLF, LF and lone CR line endings, also CRLF split across chunks', () => {
    expect(parse(['data: a\r\n\r\n'])).toEqual([{ event: 'message', data: 'a', id: '' }])
    expect(parse(['data: a\r\r'])).toEqual([{ event: 'message', data: 'a', id: '' }])
    expect(parse(['data: a\r', '\n\r', '\n'])).toEqual([{ event: 'message', data: 'a', id: '' }])
    expect(parse(['data: a\r', '\ndata: b\r\n\r\n'])).toEqual([{ event: 'message', data: 'a\nb', id: '' }])
  })

  it('ignores comments (keep-alive pings) and unknown fields', () => {
    const ev = parse([': ping\n\n: ping\nfoo: bar\ndata: x\n\n'])
    expect(ev).toEqual([{ event: 'message', data: 'x', id: '' }])
  })

  it('joins multi-line data with newlines and strips exactly one leading space', () => {
    const ev = parse(['data: line1\ndata:  line2\ndata:line3\ndata\n\n'])
    expect(ev[0].data).toBe('line1\n line2\nline3\n')
  })

  it('fires no event for an empty data buffer, and discards an unterminated event at EOF', () => {
    expect(parse(['event: x\n\n'])).toEqual([])
    expect(parse(['data: never\n'])).toEqual([])
  })

  it('keeps the last event id across events, ignores ids with NUL, reads retry digits only', () => {
    const out: SseEvent[] = []
    const p = new SseParser((e) => out.push(e))
    p.push('id: 7\ndata: a\n\ndata: b\n\nid: bad\u0000\ndata: c\n\nretry: 12x\nretry: 3000\n\n')
    expect(out.map((e) => e.id)).toEqual(['7', '7', '7'])
    expect(p.retry).toBe(3000)
  })

  it('strips one leading BOM', () => {
    expect(parse(['\ufeffdata: a\n\n'])[0].data).toBe('a')
  })

  it('splits the field at the first colon only', () => {
    expect(parse(['data: {"t":"a:b"}\n\n'])[0].data).toBe('{"t":"a:b"}')
  })
})

describe('readSse', () => {
  it('decodes multi-byte characters split across byte chunks', async () => {
    const bytes = new TextEncoder().encode('event: delta\ndata: {"content":"你好🙂"}\n\n')
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 3) c.enqueue(bytes.slice(i, i + 3))
        c.close()
      },
    })
    const out: SseEvent[] = []
    await readSse(new Response(stream), (e) => out.push(e))
    expect(JSON.parse(out[0].data).content).toBe('你好🙂')
  })
})
