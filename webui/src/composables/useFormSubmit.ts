import { ref } from 'vue'
import { useErrorText } from './useErrorText'

export interface FormSubmitOptions {
  /** Words for a failure this form knows better than the generic text; null falls back to `errorText`. */
  describe?: (e: unknown) => string | null
  /** Also called with the words of a failure, e.g. to toast it where the form shows no error line. */
  onError?: (text: string) => void
}

/**
 * The submit half of a form: `run(action)` sets `busy`, clears `error`, awaits the action and, when it throws,
 * keeps one translated sentence in `error`. It resolves to whether the action succeeded; a call made while one
 * is still running does nothing (resolves false). `reset()` clears both, e.g. when a dialog opens again.
 */
export function useFormSubmit(options: FormSubmitOptions = {}) {
  const errorText = useErrorText()
  const busy = ref(false)
  const error = ref<string | null>(null)

  async function run(action: () => Promise<unknown>): Promise<boolean> {
    if (busy.value) return false
    busy.value = true
    error.value = null
    try {
      await action()
      return true
    } catch (e) {
      const text = options.describe?.(e) ?? errorText(e)
      error.value = text
      options.onError?.(text)
      return false
    } finally {
      busy.value = false
    }
  }

  function reset(): void {
    busy.value = false
    error.value = null
  }

  return { busy, error, run, reset }
}
