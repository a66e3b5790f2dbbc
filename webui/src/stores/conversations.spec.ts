import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { useConversationsStore } from './conversations'
import { useChatStore } from './chat'

const json = (body: unknown, status = 200) =>
  new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  })
const conv = (id: string, title = id) => ({
  id,
  title,
  title_edited: false,
  pinned: false,
  model: 'm1',
  created_at: '2024-01-01T00:00:00Z',
  updated_at: '2024-01-01T00:00:00Z',
})

describe('conversations store', () => {
  let fetchMock: ReturnType<typeof vi.fn>
  beforeEach(() => {
    setActivePinia(createPinia())
    fetchMock = vi.fn()
    vi.stubGlobal('fetch', fetchMock)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('loads pages and appends the next one without duplicates', async () => {
    fetchMock
      .mockResolvedValueOnce(json({ items: [conv('a'), conv('b')], total: 3, page: 1, size: 50 }))
      .mockResolvedValueOnce(json({ items: [conv('b'), conv('c')], total: 3, page: 2, size: 50 }))
    const list = useConversationsStore()
    await list.loadConversations(true)
    expect(list.conversations.map((c) => c.id)).toEqual(['a', 'b'])
    expect(list.hasMore).toBe(true)
    await list.loadConversations(false)
    expect(list.conversations.map((c) => c.id)).toEqual(['a', 'b', 'c'])
    expect(list.hasMore).toBe(false)
    expect(String(fetchMock.mock.calls[1][0])).toContain('page=2')
  })

  it('keeps the error of a failed load', async () => {
    fetchMock.mockResolvedValueOnce(json({ code: 'internal_error', message: 'boom' }, 500))
    const list = useConversationsStore()
    await list.loadConversations(true)
    expect(list.listError).toBeTruthy()
    expect(list.listLoading).toBe(false)
  })

  it('upserts: updates a listed conversation, or adds a new one at the top', () => {
    const list = useConversationsStore()
    list.conversations = [conv('a')]
    list.total = 1
    list.upsert({ id: 'a', title: 'renamed' })
    list.upsert({ id: 'n' })
    expect(list.conversations.map((c) => [c.id, c.title])).toEqual([
      ['n', null],
      ['a', 'renamed'],
    ])
    expect(list.total).toBe(2)
  })

  it('only the latest search answers', async () => {
    let answerFirst!: (r: Response) => void
    fetchMock
      .mockReturnValueOnce(new Promise<Response>((r) => (answerFirst = r)))
      .mockResolvedValueOnce(json({ items: [conv('second')], total: 1, page: 1, size: 50 }))
    const list = useConversationsStore()
    const first = list.search('fir')
    await list.search('second')
    answerFirst(json({ items: [conv('first')], total: 1, page: 1, size: 50 }))
    await first
    expect(list.searchResults?.map((c) => c.id)).toEqual(['second'])
    await list.search('  ')
    expect(list.searchResults).toBeNull()
  })

  it('renames, pins and removes through the API', async () => {
    fetchMock.mockImplementation(async (_url: string, init: RequestInit) =>
      init.method === 'DELETE' ? json(null, 204) : json(conv('a')),
    )
    const list = useConversationsStore()
    list.conversations = [conv('a'), conv('b')]
    list.total = 2
    await list.rename('a', 'New name')
    await list.setPinned('a', true)
    expect(list.conversations[0]).toMatchObject({ id: 'a', title: 'New name', pinned: true })
    await list.remove('a')
    expect(list.conversations.map((c) => c.id)).toEqual(['b'])
    expect(list.total).toBe(1)
    expect(fetchMock.mock.calls.map(([u, i]) => [u, i.method])).toEqual([
      ['/api/conversations/a', 'PATCH'],
      ['/api/conversations/a', 'PATCH'],
      ['/api/conversations/a', 'DELETE'],
    ])
  })

  it('renaming or deleting the open conversation updates the chat', async () => {
    fetchMock.mockImplementation(async (_url: string, init: RequestInit) =>
      init.method === 'DELETE' ? json(null, 204) : json(conv('a')),
    )
    const list = useConversationsStore()
    const chat = useChatStore()
    list.conversations = [conv('a')]
    chat.current = { ...conv('a'), messages: [] }
    await chat.rename('a', 'Renamed')
    expect(chat.current?.title).toBe('Renamed')
    expect(list.conversations[0].title).toBe('Renamed')
    await chat.remove('a')
    expect(chat.current).toBeNull()
    expect(list.conversations).toEqual([])
  })
})
