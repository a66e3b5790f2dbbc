import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { defineComponent, h, nextTick, ref, type Component, type VNode } from 'vue'
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils'
import { NFormItem, NInput } from 'naive-ui'
import { ApiError } from '@/api/http'
import { useFormSubmit } from '@/composables/useFormSubmit'
import { i18n } from '@/i18n'
import FormModal from './FormModal.vue'

// NModal teleports the dialog to <body>, so the DOM is read from the document, not from the wrapper
const dialog = () => document.body.querySelector<HTMLElement>('[role="dialog"]')
const button = (name: string) =>
  [...(dialog()?.querySelectorAll('button') ?? [])].find((b) => b.textContent?.trim() === name) ?? null
const alertText = () => dialog()?.querySelector('.n-alert')?.textContent?.trim() ?? null

const wrappers: VueWrapper[] = []
function mountIt(component: Component, props: Record<string, unknown> = {}, slots: Record<string, () => VNode> = {}) {
  const w = mount(component, { props, slots, global: { plugins: [i18n] } })
  wrappers.push(w)
  return w
}

beforeAll(() => {
  i18n.global.locale.value = 'en'
})
afterEach(() => {
  wrappers.splice(0).forEach((w) => w.unmount())
  document.body.innerHTML = ''
})

describe('FormModal', () => {
  const base = { show: true, title: 'Add a thing', submitLabel: 'Create' }

  it('renders a titled dialog with the fields, the error line and Cancel + submit', async () => {
    mountIt(FormModal, { ...base, width: 440, error: 'Name taken' }, { default: () => h('input', { id: 'field' }) })
    await nextTick()
    const d = dialog()
    expect(d).not.toBeNull()
    expect(d!.textContent).toContain('Add a thing')
    expect(d!.querySelector('form #field')).not.toBeNull()
    expect(alertText()).toBe('Name taken')
    expect(button('Cancel')).not.toBeNull()
    expect(button('Create')).not.toBeNull()
  })

  it('shows no error line without an error', async () => {
    mountIt(FormModal, base)
    await nextTick()
    expect(dialog()!.querySelector('.n-alert')).toBeNull()
  })

  it('emits submit from the button and from the form, only while it may', async () => {
    const w = mountIt(FormModal, base)
    await nextTick()
    button('Create')!.click()
    dialog()!
      .querySelector('form')!
      .dispatchEvent(new Event('submit', { cancelable: true }))
    expect(w.emitted('submit')).toHaveLength(2)

    await w.setProps({ canSubmit: false })
    expect(button('Create')!.disabled).toBe(true)
    dialog()!
      .querySelector('form')!
      .dispatchEvent(new Event('submit', { cancelable: true }))
    await w.setProps({ canSubmit: true, busy: true })
    button('Create')!.click()
    expect(w.emitted('submit')).toHaveLength(2)
  })

  it('closes on Cancel', async () => {
    const w = mountIt(FormModal, base)
    await nextTick()
    button('Cancel')!.click()
    expect(w.emitted('update:show')).toEqual([[false]])
  })
})

describe('FormModal with useFormSubmit', () => {
  /** A dialog the way the admin views build theirs: one field, an API call, close + `saved` on success. */
  const Host = defineComponent({
    props: { action: { type: Function, required: true } },
    emits: ['saved'],
    setup(props, { emit }) {
      const show = ref(true)
      const name = ref('x')
      const { busy, error, run } = useFormSubmit()
      const submit = () =>
        run(async () => {
          await props.action(name.value)
          show.value = false
          emit('saved')
        })
      return () =>
        h(
          FormModal,
          {
            show: show.value,
            'onUpdate:show': (v: boolean) => (show.value = v),
            title: 'Edit',
            submitLabel: 'Save',
            error: error.value,
            busy: busy.value,
            onSubmit: submit,
          },
          {
            default: () =>
              h(NFormItem, { label: 'Name' }, () =>
                h(NInput, { value: name.value, 'onUpdate:value': (v: string) => (name.value = v) }),
              ),
          },
        )
    },
  })

  it('is busy while saving, then closes and emits saved', async () => {
    let finish!: () => void
    const action = vi.fn(() => new Promise<void>((resolve) => (finish = resolve)))
    const w = mountIt(Host, { action })
    await nextTick()
    button('Save')!.click()
    await nextTick()
    expect(action).toHaveBeenCalledWith('x')
    expect(button('Save')!.classList.contains('n-button--loading')).toBe(true)
    finish()
    await flushPromises()
    expect(w.findComponent(FormModal).props('show')).toBe(false)
    expect(w.emitted('saved')).toHaveLength(1)
  })

  it('keeps the dialog open with the error when saving fails, and clears it on the next try', async () => {
    const action = vi.fn().mockRejectedValueOnce(new ApiError(409, 'conflict', 'name taken'))
    const w = mountIt(Host, { action })
    await nextTick()
    button('Save')!.click()
    await flushPromises()
    expect(w.emitted('saved')).toBeUndefined()
    expect(w.findComponent(FormModal).props('show')).toBe(true)
    expect(dialog()).not.toBeNull()
    expect(alertText()).toBe('The server refused the request. (name taken)')
    expect(button('Save')!.classList.contains('n-button--loading')).toBe(false)

    let finish!: () => void
    action.mockReturnValueOnce(new Promise<void>((resolve) => (finish = resolve)))
    button('Save')!.click()
    await nextTick()
    expect(alertText()).toBeNull()
    finish()
    await flushPromises()
    expect(w.emitted('saved')).toHaveLength(1)
  })
})
