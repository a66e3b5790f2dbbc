// Prints the gzipped size of what the browser loads first (entry script, its preloads, CSS),
// plus the extra chunks for the chat screen. Run after `npm run build`.
import { readFileSync, readdirSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { join } from 'node:path'

const dist = new URL('../dist/', import.meta.url).pathname
const html = readFileSync(join(dist, 'index.html'), 'utf8')
const refs = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1])
const gz = (p) => gzipSync(readFileSync(join(dist, p)), { level: 9 }).length
const kb = (n) => `${(n / 1024).toFixed(1)} KiB`

let js = 0
let css = 0
for (const r of new Set(refs)) {
  const n = gz(r)
  if (r.endsWith('.js')) js += n
  else css += n
  console.log(`  ${r.padEnd(48)} ${kb(n)}`)
}
console.log(`initial JS  (gzip): ${kb(js)}`)
console.log(`initial CSS (gzip): ${kb(css)}`)
console.log(`initial total     : ${kb(js + css)}`)

// chunks for the first screen after sign-in (layout + chat), resolved through static imports
const assets = readdirSync(join(dist, 'assets'))
const seen = new Set(refs.map((r) => r.replace('assets/', '')))
const queue = assets.filter((a) => /^(AppLayout|ChatView)-.*\.js$/.test(a))
let extra = 0
while (queue.length) {
  const a = queue.shift()
  if (seen.has(a)) continue
  seen.add(a)
  extra += gz(`assets/${a}`)
  const src = readFileSync(join(dist, 'assets', a), 'utf8')
  for (const m of src.matchAll(/from\s*"\.\/([^"]+\.js)"|import\s*"\.\/([^"]+\.js)"/g)) queue.push(m[1] || m[2])
  const cssName = a.replace(/\.js$/, '.css')
  if (assets.includes(cssName) && !seen.has(cssName)) {
    seen.add(cssName)
    extra += gz(`assets/${cssName}`)
  }
}
console.log(`chat screen adds  : ${kb(extra)} (layout + chat view and their static imports)`)
