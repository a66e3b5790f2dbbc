import { afterEach, describe, expect, it, vi } from 'vitest'
import { chatBody, curlFor, errorFrom, listModels, shellQuote, streamChat, V1Error } from './v1Client'

function sse(chunks: string[]): Response {
  const enc = new TextEncoder()
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (const s of chunks) c.enqueue(enc.encode(s))
      c.close()
    },
  })
  return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } })
}
const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })
const chunk = (content: string | null, extra: Record<string, unknown> = {}) =>
  `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: content === null ? [] : [{ delta: { content } }], ...extra })}\n\n`

afterEach(() => vi.restoreAllMocks())

describe('listModels', () => {
  it('sends only the API key and returns the list', async () => {
    const fetch = vi
      .spyOn(globalThis, 'fetch')
      .mockResolvedValue(json({ object: 'list', data: [{ id: 'llama3.2:latest' }] }))
    expect(await listModels('http://x/v1', ' mt-abc ')).toEqual([{ id: 'llama3.2:latest' }])
    const [url, init] = fetch.mock.calls[0]!
    expect(url).toBe('http://x/v1/models')
    expect(init?.headers).toEqual({ Authorization: 'Bearer mt-abc' })
    expect(init?.credentials).toBe('omit')
  })

  it("raises OpenAI's error shape as a V1Error with message and code", async () => {
    vi.spyOn(globalThis, 'fetch').mockResolvedValue(
      json({ error: { message: 'invalid API key', type: 'invalid_request_error', code: 'invalid_api_key' } }, 401),
    )
    const err = await listModels('/v1', 'mt-bad').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(V1Error)
    expect(err).toMatchObject({ message: 'invalid API key', code: 'invalid_api_key', status: 401 })
  })

  it('names the status when the body is not JSON', async () => {
    vi.spyOn(globalThis, 'fetch').mockResolvedValue(new Response('bad gateway', { status: 502 }))
    await expect(listModels('/v1', 'mt-x')).rejects.toMatchObject({ message: 'HTTP 502', code: null })
  })
})

describe('streamChat', () => {
  it('streams the reply, keeps the usage chunk and measures the time to first token', async () => {
    const fetch = vi
      .spyOn(globalThis, 'fetch')
      .mockResolvedValue(
        sse([
          ': ping\n\n',
          chunk(''),
          chunk('Hel'),
          chunk('lo', { choices: [{ delta: { content: 'lo' }, finish_reason: 'stop' }] }).slice(0, 20),
          chunk('lo', { choices: [{ delta: { content: 'lo' }, finish_reason: 'stop' }] }).slice(20),
          chunk(null, { usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }),
          'data: [DONE]\n\n',
        ]),
      )
    let t = 100
    const now = () => (t += 10)
    const pieces: string[] = []
    const r = await streamChat('/v1', 'mt-k', 'm1', 'hi', (p) => pieces.push(p), undefined, now)
    expect(pieces).toEqual(['Hel', 'lo'])
    expect(r).toMatchObject({
      text: 'Hello',
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
      finishReason: 'stop',
      ttftMs: 10,
    })
    expect(r.totalMs).toBeGreaterThan(r.ttftMs!)
    const init = fetch.mock.calls[0]![1]!
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer mt-k')
    expect(JSON.parse(init.body as string)).toEqual(chatBody('m1', 'hi'))
    expect(chatBody('m1', 'hi')).toMatchObject({ stream: true, stream_options: { include_usage: true } })
  })

  it('raises an error object sent inside the stream', async () => {
    vi.spyOn(globalThis, 'fetch').mockResolvedValue(
      sse([chunk('a'), `data: ${JSON.stringify({ error: { message: 'upstream timed out', code: 'timeout' } })}\n\n`]),
    )
    await expect(streamChat('/v1', 'mt-k', 'm', 'x', () => {})).rejects.toMatchObject({
      message: 'upstream timed out',
      code: 'timeout',
    })
  })

  it('raises an error answer before the stream', async () => {
    vi.spyOn(globalThis, 'fetch').mockResolvedValue(
      json(
        { error: { message: "model 'nope' not found", type: 'invalid_request_error', code: 'model_not_found' } },
        404,
      ),
    )
    await expect(streamChat('/v1', 'mt-k', 'nope', 'x', () => {})).rejects.toMatchObject({
      code: 'model_not_found',
      status: 404,
    })
  })
})

describe('helpers', () => {
  it('errorFrom ignores bodies without an error object', () => {
    expect(errorFrom({ choices: [] }, 200)).toBeNull()
    expect(errorFrom(null, 500)).toBeNull()
  })

  it('curlFor quotes for the shell and streams with include_usage', () => {
    const c = curlFor('http://h:1/v1', 'mt-k', 'm', "it's")
    expect(c).toContain('curl -N http://h:1/v1/chat/completions')
    expect(c).toContain("'Authorization: Bearer mt-k'")
    expect(c).toContain(`-d ${shellQuote(JSON.stringify(chatBody('m', "it's")))}`)
    expect(shellQuote("it's")).toBe(`'it'\\''s'`)
  })
})
