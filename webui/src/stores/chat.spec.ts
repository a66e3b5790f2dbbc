import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { useChatStore } from './chat'
import { useConversationsStore } from './conversations'
import { useModelsStore } from './models'

function sse(events: Array<[string, unknown]>, opts: { hold?: Promise<void>; holdAt?: number } = {}) {
  const enc = new TextEncoder()
  return new ReadableStream<Uint8Array>({
    async start(c) {
      c.enqueue(enc.encode(': ping\n\n'))
      for (const [i, [name, data]] of events.entries()) {
        if (i === (opts.holdAt ?? 1) && opts.hold) await opts.hold
        c.enqueue(enc.encode(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`))
      }
      c.close()
    },
  })
}

const streamResponse = (body: ReadableStream<Uint8Array>) =>
  new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } })

describe('chat store streaming', () => {
  let fetchMock: ReturnType<typeof vi.fn>
  beforeEach(() => {
    setActivePinia(createPinia())
    fetchMock = vi.fn()
    vi.stubGlobal('fetch', fetchMock)
    const models = useModelsStore()
    models.items = [
      {
        id: 'm1',
        name: 'Llama',
        provider: { id: '1', name: 'Ollama', kind: 'ollama' },
        model: 'llama',
        capabilities: [],
        source: 'ollama',
        defaults: {},
      },
    ]
    models.select('m1')
  })
  afterEach(() => vi.unstubAllGlobals())

  it('sends a first message, follows meta/delta/done and creates the conversation', async () => {
    fetchMock.mockImplementation(async (url: string) => {
      if (url === '/api/chat')
        return streamResponse(
          sse([
            ['meta', { conversation_id: 'c1', user_message_id: 'u1', assistant_message_id: 'a1' }],
            ['delta', { content: 'Hel' }],
            ['delta', { content: 'lo', thinking: 'hmm' }],
            [
              'done',
              {
                message: { id: 'a1', content: 'Hello', status: 'complete' },
                usage: { completion_tokens: 2 },
                timings: { tokens_per_s: 10 },
              },
            ],
            ['title', { conversation_id: 'c1', title: 'Greetings' }],
          ]),
        )
      return new Response('{}', { status: 200, headers: { 'Content-Type': 'application/json' } })
    })
    const chat = useChatStore()
    const list = useConversationsStore()
    await chat.send('Hi')
    const [, init] = fetchMock.mock.calls[0]
    expect(JSON.parse(init.body)).toEqual({ model: 'm1', content: 'Hi' })
    expect(chat.currentId).toBe('c1')
    expect(chat.path.map((m) => [m.id, m.role, m.content, m.status])).toEqual([
      ['u1', 'user', 'Hi', 'complete'],
      ['a1', 'assistant', 'Hello', 'complete'],
    ])
    expect(chat.path[1].thinking).toBe('hmm')
    expect(chat.path[1].usage).toEqual({ completion_tokens: 2 })
    expect(chat.isStreaming).toBe(false)
    expect(list.conversations[0].id).toBe('c1')
    // the title event after done names the new conversation, in the list and in the header
    await vi.waitFor(() => expect(list.conversations[0].title).toBe('Greetings'))
    expect(chat.current?.title).toBe('Greetings')
    expect(fetchMock).toHaveBeenCalledTimes(1) // no polling for the title
  })

  it('ends the reply at done, before the title arrives on the same stream', async () => {
    let release!: () => void
    const hold = new Promise<void>((r) => (release = r))
    fetchMock.mockImplementation(async () =>
      streamResponse(
        sse(
          [
            ['meta', { conversation_id: 'c1', user_message_id: 'u1', assistant_message_id: 'a1' }],
            ['done', { message: { id: 'a1', content: 'ok', status: 'complete' }, usage: {}, timings: {} }],
            ['title', { conversation_id: 'c1', title: 'Later' }],
          ],
          { hold, holdAt: 2 },
        ),
      ),
    )
    const chat = useChatStore()
    const list = useConversationsStore()
    await chat.send('Hi')
    // the composer is free again while the server is still titling the conversation
    expect(chat.isStreaming).toBe(false)
    expect(chat.path[1].status).toBe('complete')
    expect(list.conversations[0]).toMatchObject({ id: 'c1', title: null })
    release()
    await vi.waitFor(() => expect(list.conversations[0].title).toBe('Later'))
    expect(chat.current?.title).toBe('Later')
  })

  it('reads a new conversation once when its stream ends without a title', async () => {
    fetchMock.mockImplementation(async (url: string) => {
      if (url === '/api/chat')
        return streamResponse(
          sse([
            ['meta', { conversation_id: 'c1', user_message_id: 'u1', assistant_message_id: 'a1' }],
            ['done', { message: { id: 'a1', content: 'ok', status: 'complete' }, usage: {}, timings: {} }],
          ]),
        )
      return new Response(
        JSON.stringify({ id: 'c1', title: 'Hi', pinned: false, model: 'm1', updated_at: '2024-01-01T00:00:00Z' }),
        {
          status: 200,
          headers: { 'Content-Type': 'application/json' },
        },
      )
    })
    const chat = useChatStore()
    const list = useConversationsStore()
    await chat.send('Hi')
    await vi.waitFor(() => expect(list.conversations[0].title).toBe('Hi'))
    expect(fetchMock.mock.calls.map(([u]) => u)).toEqual(['/api/chat', '/api/conversations/c1'])
  })

  it('continues the shown path with parent_id, and an edit branches from the parent', async () => {
    const chat = useChatStore()
    chat.current = { id: 'c1', title: 't', pinned: false, model: 'm1', created_at: '', updated_at: '', messages: [] }
    chat.messages = [
      { id: 'u1', parent_id: null, role: 'user', content: 'a', status: 'complete', created_at: '2024-01-01T00:00:00Z' },
      {
        id: 'a1',
        parent_id: 'u1',
        role: 'assistant',
        content: 'b',
        status: 'complete',
        created_at: '2024-01-01T00:00:01Z',
      },
    ]
    fetchMock.mockImplementation(async () =>
      streamResponse(
        sse([
          ['meta', { conversation_id: 'c1', user_message_id: 'u2', assistant_message_id: 'a2' }],
          ['done', { message: { content: 'ok' } }],
        ]),
      ),
    )
    await chat.send('next')
    expect(JSON.parse(fetchMock.mock.calls[0][1].body)).toMatchObject({
      conversation_id: 'c1',
      parent_id: 'a1',
      content: 'next',
    })

    await chat.edit(
      chat.messages.find((m) => m.id === 'u1')!,
      'edited',
    )
    expect(JSON.parse(fetchMock.mock.calls[1][1].body)).toMatchObject({
      conversation_id: 'c1',
      parent_id: null,
      content: 'edited',
    })
    // the edit is shown; the original is reachable as a sibling
    expect(chat.path[0].content).toBe('edited')
    expect(chat.siblings(chat.path[0])).toMatchObject({ index: 1, total: 2 })
  })

  it('regenerates an answer as a sibling through the regenerate route', async () => {
    const chat = useChatStore()
    chat.current = { id: 'c1', title: 't', pinned: false, model: 'm1', created_at: '', updated_at: '', messages: [] }
    chat.messages = [
      { id: 'u1', parent_id: null, role: 'user', content: 'a', status: 'complete', created_at: '2024-01-01T00:00:00Z' },
      {
        id: 'a1',
        parent_id: 'u1',
        role: 'assistant',
        content: 'b',
        status: 'complete',
        created_at: '2024-01-01T00:00:01Z',
      },
    ]
    fetchMock.mockImplementation(async () =>
      streamResponse(
        sse([
          ['meta', { conversation_id: 'c1', user_message_id: 'u1', assistant_message_id: 'a1b' }],
          ['delta', { content: 'new' }],
          ['done', {}],
        ]),
      ),
    )
    await chat.regenerate(chat.messages[1])
    expect(fetchMock.mock.calls[0][0]).toBe('/api/chat/a1/regenerate')
    expect(chat.path.map((m) => m.id)).toEqual(['u1', 'a1b'])
    expect(chat.path[1].content).toBe('new')
    chat.showSibling('a1')
    expect(chat.path.map((m) => m.id)).toEqual(['u1', 'a1'])
  })

  it('continues an interrupted answer with a new prompt after its partial text', async () => {
    const chat = useChatStore()
    chat.current = { id: 'c1', title: 't', pinned: false, model: 'm1', created_at: '', updated_at: '', messages: [] }
    chat.messages = [
      { id: 'u1', parent_id: null, role: 'user', content: 'a', status: 'complete', created_at: '2024-01-01T00:00:00Z' },
      {
        id: 'a1',
        parent_id: 'u1',
        role: 'assistant',
        content: 'half an ans',
        status: 'error',
        error: { code: 'interrupted', message: 'the server stopped while this reply was streaming' },
        created_at: '2024-01-01T00:00:01Z',
      },
    ]
    fetchMock.mockImplementation(async () =>
      streamResponse(
        sse([
          ['meta', { conversation_id: 'c1', user_message_id: 'u2', assistant_message_id: 'a2' }],
          ['delta', { content: 'wer' }],
          ['done', {}],
        ]),
      ),
    )
    await chat.continueReply(chat.messages[1], 'Continue.')
    expect(fetchMock.mock.calls[0][0]).toBe('/api/chat')
    const body = JSON.parse(fetchMock.mock.calls[0][1].body)
    expect(body).toMatchObject({ conversation_id: 'c1', parent_id: 'a1', content: 'Continue.', model: 'm1' })
    expect(chat.path.map((m) => m.id)).toEqual(['u1', 'a1', 'u2', 'a2'])
    expect(chat.path[1].content).toBe('half an ans') // the partial text stays in the conversation
  })

  it('marks the answer as an error on an error event and keeps the partial text', async () => {
    fetchMock.mockImplementation(async () =>
      streamResponse(
        sse([
          ['meta', { conversation_id: 'c9', user_message_id: 'u1', assistant_message_id: 'a1' }],
          ['delta', { content: 'part' }],
          ['error', { code: 'upstream_error', message: 'Ollama went away' }],
        ]),
      ),
    )
    const chat = useChatStore()
    await chat.send('Hi')
    const a = chat.path[1]
    expect(a.content).toBe('part')
    expect(a.status).toBe('error')
    expect(a.error).toMatchObject({ message: 'Ollama went away' })
  })

  it('shows a failure before the stream starts (JSON error) on the answer', async () => {
    fetchMock.mockResolvedValue(
      new Response(JSON.stringify({ code: 'model_not_found', message: 'no such model' }), {
        status: 404,
        headers: { 'Content-Type': 'application/json' },
      }),
    )
    const chat = useChatStore()
    await chat.send('Hi')
    expect(chat.path[1].status).toBe('error')
    expect(chat.isStreaming).toBe(false)
  })

  it('stop calls the stop route with the assistant id', async () => {
    let release!: () => void
    const hold = new Promise<void>((r) => (release = r))
    fetchMock.mockImplementation(async (url: string) => {
      if (url === '/api/chat')
        return streamResponse(
          sse(
            [
              ['meta', { conversation_id: 'c1', user_message_id: 'u1', assistant_message_id: 'a1' }],
              ['delta', { content: 'x' }],
              ['done', { message: { status: 'stopped' } }],
            ],
            { hold },
          ),
        )
      return new Response(null, { status: 204 })
    })
    const chat = useChatStore()
    const p = chat.send('Hi')
    await vi.waitFor(() => expect(chat.stream?.assistantId).toBe('a1'))
    await chat.stop()
    expect(fetchMock.mock.calls.some(([u]) => u === '/api/chat/a1/stop')).toBe(true)
    release()
    await p
    expect(chat.path[1].status).toBe('stopped')
  })
})

describe('chat store: attachments, knowledge and citations', () => {
  let fetchMock: ReturnType<typeof vi.fn>
  const citation = {
    number: 1,
    file_id: 'f9',
    file_name: 'handbook.pdf',
    collection_id: 'k1',
    chunk_id: 7,
    page: 3,
    text: 'The boiling point of water at sea level is 100 °C.',
  }
  beforeEach(() => {
    setActivePinia(createPinia())
    fetchMock = vi.fn()
    vi.stubGlobal('fetch', fetchMock)
    const models = useModelsStore()
    models.items = [
      {
        id: 'm1',
        name: 'Llava',
        provider: { id: '1', name: 'Ollama', kind: 'ollama' },
        model: 'llava',
        capabilities: ['completion', 'vision'],
        source: 'ollama',
        defaults: {},
      },
    ]
    models.select('m1')
  })
  afterEach(() => vi.unstubAllGlobals())

  it('sends the files and the chosen collections, shows the files at once and keeps the citations', async () => {
    fetchMock.mockImplementation(async () =>
      streamResponse(
        sse([
          [
            'meta',
            {
              conversation_id: 'c1',
              user_message_id: 'u1',
              assistant_message_id: 'a1',
              attachments: [
                { id: 'f1', name: 'cat.png', mime: 'image/png', size: 10, kind: 'image', mode: 'image' },
                {
                  id: 'f2',
                  name: 'notes.md',
                  mime: 'text/markdown',
                  size: 20,
                  kind: 'document',
                  mode: 'full',
                  tokens: 5,
                },
              ],
              citations: [citation],
            },
          ],
          ['delta', { content: 'It boils at 100 °C [1].' }],
          ['done', { message: { id: 'a1', content: 'It boils at 100 °C [1].', status: 'complete' } }],
        ]),
      ),
    )
    const chat = useChatStore()
    chat.setKnowledge(['k1'])
    const image = { id: 'f1', name: 'cat.png', mime: 'image/png', size: 10, kind: 'image' as const }
    const doc = { id: 'f2', name: 'notes.md', mime: 'text/markdown', size: 20, kind: 'document' as const }
    await chat.send('What is in these?', undefined, [image, doc])
    const body = JSON.parse(fetchMock.mock.calls[0][1].body)
    expect(body).toMatchObject({ content: 'What is in these?', attachments: ['f1', 'f2'], knowledge: ['k1'] })
    const [user, reply] = chat.path
    // shown at once, then told how each is used by the stream's meta
    expect(user.attachments?.map((a) => [a.id, a.kind, a.mode])).toEqual([
      ['f1', 'image', 'image'],
      ['f2', 'document', 'full'],
    ])
    expect(reply.citations).toEqual([citation])
    expect(chat.current?.knowledge).toEqual(['k1'])
  })

  it('regenerates with the chosen collections, and takes citations from done', async () => {
    const chat = useChatStore()
    fetchMock.mockImplementation(async (url: string) => {
      if (url === '/api/conversations/c1')
        return new Response(
          JSON.stringify({
            id: 'c1',
            title: 't',
            pinned: false,
            model: 'm1',
            created_at: '2024-01-01T00:00:00Z',
            updated_at: '2024-01-01T00:00:00Z',
            knowledge: ['k1'],
            messages: [
              {
                id: 'u1',
                parent_id: null,
                role: 'user',
                content: 'q',
                status: 'complete',
                created_at: '2024-01-01T00:00:00Z',
                attachments: [
                  { id: 'f1', name: 'a.pdf', mime: 'application/pdf', size: 5, kind: 'document', mode: 'retrieval' },
                ],
              },
              {
                id: 'a1',
                parent_id: 'u1',
                role: 'assistant',
                content: 'old',
                status: 'complete',
                created_at: '2024-01-01T00:00:01Z',
              },
            ],
          }),
          { status: 200, headers: { 'Content-Type': 'application/json' } },
        )
      return streamResponse(
        sse([
          ['meta', { conversation_id: 'c1', user_message_id: 'u1', assistant_message_id: 'a2' }],
          ['done', { message: { id: 'a2', content: 'new [1]', status: 'complete', citations: [citation] } }],
        ]),
      )
    })
    await chat.open('c1')
    expect(chat.knowledge).toEqual(['k1'])
    await chat.regenerate(chat.path[1])
    const [url, init] = fetchMock.mock.calls[1]
    expect(url).toBe('/api/chat/a1/regenerate')
    // the prompt keeps its files on the server: sending them again would attach them twice
    const sent = JSON.parse(init.body)
    expect(sent.attachments).toBeUndefined()
    expect(sent.knowledge).toEqual(['k1'])
    expect(chat.path[1].citations).toEqual([citation])
  })
})
