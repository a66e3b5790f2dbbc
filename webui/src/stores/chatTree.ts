/**
 * Conversation messages form a tree (edits and regenerations create siblings via parent_id).
 * These pure helpers build the tree and pick the path that is shown.
 */
import type { Message } from '@/api/types'

export const ROOT = '__root__'

export interface MessageTree {
  byId: Map<string, Message>
  /** parent id (or ROOT) -> children, oldest first */
  children: Map<string, Message[]>
}

export function buildTree(messages: Message[]): MessageTree {
  const byId = new Map<string, Message>()
  for (const m of messages) byId.set(m.id, m)
  const children = new Map<string, Message[]>()
  for (const m of messages) {
    // an orphan (parent missing) is shown as a root rather than lost
    const key = m.parent_id && byId.has(m.parent_id) ? m.parent_id : ROOT
    let list = children.get(key)
    if (!list) children.set(key, (list = []))
    list.push(m)
  }
  for (const list of children.values()) {
    list.sort((a, b) => {
      const ta = Date.parse(a.created_at) || 0
      const tb = Date.parse(b.created_at) || 0
      return ta - tb
    })
  }
  return { byId, children }
}

export function parentKey(m: Pick<Message, 'parent_id'>, tree: MessageTree): string {
  return m.parent_id && tree.byId.has(m.parent_id) ? m.parent_id : ROOT
}

/**
 * The displayed path: from the root, follow the selected child of each node (default: the newest).
 * `selected` maps a parent key to the chosen child id.
 */
export function currentPath(tree: MessageTree, selected: Record<string, string>): Message[] {
  const path: Message[] = []
  let key = ROOT
  const seen = new Set<string>()
  for (;;) {
    const kids = tree.children.get(key)
    if (!kids || !kids.length) break
    const chosen = kids.find((k) => k.id === selected[key]) ?? kids[kids.length - 1]
    if (seen.has(chosen.id)) break // defensive: a cycle would loop forever
    seen.add(chosen.id)
    path.push(chosen)
    key = chosen.id
  }
  return path
}

export interface SiblingInfo {
  index: number
  total: number
  prev: string | null
  next: string | null
}

export function siblingInfo(tree: MessageTree, m: Message): SiblingInfo {
  const kids = tree.children.get(parentKey(m, tree)) ?? [m]
  const index = Math.max(
    0,
    kids.findIndex((k) => k.id === m.id),
  )
  return {
    index,
    total: kids.length,
    prev: index > 0 ? kids[index - 1].id : null,
    next: index < kids.length - 1 ? kids[index + 1].id : null,
  }
}

/** Selects the branch that contains message `id` all the way up to the root. */
export function selectBranchOf(
  tree: MessageTree,
  selected: Record<string, string>,
  id: string,
): Record<string, string> {
  const out = { ...selected }
  let m = tree.byId.get(id)
  const seen = new Set<string>()
  while (m && !seen.has(m.id)) {
    seen.add(m.id)
    out[parentKey(m, tree)] = m.id
    m = m.parent_id ? tree.byId.get(m.parent_id) : undefined
  }
  return out
}
