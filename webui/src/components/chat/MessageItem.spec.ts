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
})
