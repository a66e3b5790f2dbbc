/** What a new preset starts from (e.g. "Save as preset" in a chat): a catalog model id and settings. */
export interface PresetDraft {
  name?: string
  baseModelId?: string | null
  system_prompt?: string
  temperature?: number | null
  top_p?: number | null
  context_length?: number | null
  max_tokens?: number | null
  options?: Record<string, unknown>
}
