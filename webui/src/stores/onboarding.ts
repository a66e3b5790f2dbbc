import { defineStore } from 'pinia'
import { ref } from 'vue'
import { onboardingApi } from '@/api/endpoints'
import type { ChatModel, Onboarding, OllamaState } from '@/api/types'

/** What step 1 found: a runtime that answers, one that is installed but stopped, or none. */
export type RuntimeFinding = 'found' | 'stopped' | 'missing'

export function runtimeFinding(state: OllamaState | null | undefined): RuntimeFinding {
  if (state === 'running' || state === 'external') return 'found'
  if (state === 'stopped' || state === 'crashed' || state === 'failed' || state === 'starting') return 'stopped'
  return 'missing'
}

/** Where step 2 gets its model: an Ollama (null: the default one) or an OpenAI-compatible provider. */
export type SetupTarget = { kind: 'ollama'; providerId: string | null } | { kind: 'openai' }

/** The model name Ollama lists after pulling `name` (it adds ":latest" when no tag is given). */
export function pulledName(name: string): string {
  const n = name.trim()
  return n.lastIndexOf(':') > n.lastIndexOf('/') ? n : `${n}:latest`
}

/** The chat catalog entry of a pulled model: on `providerId` when known, else on any Ollama. */
export function findPulled(items: ChatModel[], name: string, providerId: string | null): ChatModel | null {
  const wanted = pulledName(name).toLowerCase()
  const candidates = items.filter(
    (m) =>
      m.source === 'ollama' &&
      pulledName(m.model).toLowerCase() === wanted &&
      (!providerId || m.provider.id === providerId),
  )
  return candidates[0] ?? null
}

/**
 * The first-run guide's state on the server (`/api/onboarding`) and the once-per-sign-in check that opens
 * it: the layout asks `shouldOpen` once for each signed-in user and page load.
 */
export const useOnboardingStore = defineStore('onboarding', () => {
  const state = ref<Onboarding | null>(null)
  let checkedFor: string | null = null

  async function load(): Promise<Onboarding> {
    state.value = await onboardingApi.get()
    return state.value
  }

  /** Whether the guide should open now for this user: asked once per user and page load. */
  async function shouldOpen(userId: string): Promise<boolean> {
    if (checkedFor === userId) return false
    checkedFor = userId
    try {
      return (await load()).show
    } catch {
      return false // the guide is a help, never a gate
    }
  }

  async function act(action: 'complete' | 'skip' | 'reopen'): Promise<Onboarding> {
    state.value = await onboardingApi.act(action)
    return state.value
  }

  return { state, load, shouldOpen, act }
})
