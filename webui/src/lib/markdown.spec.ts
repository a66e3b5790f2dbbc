import { beforeAll, describe, expect, it } from 'vitest'
import katex from 'katex'
import python from 'highlight.js/lib/languages/python'
import { fenceLanguages, needsMath, registerLanguage, renderMarkdown, setKatex } from './markdown'

/** Hostile model outputs (docs/security.md, D1): each must render inert. */
const CORPUS: Record<string, string> = {
  imgOnerror: '<img src=x onerror="alert(1)">',
  scriptTag: '<script>alert(1)</script>',
  jsLink: '[click me](javascript:alert(1))',
  jsLinkEncoded: '[click](jav&#x61;script:alert(1)) [x](JaVaScRiPt:alert(1)) [y]( javascript:alert(1))',
  dataLink: '[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)',
  vbscript: '[x](vbscript:msgbox(1))',
  autolinkJs: '<javascript:alert(1)>',
  svgScript: '<svg><script>alert(1)</script></svg><svg onload=alert(1)>',
  svgInFence: '```svg\n<svg onload=alert(1)><script>alert(1)</script></svg>\n```',
  htmlInCode: '`<img src=x onerror=alert(1)>` and ```html\n<iframe src="https://attacker.test"></iframe>\n```',
  unbalancedFence: '```\n<img src=x onerror=alert(1)>\n',
  unbalancedFenceThenHtml: '````js\nconsole.log(1)\n```\n<img src=x onerror=alert(1)>\n``',
  korelogicFence: '```<img src=x onerror=alert(1)>\nx\n```',
  fenceInfoInjection: '```js" onmouseover="alert(1)\ncode\n```',
  iframe: '<iframe src="https://attacker.test/"></iframe>',
  markdownImage: '![x](https://attacker.test/pixel.png)',
  imageJs: '![x](javascript:alert(1))',
  linkTitle: '[a](https://ok.test "title\\" onmouseover=\\"alert(1)")',
  styleTag: '<style>body{background:url(https://attacker.test/x)}</style>',
  formAction: '<form action="https://attacker.test"><button>go</button></form>',
  objectEmbed: '<object data="https://attacker.test/x.swf"></object><embed src="https://attacker.test/x">',
  metaRefresh: '<meta http-equiv="refresh" content="0;url=https://attacker.test">',
  mathHref: '$\\href{javascript:alert(1)}{click}$ and $$\\url{javascript:alert(1)}$$',
  mathHtmlData:
    '$\\htmlData{onerror=alert(1)}{x}$ $\\htmlClass{x}{y}$ $\\htmlStyle{background:url(https://attacker.test)}{z}$',
  mathIncludegraphics: '$\\includegraphics{https://attacker.test/x.png}$',
  mathBomb: '$' + '\\def\\a{\\a\\a}'.repeat(3) + '\\a$',
  entityTricks: '&lt;img src=x onerror=alert(1)&gt; &#60;script&#62;',
  nestedQuotes: '> <img src=x onerror=alert(1)>\n> ```\n> <script>alert(1)</script>',
  tableHtml: '| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | <a href="javascript:alert(1)">x</a> |',
  linkify: 'visit www.example.com or javascript:alert(1)',
}

function inert(html: string) {
  const doc = new DOMParser().parseFromString(`<div id="root">${html}</div>`, 'text/html')
  const root = doc.getElementById('root')!
  const all = root.querySelectorAll('*')
  for (const el of all) {
    const tag = el.tagName.toLowerCase()
    expect([
      'script',
      'iframe',
      'object',
      'embed',
      'img',
      'style',
      'form',
      'meta',
      'link',
      'base',
      'foreignobject',
      'image',
      'use',
    ]).not.toContain(tag)
    for (const attr of el.attributes) {
      expect(attr.name.startsWith('on'), `${tag} has ${attr.name}`).toBe(false)
      if (['href', 'src', 'xlink:href', 'action', 'formaction', 'data'].includes(attr.name)) {
        expect(attr.value.trim()).toMatch(/^(https?:|mailto:|#)/i)
      }
      if (attr.name === 'style') expect(attr.value).not.toMatch(/url\(|javascript:/i)
    }
    if (tag === 'a' && el.getAttribute('href')) {
      expect(el.getAttribute('rel')).toContain('noopener')
      expect(el.getAttribute('target')).toBe('_blank')
    }
  }
}

describe('renderMarkdown: hostile corpus renders inert', () => {
  beforeAll(() => {
    setKatex(katex)
    registerLanguage('python', python)
  })
  for (const [name, src] of Object.entries(CORPUS)) {
    it(name, () => {
      const html = renderMarkdown(src)
      inert(html)
      expect(html).not.toMatch(/<[^>]+(href|src|action)\s*=\s*["']?\s*(javascript|vbscript|data):/i)
      expect(html).not.toMatch(/<script/i)
    })
  }

  it('shows raw HTML as text rather than dropping it', () => {
    const html = renderMarkdown('<b>bold?</b>')
    expect(html).toContain('&lt;b&gt;')
  })

  it('never loads remote images; the image becomes a link', () => {
    const html = renderMarkdown('![pixel](https://attacker.test/pixel.png)')
    expect(html).not.toMatch(/<img/i)
    expect(html).toContain('href="https://attacker.test/pixel.png"')
  })

  it('keeps HTML inside code blocks as escaped text', () => {
    const html = renderMarkdown('```html\n<script>alert(1)</script>\n```')
    expect(html).toContain('&lt;script&gt;')
    expect(html).toContain('data-md-action="copy"')
  })
})

describe('renderMarkdown: features', () => {
  beforeAll(() => {
    setKatex(katex)
    registerLanguage('python', python)
  })

  it('highlights registered languages and wraps code with a copy button', () => {
    const html = renderMarkdown('```python\ndef f():\n    return 1\n```')
    expect(html).toContain('class="hljs language-python"')
    expect(html).toContain('hljs-keyword')
    expect(html).toContain('md-code-copy')
  })

  it('renders inline and display math with KaTeX', () => {
    const html = renderMarkdown('Euler: $e^{i\\pi}+1=0$\n\n$$\n\\int_0^1 x\\,dx = \\frac12\n$$\n\nand \\(a^2\\)')
    expect(html).toContain('class="katex"')
    expect(html).toContain('katex-display')
    expect((html.match(/class="katex"/g) || []).length).toBeGreaterThanOrEqual(3)
  })

  it('leaves prices alone', () => {
    const html = renderMarkdown('It costs $5 and $10 today.')
    expect(html).not.toContain('katex')
    expect(html).toContain('$5 and $10')
  })

  it('safe links open in a new tab without referrer', () => {
    const html = renderMarkdown('[docs](https://example.com)')
    expect(html).toContain('target="_blank"')
    expect(html).toContain('rel="noopener noreferrer nofollow"')
  })

  it('detects math and fence languages for lazy loading', () => {
    expect(needsMath('a $x$ b')).toBe(true)
    expect(needsMath('costs $ 5')).toBe(false)
    expect(fenceLanguages('```ts\nx\n```\n~~~py\n~~~\n```unknown\n```')).toEqual(['typescript', 'python'])
  })

  it('falls back to the TeX source while KaTeX is not loaded', () => {
    setKatex(null)
    const html = renderMarkdown('$<img src=x onerror=alert(1)>$')
    expect(html).not.toMatch(/<img/i)
    setKatex(katex)
  })
})
