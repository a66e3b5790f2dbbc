/**
 * Markdown for model output: markdown-it (raw HTML disabled) -> highlight.js -> KaTeX (trust: false)
 * -> DOMPurify on the final HTML. Whatever a model writes must render inert.
 */
import MarkdownIt from 'markdown-it'
import DOMPurify from 'dompurify'
import hljs from 'highlight.js/lib/core'
import { mathPlugin } from './mathPlugin'

type KatexLike = { renderToString: (tex: string, opts: Record<string, unknown>) => string }
let katex: KatexLike | null = null

export function setKatex(k: KatexLike | null): void {
  katex = k
}
export function hasKatex(): boolean {
  return katex !== null
}

export interface RenderLabels {
  copy: string
}
let labels: RenderLabels = { copy: 'Copy' }
export function setLabels(l: RenderLabels): void {
  labels = l
}

/** Aliases used in fences -> highlight.js language module names (loaded lazily). */
export const LANGUAGE_ALIASES: Record<string, string> = {
  js: 'javascript',
  javascript: 'javascript',
  jsx: 'javascript',
  mjs: 'javascript',
  cjs: 'javascript',
  ts: 'typescript',
  typescript: 'typescript',
  tsx: 'typescript',
  py: 'python',
  python: 'python',
  python3: 'python',
  sh: 'bash',
  bash: 'bash',
  shell: 'bash',
  zsh: 'bash',
  console: 'bash',
  json: 'json',
  jsonc: 'json',
  html: 'xml',
  xml: 'xml',
  svg: 'xml',
  vue: 'xml',
  css: 'css',
  scss: 'scss',
  less: 'less',
  c: 'c',
  h: 'c',
  cpp: 'cpp',
  'c++': 'cpp',
  cc: 'cpp',
  hpp: 'cpp',
  cs: 'csharp',
  csharp: 'csharp',
  java: 'java',
  kotlin: 'kotlin',
  kt: 'kotlin',
  scala: 'scala',
  go: 'go',
  golang: 'go',
  rust: 'rust',
  rs: 'rust',
  swift: 'swift',
  rb: 'ruby',
  ruby: 'ruby',
  php: 'php',
  pl: 'perl',
  perl: 'perl',
  lua: 'lua',
  r: 'r',
  sql: 'sql',
  yaml: 'yaml',
  yml: 'yaml',
  toml: 'ini',
  ini: 'ini',
  md: 'markdown',
  markdown: 'markdown',
  diff: 'diff',
  patch: 'diff',
  dockerfile: 'dockerfile',
  docker: 'dockerfile',
  makefile: 'makefile',
  make: 'makefile',
  ps1: 'powershell',
  powershell: 'powershell',
  dart: 'dart',
  haskell: 'haskell',
  hs: 'haskell',
  elixir: 'elixir',
  ex: 'elixir',
  erlang: 'erlang',
  clojure: 'clojure',
  ocaml: 'ocaml',
  julia: 'julia',
  matlab: 'matlab',
  nginx: 'nginx',
  graphql: 'graphql',
  gql: 'graphql',
  protobuf: 'protobuf',
  proto: 'protobuf',
  latex: 'latex',
  tex: 'latex',
  plaintext: 'plaintext',
  text: 'plaintext',
  txt: 'plaintext',
}

export function canonicalLanguage(lang: string): string | null {
  return LANGUAGE_ALIASES[lang.toLowerCase()] ?? null
}

export function registerLanguage(name: string, fn: Parameters<typeof hljs.registerLanguage>[1]): void {
  if (!hljs.getLanguage(name)) hljs.registerLanguage(name, fn)
}

export function isLanguageLoaded(name: string): boolean {
  return !!hljs.getLanguage(name)
}

const escapeHtml = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;')

function renderMath(tex: string, display: boolean): string {
  if (katex) {
    try {
      return katex.renderToString(tex, {
        displayMode: display,
        throwOnError: false,
        trust: false,
        strict: 'ignore',
        maxSize: 20,
        maxExpand: 300,
        output: 'htmlAndMathml',
      })
    } catch {
      /* fall through to the source text */
    }
  }
  const tag = display ? 'div' : 'span'
  return `<${tag} class="md-math-src${display ? ' md-math-display' : ''}">${escapeHtml(tex)}</${tag}>`
}

