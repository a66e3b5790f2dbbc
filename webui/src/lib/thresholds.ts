import type { Level } from '@/api/types'

/** The spec's default thresholds [warning at, alert above]; the server's own values win when given. */
export const DEFAULT_THRESHOLDS: Record<string, [number, number]> = {
  cpu: [70, 90],
  memory: [80, 95],
  disk: [80, 90],
  latency: [500, 2000],
  error_rate: [1, 5],
}

export function levelFor(metric: string, value: number | null | undefined, thresholds?: Record<string, unknown>): Level | null {
  if (value === null || value === undefined || !Number.isFinite(value)) return null
  let pair = DEFAULT_THRESHOLDS[metric]
  const custom = thresholds?.[metric] as unknown
  if (Array.isArray(custom) && custom.length >= 2) pair = [Number(custom[0]), Number(custom[1])]
  else if (custom && typeof custom === 'object') {
    const c = custom as Record<string, unknown>
    const w = Number(c.warning ?? c.warn)
    const a = Number(c.alert ?? c.critical)
    if (Number.isFinite(w) && Number.isFinite(a)) pair = [w, a]
  }
  if (!pair) return null
  if (value > pair[1]) return 'alert'
  if (value >= pair[0]) return 'warning'
  return 'normal'
}
