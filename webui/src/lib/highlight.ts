/** Splits plain text into segments, marking the [start, end) ranges; never produces HTML. */
export function markSegments(
  text: string,
  ranges: Array<[number, number]> | undefined,
): Array<{ text: string; mark: boolean }> {
  if (!ranges?.length) return [{ text, mark: false }]
  const sorted = [...ranges]
    .map(([a, b]) => [Math.max(0, Math.min(a, text.length)), Math.max(0, Math.min(b, text.length))] as [number, number])
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0])
  const out: Array<{ text: string; mark: boolean }> = []
  let pos = 0
  for (const [a, b] of sorted) {
    if (a < pos) continue // overlapping range
    if (a > pos) out.push({ text: text.slice(pos, a), mark: false })
    out.push({ text: text.slice(a, b), mark: true })
    pos = b
  }
  if (pos < text.length) out.push({ text: text.slice(pos), mark: false })
  return out
}
