/**
 * A small markdown-it plugin that recognises TeX math and hands it to a renderer:
 * inline `$...$`, `\(...\)`, `$$...$$`; block `$$ ... $$` and `\[ ... \]` on their own lines.
 * A `$` followed by a space or digit-terminated pairs (prices such as "$5 and $10") are left alone.
 */
import type { MarkdownIt, StateBlock, StateInline } from 'markdown-it'

export type MathRenderer = (tex: string, display: boolean) => string

function isWs(c: string | undefined) {
  return c === undefined || c === ' ' || c === '\t' || c === '\n'
}

function mathInline(state: StateInline, silent: boolean): boolean {
  const src = state.src
  const start = state.pos
  const max = state.posMax
  let open: string
  let close: string
  let display = false
  if (src.startsWith('$$', start)) {
    open = '$$'
    close = '$$'
    display = true
  } else if (src[start] === '$') {
    open = '$'
    close = '$'
  } else if (src.startsWith('\\(', start)) {
    open = '\\('
    close = '\\)'
  } else if (src.startsWith('\\[', start)) {
    open = '\\['
    close = '\\]'
    display = true
  } else {
    return false
  }
  const contentStart = start + open.length
  if (open === '$' && isWs(src[contentStart])) return false
  let pos = contentStart
  let end = -1
  while (pos < max) {
    const idx = src.indexOf(close, pos)
    if (idx === -1 || idx >= max) break
    // skip escaped delimiters
    let bs = 0
    for (let k = idx - 1; k >= contentStart && src[k] === '\\'; k--) bs++
    if (bs % 2 === 1 && open !== '\\(' && open !== '\\[') {
      pos = idx + 1
      continue
    }
    if (open === '$') {
      if (isWs(src[idx - 1]) || /[0-9]/.test(src[idx + 1] ?? '')) {
        pos = idx + 1
        continue
      }
    }
    end = idx
    break
  }
  if (end === -1 || end === contentStart) return false
  if (!silent) {
    const token = state.push(display ? 'math_inline_display' : 'math_inline', 'math', 0)
    token.content = src.slice(contentStart, end)
    token.markup = open
  }
  state.pos = end + close.length
  return true
}

function mathBlock(state: StateBlock, startLine: number, endLine: number, silent: boolean): boolean {
  let pos = state.bMarks[startLine] + state.tShift[startLine]
  let max = state.eMarks[startLine]
  if (state.sCount[startLine] - state.blkIndent >= 4) return false
  const first = state.src.slice(pos, max)
  let open: string
  let close: string
  if (first.startsWith('$$')) {
    open = '$$'
    close = '$$'
  } else if (first.startsWith('\\[')) {
    open = '\\['
    close = '\\]'
  } else {
    return false
  }
  if (silent) return true
  let content: string
  let line = startLine
  let found = false
  const rest = first.slice(open.length)
  const sameLine = rest.trimEnd()
  if (sameLine.endsWith(close) && sameLine.length >= close.length) {
    content = sameLine.slice(0, -close.length)
    found = true
  } else {
    const parts: string[] = [rest]
    while (++line < endLine) {
      pos = state.bMarks[line] + state.tShift[line]
      max = state.eMarks[line]
      if (pos < max && state.sCount[line] < state.blkIndent) break
      const text = state.src.slice(pos, max)
      const trimmed = text.trimEnd()
      if (trimmed.endsWith(close)) {
        parts.push(trimmed.slice(0, -close.length))
        found = true
        break
      }
      parts.push(text)
    }
    content = parts.join('\n')
  }
  if (!found) return false
  state.line = line + 1
  const token = state.push('math_block', 'math', 0)
  token.block = true
  token.content = content.trim()
  token.markup = open
  token.map = [startLine, state.line]
  return true
}

export function mathPlugin(md: MarkdownIt, render: MathRenderer): void {
  md.inline.ruler.before('escape', 'math_inline', mathInline)
  md.block.ruler.before('fence', 'math_block', mathBlock, { alt: ['paragraph', 'reference', 'blockquote', 'list'] })
  md.renderer.rules.math_inline = (tokens, idx) => render(tokens[idx].content, false)
  md.renderer.rules.math_inline_display = (tokens, idx) => render(tokens[idx].content, true)
  md.renderer.rules.math_block = (tokens, idx) =>
    `<div class="md-math-block">${render(tokens[idx].content, true)}</div>\n`
}
