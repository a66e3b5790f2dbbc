import { describe, expect, it } from 'vitest'
import { canSeeImages, citationMarkers, kindOf, linkCitations } from './kinds'

describe('attachment kinds', () => {
  it('takes the images vision models read and the documents the server extracts, refuses the rest', () => {
    expect(kindOf({ name: 'shot.png', type: 'image/png' })).toBe('image')
    expect(kindOf({ name: 'photo.webp', type: 'image/webp' })).toBe('image')
    expect(kindOf({ name: 'logo.svg', type: 'image/svg+xml' })).toBeNull()
    expect(kindOf({ name: 'paper.pdf', type: 'application/pdf' })).toBe('document')
    expect(kindOf({ name: 'main.rs', type: '' })).toBe('document') // browsers give code files no type
    expect(kindOf({ name: 'notes.txt', type: 'text/plain' })).toBe('document')
    expect(kindOf({ name: 'setup.exe', type: 'application/x-msdownload' })).toBeNull()
    expect(kindOf({ name: 'archive.zip', type: 'application/zip' })).toBeNull()
  })

  it('says whether a model can see images only when the catalog tells', () => {
    expect(canSeeImages(['completion', 'vision'])).toBe(true)
    expect(canSeeImages(['completion', 'tools'])).toBe(false)
    expect(canSeeImages([])).toBeUndefined()
    expect(canSeeImages(undefined)).toBeUndefined()
  })
})

describe('citation links', () => {
  const label = (n: number) => `Open source ${n}`

  it('links the [n] markers a reply has sources for, leaving other numbers and code alone', () => {
    const html = '<p>Water boils at 100 °C [1], see also [2] and [7].</p><pre><code>a[1]</code></pre>'
    const out = linkCitations(html, new Set([1, 2]), label)
    const div = document.createElement('div')
    div.innerHTML = out
    const links = [...div.querySelectorAll('a.md-cite')]
    expect(links.map((a) => [a.textContent, a.getAttribute('data-cite'), a.getAttribute('aria-label')])).toEqual([
      ['[1]', '1', 'Open source 1'],
      ['[2]', '2', 'Open source 2'],
    ])
    expect(div.querySelector('p')!.textContent).toBe('Water boils at 100 °C [1], see also [2] and [7].')
    expect(div.querySelector('code')!.innerHTML).toBe('a[1]')
  })

  it('never turns text into markup', () => {
    const html = '<p>&lt;img src=x onerror=alert(1)&gt; [1]</p>'
    const out = linkCitations(html, new Set([1]), label)
    const div = document.createElement('div')
    div.innerHTML = out
    expect(div.querySelector('img')).toBeNull()
    expect(div.querySelectorAll('a')).toHaveLength(1)
  })

  it('lists the markers in the order they appear', () => {
    expect(citationMarkers('a [2] b [1] c [9] d [2]', new Set([1, 2]))).toEqual([2, 1, 2])
  })
})
