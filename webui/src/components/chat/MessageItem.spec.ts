import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { mount, type VueWrapper } from '@vue/test-utils'
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { defineComponent, h, type PropType } from 'vue'
import { NMessageProvider } from 'naive-ui'
import { i18n } from '@/i18n'
import type { Message } from '@/api/types'
import { useChatStore } from '@/stores/chat'
import MessageItem from './MessageItem.vue'

// rendering Markdown is MarkdownView's own spec's business
vi.mock('./MarkdownView.vue', () => ({
  default: { props: ['source'], template: '<div class="md">{{ source }}</div>' },
}))

const Host = defineComponent({
  props: { message: { type: Object as PropType<Message>, required: true } },
  setup: (props) => () => h(NMessageProvider, null, { default: () => h(MessageItem, { message: props.message }) }),
})

function reply(extra: Partial<Message>): Message {
  return {
    id: 'a1',
    parent_id: 'u1',
    role: 'assistant',
    content: 'half an ans',
    status: 'complete',
    created_at: '2024-01-01T00:00:01Z',
    ...extra,
  } as Message
}

let pinia: Pinia
const wrappers: VueWrapper[] = []
function mountIt(m: Message) {
  const w = mount(Host, { props: { message: m }, global: { plugins: [i18n, pinia] } })
  wrappers.push(w)
  return w
}

beforeAll(() => {
  i18n.global.locale.value = 'en'
})
beforeEach(() => {
  pinia = createPinia()
  setActivePinia(pinia)
})
afterEach(() => {
  wrappers.splice(0).forEach((w) => w.unmount())
  i18n.global.locale.value = 'en'
})

describe('MessageItem', () => {
  it('shows a reply the server marked interrupted as such, with continue and regenerate', async () => {
    const chat = useChatStore()
    const cont = vi.spyOn(chat, 'continueReply').mockResolvedValue()
    const regen = vi.spyOn(chat, 'regenerate').mockResolvedValue()
    const m = reply({
      status: 'error',
      error: { code: 'interrupted', message: 'the server stopped while this reply was streaming' },
    })
    const w = mountIt(m)
    expect(w.text()).toContain('Interrupted')
    expect(w.text()).toContain('half an ans') // the partial text is shown
    expect(w.text()).toContain('The server stopped while this answer was being written')
    expect(w.text()).not.toContain('the server stopped while this reply was streaming') // no raw error
    const buttons = w.findAll('.msg-interrupted-actions button')
    expect(buttons.map((b) => b.text())).toEqual(['Continue', 'Regenerate'])
    await buttons[0].trigger('click')
    expect(cont).toHaveBeenCalledWith(m, 'Continue exactly where your previous answer stopped.')
    await buttons[1].trigger('click')
    expect(regen).toHaveBeenCalledWith(m)
  })

  it('offers the same for a stream the connection cut off', () => {
    const w = mountIt(reply({ status: 'interrupted' }))
    expect(w.findAll('.msg-interrupted-actions button')).toHaveLength(2)
  })

  it('says a full disk plainly, in the user language', () => {
    i18n.global.locale.value = 'zh-CN'
    const w = mountIt(reply({ status: 'error', error: { code: 'disk_full', message: 'the disk is full' } }))
    expect(w.text()).toContain('服务器磁盘已满')
    expect(w.findAll('.msg-interrupted-actions button')).toHaveLength(0)
  })

  it('shows a document chip that says how the document was used, and an image as a thumbnail button', () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(async () => new Response(new Blob(['png']), { status: 200, headers: { 'Content-Type': 'image/png' } })),
    )
    const w = mountIt({
      id: 'u1',
      parent_id: null,
      role: 'user',
      content: 'Look',
      status: 'complete',
      created_at: '2024-01-01T00:00:00Z',
      attachments: [
        { id: 'f1', name: 'cat.png', mime: 'image/png', size: 3, kind: 'image', mode: 'image' },
        { id: 'f2', name: 'short.md', mime: 'text/markdown', size: 30, kind: 'document', mode: 'full', tokens: 120 },
        { id: 'f3', name: 'long.pdf', mime: 'application/pdf', size: 9000, kind: 'document', mode: 'retrieval' },
      ],
    } as Message)
    expect(w.find('button[aria-label="Open cat.png larger"]').exists()).toBe(true)
    expect(w.text()).toContain('Whole document in the context · 120 tokens')
    expect(w.text()).toContain('Long document: the relevant passages are used')
    vi.unstubAllGlobals()
  })

  it('lists the sources of a cited reply and opens the passage', async () => {
    const m = reply({
      content: 'It boils at 100 °C [1].',
      citations: [
        {
          number: 1,
          file_id: 'f9',
          file_name: 'handbook.pdf',
          collection_id: 'k1',
          chunk_id: 7,
          page: 3,
          text: 'Water boils at 100 degrees at sea level.',
        },
      ],
    })
    const w = mountIt(m)
    const source = w.find('button[aria-label="Source 1: handbook.pdf"]')
    expect(source.text()).toContain('page 3')
    await source.trigger('click')
    await new Promise((r) => setTimeout(r, 0))
    expect(document.body.textContent).toContain('Water boils at 100 degrees at sea level.')
  })

  it('explains a refusal for a model without vision in the user language', () => {
    const w = mountIt(reply({ status: 'error', error: { code: 'model_not_vision', message: 'no vision' } }))
    expect(w.text()).toContain('This model cannot see images')
  })
})
