import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { createApp, defineComponent } from 'vue'
import { ApiError } from '@/api/http'
import { i18n } from '@/i18n'
import { useFormSubmit, type FormSubmitOptions } from './useFormSubmit'

const apps: ReturnType<typeof createApp>[] = []

/** Runs the composable inside a component's setup (it needs the app's i18n). */
function withSetup(options?: FormSubmitOptions) {
  let result!: ReturnType<typeof useFormSubmit>
  const app = createApp(
    defineComponent({
      setup() {
        result = useFormSubmit(options)
        return () => null
      },
    }),
  )
  app.use(i18n)
  app.mount(document.createElement('div'))
  apps.push(app)
  return result
}

/** A promise the test settles by hand, to look at the state while the action runs. */
function deferred() {
  let resolve!: () => void
  let reject!: (e: unknown) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

beforeAll(() => {
  i18n.global.locale.value = 'en'
})
afterEach(() => {
  apps.splice(0).forEach((a) => a.unmount())
})

describe('useFormSubmit', () => {
  it('is busy while the action runs and reports success', async () => {
    const { busy, error, run } = withSetup()
    const d = deferred()
    const done = run(() => d.promise)
    expect(busy.value).toBe(true)
    expect(error.value).toBeNull()
    d.resolve()
    await expect(done).resolves.toBe(true)
    expect(busy.value).toBe(false)
    expect(error.value).toBeNull()
  })

  it('keeps the translated error of a failure and clears it on the next try', async () => {
    const { busy, error, run } = withSetup()
    const failed = await run(() => Promise.reject(new ApiError(409, 'conflict', 'email taken')))
    expect(failed).toBe(false)
    expect(busy.value).toBe(false)
    expect(error.value).toBe('The server refused the request. (email taken)')

    const d = deferred()
    const again = run(() => d.promise)
    expect(error.value).toBeNull()
    d.resolve()
    await again
    expect(error.value).toBeNull()
  })

  it('uses the words of `describe` when it knows the failure, and passes them to `onError`', async () => {
    const onError = vi.fn()
    const { error, run } = withSetup({
      describe: (e) => (e instanceof ApiError && e.status === 401 ? 'Wrong password' : null),
      onError,
    })
    await run(() => Promise.reject(new ApiError(401, 'unauthorized', 'no')))
    expect(error.value).toBe('Wrong password')
    await run(() => Promise.reject(new Error('boom')))
    expect(error.value).toBe('An unexpected error occurred. (boom)')
    expect(onError.mock.calls).toEqual([['Wrong password'], ['An unexpected error occurred. (boom)']])
  })

  it('ignores a second submit while one is running', async () => {
    const { run } = withSetup()
    const d = deferred()
    const first = run(() => d.promise)
    const second = vi.fn(() => Promise.resolve())
    await expect(run(second)).resolves.toBe(false)
    expect(second).not.toHaveBeenCalled()
    d.resolve()
    await expect(first).resolves.toBe(true)
  })

  it('reset clears busy and error', async () => {
    const { busy, error, run, reset } = withSetup()
    await run(() => Promise.reject(new Error('boom')))
    expect(error.value).not.toBeNull()
    reset()
    expect(busy.value).toBe(false)
    expect(error.value).toBeNull()
  })
})
