import { beforeAll, describe, expect, it } from 'vitest'
import { mount } from '@vue/test-utils'
import { i18n } from '@/i18n'
import { ApiError } from '@/api/http'
import type { LimitItem } from '@/api/types'
import LimitBars from './LimitBars.vue'
import LimitsForm from './LimitsForm.vue'
import { barStatus, formChanges, formFields, limitHit, limitHitText, limitPercent, orderedLimits } from './format'

const NOW = Date.parse('2026-12-04T20:00:00Z')

function item(over: Partial<LimitItem> & Pick<LimitItem, 'kind'>): LimitItem {
  return {
    limit: null,
    source: 'role',
    user_limit: null,
    key_limit: null,
    used: null,
    remaining: null,
    resets_at: null,
    ...over,
  }
}

const t = (key: string, params?: Record<string, unknown>) => i18n.global.t(key, params ?? {})

beforeAll(() => {
  i18n.global.locale.value = 'en'
})

describe('limit bars: the figures', () => {
  it('gives the share used, and none while unlimited', () => {
    expect(limitPercent({ limit: 10, used: 4 })).toBe(40)
    expect(limitPercent({ limit: 10, used: 25 })).toBe(100)
    expect(limitPercent({ limit: null, used: null })).toBeNull()
    expect(limitPercent({ limit: 5, used: null })).toBe(0)
  })

  it('turns amber near the limit and red when it is spent', () => {
    expect(barStatus({ limit: 10, used: 2, remaining: 8 })).toBe('success')
    expect(barStatus({ limit: 10, used: 8, remaining: 2 })).toBe('warning')
    expect(barStatus({ limit: 1, used: 1, remaining: 0 })).toBe('error')
    expect(barStatus({ limit: null, used: null, remaining: null })).toBe('success')
  })

  it('orders the kinds and drops unknown ones', () => {
    const items = [
      item({ kind: 'concurrent_streams' }),
      item({ kind: 'requests_per_minute' }),
      { ...item({ kind: 'tokens_per_day' }), kind: 'bogus' as LimitItem['kind'] },
    ]
    expect(orderedLimits(items).map((i) => i.kind)).toEqual(['requests_per_minute', 'concurrent_streams'])
  })

  it('renders used / limit, remaining, renewal and Unlimited', () => {
    const w = mount(LimitBars, {
      props: {
        now: NOW,
        items: [
          item({
            kind: 'requests_per_minute',
            limit: 1,
            user_limit: 1,
            source: 'user',
            used: 1,
            remaining: 0,
            resets_at: '2026-12-04T20:00:42Z',
          }),
          item({ kind: 'tokens_per_day', resets_at: '2026-12-05T00:00:00Z' }),
        ],
      },
      global: { plugins: [i18n] },
    })
    const rpm = w.find('[data-testid="limit-requests_per_minute"]')
    expect(rpm.find('[data-testid="limit-figure"]').text()).toBe('1 / 1')
    expect(rpm.text()).toContain('0 left')
    expect(rpm.text()).toContain('set for you')
    expect(rpm.find('[data-testid="limit-renews"]').text()).toBe('renews in 42 seconds')
    const day = w.find('[data-testid="limit-tokens_per_day"]')
    expect(day.find('[data-testid="limit-figure"]').text()).toBe('Unlimited')
    expect(day.text()).toContain('role default')
    expect(day.find('[data-testid="limit-renews"]').exists()).toBe(false)
    w.unmount()
  })
})

describe('limits form', () => {
  const items = [
    item({ kind: 'requests_per_minute', limit: 60, user_limit: 60, source: 'role' }),
    item({ kind: 'tokens_per_day', limit: null, user_limit: null, source: 'user' }),
    item({ kind: 'concurrent_streams', limit: 2, user_limit: 4, key_limit: 2, source: 'key' }),
  ]

  it('sends only what changed, null for unlimited', () => {
    const fields = formFields(items, 'user')
    expect(formChanges(fields)).toEqual({})
    fields[0].value = 1
    fields[1].value = 5000.4
    fields[2].value = null
    expect(formChanges(fields)).toEqual({ requests_per_minute: 1, tokens_per_day: 5000, concurrent_streams: null })
  })

  it("starts a key's form from the key's own limits", () => {
    const fields = formFields(items, 'key')
    expect(fields.map((f) => [f.kind, f.value])).toEqual([
      ['requests_per_minute', null],
      ['tokens_per_day', null],
      ['concurrent_streams', 2],
    ])
  })

  it("shows the user's effective value beside each key field and emits the changes", async () => {
    const w = mount(LimitsForm, { props: { items, mode: 'key' }, global: { plugins: [i18n] } })
    expect(w.find('[data-testid="limit-field-concurrent_streams"]').text()).toContain('User: 4')
    expect(w.find('[data-testid="limit-field-tokens_per_day"]').text()).toContain('User: Unlimited')
    await w.find('[data-testid="limit-field-concurrent_streams"] [role="checkbox"]').trigger('click')
    await w.find('form').trigger('submit')
    expect(w.emitted('save')).toEqual([[{ concurrent_streams: null }]])
    w.unmount()
  })
})

describe("the chat's 429", () => {
  const detail = {
    limit: 'requests_per_minute',
    value: 1,
    scope: 'user',
    resets_at: '2026-12-04T20:00:42Z',
    retry_after: 42,
  }

  it('reads the limit from an ApiError and from the stored error body', () => {
    const fromApi = limitHit(new ApiError(429, 'rate_limited', 'your limit…', detail, 42))
    expect(fromApi).toEqual({
      code: 'rate_limited',
      kind: 'requests_per_minute',
      value: 1,
      scope: 'user',
      resetsAt: '2026-12-04T20:00:42Z',
      retryAfter: 42,
    })
    expect(
      limitHit({ code: 'quota_exceeded', message: 'x', detail: { ...detail, limit: 'tokens_per_day' } })?.kind,
    ).toBe('tokens_per_day')
    expect(limitHit({ code: 'too_many_requests', detail })).toBeNull() // sign-in throttling: not a limit
    expect(limitHit({ code: 'rate_limited' })).toBeNull()
    expect(limitHit('boom')).toBeNull()
  })

  it('says which limit and when it renews, in the language shown', () => {
    const hit = limitHit({ code: 'rate_limited', detail })!
    expect(limitHitText(hit, t, 'en', NOW)).toMatch(
      /^You have reached your limit of 1 requests per minute\. It renews in 42 seconds \(.+\)\.$/,
    )
    i18n.global.locale.value = 'zh-CN'
    try {
      const zh = limitHitText(hit, t, 'zh-CN', NOW)
      expect(zh).toContain('次/分钟的请求')
      expect(zh).toContain('42秒钟后')
    } finally {
      i18n.global.locale.value = 'en'
    }
    const streams = limitHit({
      code: 'too_many_streams',
      detail: { ...detail, limit: 'concurrent_streams', value: 2 },
    })!
    expect(limitHitText(streams, t, 'en', NOW)).toContain('2 replies running')
    const key = limitHit({ code: 'rate_limited', detail: { ...detail, scope: 'key' } })!
    expect(limitHitText(key, t, 'en', NOW)).toContain("This API key's limit")
  })
})
