import { describe, expect, it } from 'vitest'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import en from './locales/en'
import zhCN from './locales/zh-CN'
import { detectLocale } from './index'

function keys(obj: unknown, prefix = ''): string[] {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return [prefix]
  // precompiled messages are functions or AST objects; plain nested objects are namespaces
  const out: string[] = []
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    const isMessage =
      typeof v === 'function' ||
      typeof v === 'string' ||
      (!!v && typeof v === 'object' && typeof (v as { type?: unknown }).type === 'number')
    out.push(...(isMessage ? [prefix + k] : keys(v, `${prefix}${k}.`)))
  }
  return out
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f)
    return statSync(p).isDirectory() ? walk(p) : /\.(vue|ts)$/.test(f) && !f.endsWith('.spec.ts') ? [p] : []
  })
}

describe('i18n catalogs', () => {
  const enKeys = keys(en).sort()
  const zhKeys = keys(zhCN).sort()

  it('zh-CN and en have identical key sets', () => {
    expect(enKeys.length).toBeGreaterThan(300)
    expect(zhKeys).toEqual(enKeys)
  })

  it('every key used in the source exists in the catalogs', () => {
    const src = join(__dirname, '..')
    const used = new Set<string>()
    for (const file of walk(src)) {
      const text = readFileSync(file, 'utf8')
      for (const m of text.matchAll(/\bt\(\s*'([a-zA-Z0-9_.]+)'/g)) used.add(m[1])
      for (const m of text.matchAll(/titleKey:\s*'([a-zA-Z0-9_.]+)'/g)) used.add(m[1])
      for (const m of text.matchAll(/key:\s*'(errors\.[a-zA-Z]+)'/g)) used.add(m[1])
    }
    // keys built at run time from enumerations
    const dynamic = [
      ...['pinned', 'today', 'yesterday', 'previous7', 'previous30', 'older'].map((k) => `chat.groups.${k}`),
      ...['not_installed', 'stopped', 'starting', 'running', 'external', 'crashed', 'failed'].map(
        (k) => `ollama.state.${k}`,
      ),
      ...['not_installed', 'stopped', 'starting', 'external', 'crashed', 'failed'].map((k) => `ollama.hint.${k}`),
      ...['running', 'done', 'error', 'cancelled'].map((k) => `ollama.pullState.${k}`),
      ...['ollama', 'openai'].map((k) => `providers.kinds.${k}`),
      ...['admin', 'user'].map((k) => `users.roles.${k}`),
      ...['normal', 'warning', 'alert'].map((k) => `system.level.${k}`),
    ]
    const missing = [...used, ...dynamic].filter((k) => !enKeys.includes(k))
    expect(missing).toEqual([])
    expect(used.size).toBeGreaterThan(250)
  })

  it('defaults the language from the browser locale', () => {
    expect(detectLocale(['zh-TW'])).toBe('zh-CN')
    expect(detectLocale(['zh-Hans-CN', 'en'])).toBe('zh-CN')
    expect(detectLocale(['en-GB'])).toBe('en')
    expect(detectLocale(['fr-FR'])).toBe('en')
    expect(detectLocale(['fr-FR', 'zh-CN'])).toBe('zh-CN')
  })
})
