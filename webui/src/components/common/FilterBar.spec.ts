import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { h } from 'vue'
import { mount, type VueWrapper } from '@vue/test-utils'
import { i18n } from '@/i18n'
import FilterBar from './FilterBar.vue'

const wrappers: VueWrapper[] = []
function mountIt(props: { filtered: boolean; clearLabel?: string; loading?: boolean }) {
  const w = mount(FilterBar, {
    props: { clearLabel: 'Clear filters', ...props },
    slots: { default: () => h('input', { 'data-testid': 'a-filter' }), actions: () => h('button', 'Export') },
    global: { plugins: [i18n] },
  })
  wrappers.push(w)
  return w
}
const byText = (w: VueWrapper, text: string) => w.findAll('button').find((b) => b.text() === text)

beforeAll(() => {
  i18n.global.locale.value = 'en'
})
afterEach(() => {
  wrappers.splice(0).forEach((w) => w.unmount())
})

describe('FilterBar', () => {
  it('shows the filter inputs, the actions and the refresh button; the clear button only while filtered', async () => {
    const w = mountIt({ filtered: false })
    expect(w.find('[data-testid="a-filter"]').exists()).toBe(true)
    expect(byText(w, 'Export')).toBeDefined()
    expect(w.find('button[aria-label="Refresh"]').exists()).toBe(true)
    expect(byText(w, 'Clear filters')).toBeUndefined()
    await w.setProps({ filtered: true })
    expect(byText(w, 'Clear filters')).toBeDefined()
  })

  it('emits clear and refresh', async () => {
    const w = mountIt({ filtered: true })
    await byText(w, 'Clear filters')!.trigger('click')
    await w.find('button[aria-label="Refresh"]').trigger('click')
    expect(w.emitted('clear')).toHaveLength(1)
    expect(w.emitted('refresh')).toHaveLength(1)
  })
})
