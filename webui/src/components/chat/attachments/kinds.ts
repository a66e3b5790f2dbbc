/** What the chat accepts as an attachment, checked before an upload starts; the server decides last. */

export const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif']

const DOCUMENT_TYPES = [
  'application/pdf',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  'text/html',
  'text/csv',
  'text/markdown',
  'text/plain',
  'application/json',
  'application/xml',
]

const DOCUMENT_EXTENSIONS = new Set(
  (
    'pdf docx html htm csv tsv md markdown txt text rst log json jsonl yaml yml toml ini cfg xml ' +
    'py js mjs cjs ts tsx jsx vue go rs java kt c h cpp hpp cc cs rb php swift sh bash sql css scss r lua pl'
  ).split(' '),
)

/** The `accept` of the file picker. */
export const ACCEPT = [...IMAGE_TYPES, ...DOCUMENT_TYPES, ...[...DOCUMENT_EXTENSIONS].map((e) => `.${e}`)].join(',')

export type LocalKind = 'image' | 'document'

function extension(name: string): string {
  const i = name.lastIndexOf('.')
  return i > 0 ? name.slice(i + 1).toLowerCase() : ''
}

/** 'image', 'document', or null when the chat cannot take this file. */
export function kindOf(file: Pick<File, 'name' | 'type'>): LocalKind | null {
  const type = (file.type || '').toLowerCase()
  if (IMAGE_TYPES.includes(type)) return 'image'
  if (type.startsWith('image/')) return null // SVG, HEIC, BMP...: not for the models
  if (DOCUMENT_TYPES.includes(type) || DOCUMENT_EXTENSIONS.has(extension(file.name))) return 'document'
  if (type.startsWith('text/')) return 'document'
  return null
}

/** Whether a model entry can look at images; undefined when the catalog does not say. */
export function canSeeImages(capabilities: readonly string[] | null | undefined): boolean | undefined {
  if (!capabilities || !capabilities.length) return undefined
  return capabilities.includes('vision')
}

/** The `[n]` markers in `text` that name one of the numbered citations. */
export function citationMarkers(text: string, numbers: ReadonlySet<number>): number[] {
  const out: number[] = []
  for (const m of text.matchAll(/\[(\d{1,3})\]/g)) if (numbers.has(Number(m[1]))) out.push(Number(m[1]))
  return out
}

/**
 * Turns the `[n]` markers of rendered (already sanitised) HTML into buttons-as-links `<a data-cite="n">`, for
 * the numbers a reply has citations for; text inside code, pre and links is left alone. Built with DOM nodes,
 * so nothing from the text becomes markup.
 */
export function linkCitations(html: string, numbers: ReadonlySet<number>, label: (n: number) => string): string {
  if (!numbers.size || !/\[\d{1,3}\]/.test(html)) return html
  const root = document.createElement('template')
  root.innerHTML = html
  const walker = document.createTreeWalker(root.content, NodeFilter.SHOW_TEXT)
  const texts: Text[] = []
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement
    if (el?.closest('code, pre, a, .katex')) continue
    if (/\[\d{1,3}\]/.test(n.nodeValue ?? '')) texts.push(n as Text)
  }
  for (const node of texts) {
    const value = node.nodeValue ?? ''
    const frag = document.createDocumentFragment()
    let last = 0
    for (const m of value.matchAll(/\[(\d{1,3})\]/g)) {
      const n = Number(m[1])
      if (!numbers.has(n)) continue
      const at = m.index ?? 0
      if (at > last) frag.append(value.slice(last, at))
      const a = document.createElement('a')
      a.href = `#cite-${n}`
      a.className = 'md-cite'
      a.dataset.cite = String(n)
      a.setAttribute('aria-label', label(n))
      a.textContent = `[${n}]`
      frag.append(a)
      last = at + m[0].length
    }
    if (last === 0) continue
    if (last < value.length) frag.append(value.slice(last))
    node.replaceWith(frag)
  }
  return root.innerHTML
}
