import { describe, expect, it } from 'vitest'
import { buildTree, currentPath, selectBranchOf, siblingInfo, ROOT } from './chatTree'
import type { Message } from '@/api/types'

let t = 0
const msg = (id: string, parent: string | null, role: 'user' | 'assistant' = 'user'): Message => ({
  id,
  parent_id: parent,
  role,
  content: id,
  status: 'complete',
  created_at: new Date(1_700_000_000_000 + ++t * 1000).toISOString(),
})

// u1 -> a1 -> u2 -> a2
//          \-> u2b -> a2b      (edit of u2)
//    \-> a1b                    (regeneration of a1)
function sample() {
  t = 0
  return [
    msg('u1', null),
    msg('a1', 'u1', 'assistant'),
    msg('u2', 'a1'),
    msg('a2', 'u2', 'assistant'),
    msg('a1b', 'u1', 'assistant'),
    msg('u2b', 'a1'),
    msg('a2b', 'u2b', 'assistant'),
  ]
}

describe('chat tree', () => {
  it('groups children by parent, oldest first, regardless of input order', () => {
    const tree = buildTree([...sample()].reverse())
    expect(tree.children.get(ROOT)!.map((m) => m.id)).toEqual(['u1'])
    expect(tree.children.get('u1')!.map((m) => m.id)).toEqual(['a1', 'a1b'])
    expect(tree.children.get('a1')!.map((m) => m.id)).toEqual(['u2', 'u2b'])
  })

  it('shows the newest branch by default', () => {
    const tree = buildTree(sample())
    expect(currentPath(tree, {}).map((m) => m.id)).toEqual(['u1', 'a1b'])
  })

  it('follows the selected children', () => {
    const tree = buildTree(sample())
    expect(currentPath(tree, { u1: 'a1' }).map((m) => m.id)).toEqual(['u1', 'a1', 'u2b', 'a2b'])
    expect(currentPath(tree, { u1: 'a1', a1: 'u2' }).map((m) => m.id)).toEqual(['u1', 'a1', 'u2', 'a2'])
  })

  it('reports sibling position for prev/next navigation', () => {
    const tree = buildTree(sample())
    const s = siblingInfo(tree, tree.byId.get('u2b')!)
    expect(s).toEqual({ index: 1, total: 2, prev: 'u2', next: null })
    expect(siblingInfo(tree, tree.byId.get('u1')!)).toEqual({ index: 0, total: 1, prev: null, next: null })
  })

  it('selects the whole branch that contains a message', () => {
    const tree = buildTree(sample())
    const sel = selectBranchOf(tree, {}, 'a2')
    expect(currentPath(tree, sel).map((m) => m.id)).toEqual(['u1', 'a1', 'u2', 'a2'])
  })

  it('treats edits of the first message as root siblings and orphans as roots', () => {
    t = 0
    const tree = buildTree([msg('u1', null), msg('u1b', null), msg('x', 'missing')])
    expect(tree.children.get(ROOT)!.map((m) => m.id)).toEqual(['u1', 'u1b', 'x'])
  })

  it('survives a cycle', () => {
    t = 0
    const a = msg('a', 'b')
    const b = msg('b', 'a')
    const tree = buildTree([a, b])
    expect(currentPath(tree, {}).length).toBe(0)
  })

  it('builds a 2,000-message conversation quickly', () => {
    t = 0
    const list: Message[] = []
    let parent: string | null = null
    for (let i = 0; i < 2000; i++) {
      const m = msg(`m${i}`, parent, i % 2 ? 'assistant' : 'user')
      list.push(m)
      parent = m.id
    }
    const start = performance.now()
    const path = currentPath(buildTree(list), {})
    expect(path).toHaveLength(2000)
    expect(performance.now() - start).toBeLessThan(200)
  })
})
