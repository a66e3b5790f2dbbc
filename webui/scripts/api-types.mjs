// API types from the server's OpenAPI schema.
//
//   node scripts/api-types.mjs           (npm run gen:api)   writes src/api/schema.d.ts
//   node scripts/api-types.mjs --check   (npm run check:api) regenerates into a temp file and exits 1
//                                                             when it differs from the committed one
//
// The schema comes from `python -m server.openapi_export` run in the repository root with the project's
// virtualenv (../.venv/bin/python; override with MODELTRAIN_PYTHON), then openapi-typescript turns it
// into TypeScript. src/api/types.ts derives the UI's types from it, so `npm run typecheck` fails when the
// server's shapes change in a way the UI does not handle.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript'

const webui = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const repo = resolve(webui, '..')
const target = join(webui, 'src', 'api', 'schema.d.ts')
const check = process.argv.includes('--check')

function python() {
  if (process.env.MODELTRAIN_PYTHON) return process.env.MODELTRAIN_PYTHON
  for (const p of [join(repo, '.venv', 'bin', 'python'), join(repo, '.venv', 'Scripts', 'python.exe')]) {
    if (existsSync(p)) return p
  }
  return 'python3'
}

function exportSchema() {
  try {
    const out = execFileSync(python(), ['-m', 'server.openapi_export'], {
      cwd: repo,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    return JSON.parse(out)
  } catch (e) {
    const detail = e && typeof e === 'object' && 'stderr' in e ? String(e.stderr).trim() : String(e)
    console.error(`api-types: could not export the OpenAPI schema with ${python()} -m server.openapi_export\n${detail}`)
    process.exit(2)
  }
}

async function render(schema) {
  const ast = await openapiTS(schema, {
    alphabetize: false,
    exportType: false,
    immutable: false,
    defaultNonNullable: false,
  })
  return `${COMMENT_HEADER}${astToString(ast)}`.replace(/\r\n/g, '\n')
}

function firstDifference(a, b) {
  const la = a.split('\n')
  const lb = b.split('\n')
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i])
      return { line: i + 1, committed: la[i] ?? '<end of file>', generated: lb[i] ?? '<end of file>' }
  }
  return null
}

const text = await render(exportSchema())

if (!check) {
  writeFileSync(target, text)
  console.log(`api-types: wrote ${target.slice(webui.length + 1)} (${text.split('\n').length} lines)`)
} else {
  const dir = mkdtempSync(join(tmpdir(), 'modeltrain-api-'))
  const fresh = join(dir, 'schema.d.ts')
  try {
    writeFileSync(fresh, text)
    const committed = existsSync(target) ? readFileSync(target, 'utf8').replace(/\r\n/g, '\n') : ''
    const generated = readFileSync(fresh, 'utf8')
    const diff = firstDifference(committed, generated)
    if (diff) {
      console.error(
        "check:api FAILED: webui/src/api/schema.d.ts is out of date with the server's OpenAPI schema.\n" +
          `  first difference at line ${diff.line}:\n` +
          `    committed: ${diff.committed.trim()}\n` +
          `    generated: ${diff.generated.trim()}\n` +
          '  Run `cd webui && npm run gen:api && npm run typecheck`, adapt src/api/types.ts if needed, and commit.',
      )
      process.exitCode = 1
    } else {
      console.log("check:api ok: src/api/schema.d.ts matches the server's OpenAPI schema")
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
