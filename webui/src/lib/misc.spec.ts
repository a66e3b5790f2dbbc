import { describe, expect, it } from 'vitest'
import { groupConversations } from './dateGroups'
import { isValidModelName } from './modelName'
import { formatBytes, formatDuration, formatPercent, formatRelative } from '@/composables/useFormat'
import { safeRedirect } from '@/router'

describe('groupConversations', () => {
  const now = new Date(2024, 5, 15, 12, 0, 0)
  const at = (d: number, h = 10) => new Date(2024, 5, 15 - d, h).toISOString()
  const c = (id: string, updated: string, pinned = false) => ({
    id,
    title: id,
    pinned,
    model: null,
    created_at: updated,
    updated_at: updated,
  })

  it('puts pinned first, then today, yesterday, 7 and 30 days, older', () => {
    const groups = groupConversations(
      [
        c('old', at(90)),
        c('t1', at(0, 9)),
        c('t2', at(0, 11)),
        c('y', at(1)),
        c('w', at(5)),
        c('m', at(20)),
        c('p', at(40), true),
      ],
      now,
    )
    expect(groups.map((g) => [g.key, g.items.map((i) => i.id)])).toEqual([
      ['pinned', ['p']],
      ['today', ['t2', 't1']],
      ['yesterday', ['y']],
      ['previous7', ['w']],
      ['previous30', ['m']],
      ['older', ['old']],
    ])
  })
})

describe('isValidModelName', () => {
  it('accepts Ollama references', () => {
    for (const n of [
      'llama3.2',
      'llama3.2:3b',
      'qwen2.5:7b-instruct-q4_K_M',
      'library/llama3',
      'hf.co/org/model:Q4_K_M',
      'registry.example.com:5000/ns/m:latest',
    ]) {
      expect(isValidModelName(n), n).toBe(true)
    }
  })
  it('rejects traversal and junk', () => {
    for (const n of ['', '../etc/passwd', 'a b', 'x/../../y', '-flag', 'a:b:c:', 'a/b/c/d', ':tag']) {
      expect(isValidModelName(n), n).toBe(false)
    }
  })
})

describe('formatting through Intl', () => {
  it('formats sizes, percents, durations and relative times per locale', () => {
    expect(formatBytes(1_500_000_000, 'en')).toBe('1.5 GB')
    expect(formatBytes(0, 'en')).toBe('0 byte')
    expect(formatPercent(42.5, 1, 'en')).toBe('42.5%')
    expect(formatDuration(3725, 'en')).toBe('1h 2m')
    expect(formatRelative(Date.now() - 3 * 86400_000, 'en')).toBe('3 days ago')
    expect(formatRelative(Date.now() - 86400_000, 'zh-CN')).toBe('昨天')
  })
})

describe('safeRedirect', () => {
  it('only follows in-app paths', () => {
    expect(safeRedirect('/models')).toBe('/models')
    expect(safeRedirect('//evil.test')).toBe('/chat')
    expect(safeRedirect('https://evil.test')).toBe('/chat')
    expect(safeRedirect('/\\evil.test')).toBe('/chat')
    expect(safeRedirect(null)).toBe('/chat')
  })
})

import { markSegments } from './highlight'
describe('markSegments', () => {
  it('marks ranges as text segments, clamping and skipping overlaps', () => {
    expect(
      markSegments('hello <b>world</b>', [
        [6, 9],
        [100, 120],
        [7, 8],
      ]),
    ).toEqual([
      { text: 'hello ', mark: false },
      { text: '<b>', mark: true },
      { text: 'world</b>', mark: false },
    ])
    expect(markSegments('abc', undefined)).toEqual([{ text: 'abc', mark: false }])
  })
})
