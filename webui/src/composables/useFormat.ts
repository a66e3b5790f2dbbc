import { currentLocale } from '@/i18n'

const UNITS = ['byte', 'kilobyte', 'megabyte', 'gigabyte', 'terabyte', 'petabyte'] as const

export function formatBytes(n: number | null | undefined, locale: string = currentLocale()): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—'
  let v = Math.abs(n)
  let i = 0
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000
    i++
  }
  const fmt = new Intl.NumberFormat(locale, {
    style: 'unit',
    unit: UNITS[i],
    unitDisplay: 'short',
    maximumFractionDigits: v < 10 && i > 0 ? 1 : 0,
  })
  return (n < 0 ? '-' : '') + fmt.format(v)
}

export function formatRate(bytesPerSecond: number | null | undefined, locale: string = currentLocale()): string {
  if (!bytesPerSecond || !Number.isFinite(bytesPerSecond)) return '—'
  let v = bytesPerSecond
  let i = 0
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000
    i++
  }
  return new Intl.NumberFormat(locale, {
    style: 'unit',
    unit: `${UNITS[i]}-per-second`,
    unitDisplay: 'short',
    maximumFractionDigits: v < 10 ? 1 : 0,
  }).format(v)
}

export function formatNumber(n: number | null | undefined, digits = 0, locale: string = currentLocale()): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—'
  return new Intl.NumberFormat(locale, { maximumFractionDigits: digits }).format(n)
}

/** `value` is a percentage 0..100. */
export function formatPercent(value: number | null | undefined, digits = 1, locale: string = currentLocale()): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—'
  return new Intl.NumberFormat(locale, { style: 'percent', maximumFractionDigits: digits }).format(value / 100)
}

export function toDate(v: string | number | Date | null | undefined): Date | null {
  if (v === null || v === undefined || v === '') return null
  if (v instanceof Date) return v
  if (typeof v === 'number') return new Date(v < 1e12 ? v * 1000 : v)
  const d = new Date(v)
  return Number.isNaN(d.getTime()) ? null : d
}

export function formatDateTime(v: string | number | Date | null | undefined, locale: string = currentLocale()): string {
  const d = toDate(v)
  if (!d) return '—'
  return new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }).format(d)
}

export function formatTime(v: string | number | Date | null | undefined, locale: string = currentLocale()): string {
  const d = toDate(v)
  if (!d) return '—'
  return new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(d)
}

export function formatRelative(
  v: string | number | Date | null | undefined,
  locale: string = currentLocale(),
  now = Date.now(),
): string {
  const d = toDate(v)
  if (!d) return '—'
  const diff = (d.getTime() - now) / 1000
  const abs = Math.abs(diff)
  const rtf = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' })
  if (abs < 60) return rtf.format(Math.round(diff), 'second')
  if (abs < 3600) return rtf.format(Math.round(diff / 60), 'minute')
  if (abs < 86400) return rtf.format(Math.round(diff / 3600), 'hour')
  if (abs < 86400 * 30) return rtf.format(Math.round(diff / 86400), 'day')
  return formatDateTime(d, locale)
}

export function formatDuration(seconds: number | null | undefined, locale: string = currentLocale()): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '—'
  const s = Math.round(seconds)
  const parts: Array<[number, string]> = [
    [Math.floor(s / 86400), 'day'],
    [Math.floor((s % 86400) / 3600), 'hour'],
    [Math.floor((s % 3600) / 60), 'minute'],
    [s % 60, 'second'],
  ]
  const used = parts.filter(([n]) => n > 0).slice(0, 2)
  if (!used.length) used.push([0, 'second'])
  return used
    .map(([n, unit]) => new Intl.NumberFormat(locale, { style: 'unit', unit, unitDisplay: 'narrow' }).format(n))
    .join(' ')
}