function fenceLanguage(info: string): string {
  return (info.trim().split(/\s+/)[0] || '')
    .toLowerCase()
    .replace(/[^a-z0-9_+#.-]/g, '')
    .slice(0, 32)
}

const md = new MarkdownIt({ html: false, linkify: true, breaks: false, typographer: false })
md.use(mathPlugin, renderMath)

md.renderer.rules.fence = (tokens, idx) => {
  const tok = tokens[idx]
  const lang = fenceLanguage(md.utils.unescapeAll(tok.info || ''))
  if (lang === 'math' || lang === 'katex') return `<div class="md-math-block">${renderMath(tok.content, true)}</div>\n`
  const canon = lang ? canonicalLanguage(lang) : null
  let body: string
  if (canon && hljs.getLanguage(canon)) {
    try {
      body = hljs.highlight(tok.content, { language: canon, ignoreIllegals: true }).value
    } catch {
      body = escapeHtml(tok.content)
    }
  } else {
    body = escapeHtml(tok.content)
  }
  const label = escapeHtml(labels.copy)
  return (
    `<div class="md-code"><div class="md-code-head"><span class="md-code-lang">${escapeHtml(lang)}</span>` +
    `<button type="button" class="md-code-copy" data-md-action="copy" aria-label="${label}">${label}</button></div>` +
    `<pre><code class="hljs${canon ? ` language-${canon}` : ''}">${body}</code></pre></div>\n`
  )
}

// Images from model output are never fetched automatically (no request to another origin): show a link.
md.renderer.rules.image = (tokens, idx) => {
  const tok = tokens[idx]
  const src = String(tok.attrGet('src') || '')
  const alt = String(tok.children?.map((c) => c.content).join('') || tok.content || src)
  return `<a href="${escapeHtml(src)}" class="md-image-link">${escapeHtml(alt)}</a>`
}

const SAFE_URL = /^(?:https?:|mailto:|#)/i

const PURIFY_CONFIG = {
  ALLOWED_URI_REGEXP: SAFE_URL,
  FORBID_TAGS: [
    'style',
    'script',
    'iframe',
    'frame',
    'object',
    'embed',
    'form',
    'input',
    'textarea',
    'select',
    'option',
    'img',
    'image',
    'video',
    'audio',
    'source',
    'track',
    'picture',
    'link',
    'meta',
    'base',
    'foreignObject',
    'use',
    'animate',
    'set',
    'animateTransform',
    'animateMotion',
    'feImage',
    'dialog',
    'template',
    'noscript',
  ],
  FORBID_ATTR: ['srcset', 'ping', 'formaction', 'action', 'xlink:href', 'background', 'poster', 'src', 'id', 'name'],
  ADD_ATTR: ['target'],
  ALLOW_UNKNOWN_PROTOCOLS: false,
}

let hooksInstalled = false
function installHooks() {
  if (hooksInstalled) return
  hooksInstalled = true
  DOMPurify.addHook('uponSanitizeAttribute', (_node, data) => {
    if (
      data.attrName === 'style' &&
      /url\s*\(|expression|@import|javascript:|behavior|-moz-binding/i.test(String(data.attrValue))
    ) {
      data.keepAttr = false
    }
    if (data.attrName.startsWith('on')) data.keepAttr = false
  })
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      const href = node.getAttribute('href')
      if (href && SAFE_URL.test(href) && !href.startsWith('#')) {
        node.setAttribute('target', '_blank')
        node.setAttribute('rel', 'noopener noreferrer nofollow')
      } else if (href && !href.startsWith('#')) {
        node.removeAttribute('href')
      }
    }
  })
}

export function sanitize(html: string): string {
  installHooks()
  return DOMPurify.sanitize(html, PURIFY_CONFIG) as unknown as string
}

/** Renders untrusted markdown to safe HTML (sanitised after rendering). */
export function renderMarkdown(src: string): string {
  return sanitize(md.render(src ?? ''))
}

/** True when the text may contain TeX that KaTeX should typeset. */
export function needsMath(src: string): boolean {
  return /\$[^$\s]|\\\(|\\\[|```(?:math|katex)/.test(src)
}

/** Languages named by the fences of a text. */
export function fenceLanguages(src: string): string[] {
  const out = new Set<string>()
  const re = /^[ \t]{0,3}(?:```|~~~)[ \t]*([^\s`]+)/gm
  let m: RegExpExecArray | null
  while ((m = re.exec(src))) {
    const canon = canonicalLanguage(fenceLanguage(m[1]))
    if (canon) out.add(canon)
  }
  return [...out]
}
