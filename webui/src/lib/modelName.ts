/**
 * Client-side check of an Ollama model reference ([host/][namespace/]model[:tag]) before it is sent;
 * the server validates again with Ollama's grammar.
 */
const PART = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$/
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$/

export function isValidModelName(name: string): boolean {
  if (!name || name.length > 350 || /\s/.test(name) || name.includes('..')) return false
  let rest = name
  const colon = rest.lastIndexOf(':')
  const slash = rest.lastIndexOf('/')
  if (colon > slash) {
    const tag = rest.slice(colon + 1)
    if (!TAG.test(tag)) return false
    rest = rest.slice(0, colon)
  }
  const parts = rest.split('/')
  if (parts.length > 3) return false
  return parts.every((p, i) => (i === 0 && parts.length === 3 ? /^[A-Za-z0-9.-]+(?::\d+)?$/.test(p) : PART.test(p)))
}
