import type { ConversationSummary } from '@/api/types'

export type GroupKey = 'pinned' | 'today' | 'yesterday' | 'previous7' | 'previous30' | 'older'

export interface ConversationGroup {
  key: GroupKey
  items: ConversationSummary[]
}

function startOfDay(d: Date): number {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime()
}

/** Pinned first, then by the local calendar day of the last update (newest first within a group). */
export function groupConversations(items: ConversationSummary[], now: Date = new Date()): ConversationGroup[] {
  const today = startOfDay(now)
  const day = 86_400_000
  const order: GroupKey[] = ['pinned', 'today', 'yesterday', 'previous7', 'previous30', 'older']
  const groups = new Map<GroupKey, ConversationSummary[]>(order.map((k) => [k, []]))
  const sorted = [...items].sort((a, b) => (Date.parse(b.updated_at) || 0) - (Date.parse(a.updated_at) || 0))
  for (const c of sorted) {
    let key: GroupKey
    if (c.pinned) key = 'pinned'
    else {
      const t = Date.parse(c.updated_at) || 0
      if (t >= today) key = 'today'
      else if (t >= today - day) key = 'yesterday'
      else if (t >= today - 7 * day) key = 'previous7'
      else if (t >= today - 30 * day) key = 'previous30'
      else key = 'older'
    }
    groups.get(key)!.push(c)
  }
  return order.filter((k) => groups.get(k)!.length).map((k) => ({ key: k, items: groups.get(k)! }))
}
