/**
 * Evaluation of an editor on a data set (EasyEdit's metrics): single edits on the unedited model,
 * and, optionally, a sequential curve — metrics over the first k requests after k accumulated edits —
 * written as JSON, a Markdown report and an SVG plot of reliability/locality against k.
 */
import { EditRequest } from '../data/editdata'
import { BaseEditor, editorRequest, RequestMetrics } from './base-editor'
import { mendError } from '../core/errors'

export interface MetricRow {
  /** Accumulated edits (1 for single edits). */
  edits: number
  requests: number
  reliability: number
  generalization?: number
  locality?: number
  portability?: number
  /** Greedy exact match of the new target after the edit prompt (node-mend's; not EasyEdit's). */
  greedy?: number
}

export interface EvalResult {
  single: MetricRow & { preReliability: number }
  sequential: MetricRow[]
  /** Every request's metrics: the single edits, and per sequential checkpoint. */
  requests: { single: RequestMetrics[]; sequential: { edits: number; metrics: RequestMetrics[] }[] }
  /** What produced the result (model, editor, data, settings, package version), when given. */
  provenance?: Record<string, unknown>
}

function summarise(edits: number, ms: RequestMetrics[]): MetricRow {
  const avg = (f: (m: RequestMetrics) => number | undefined) => {
    const xs = ms.map(f).filter((x): x is number => typeof x === 'number')
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined
  }
  const row: MetricRow = { edits, requests: ms.length, reliability: avg((m) => m.post.rewrite_acc)! }
  const g = avg((m) => m.post.rephrase_acc), l = avg((m) => m.post.locality), p = avg((m) => m.post.portability)
  const gm = avg((m) => m.post.rewrite_greedy)
  if (g !== undefined) row.generalization = g
  if (l !== undefined) row.locality = l
  if (p !== undefined) row.portability = p
  if (gm !== undefined) row.greedy = gm
  return row
}

/** The sequential checkpoints 1, 2, 5, 10, 20, 50, … up to n (n included). */
export function checkpoints(n: number): number[] {
  const out: number[] = []
  for (let d = 1; d <= n; d *= 10) for (const m of [1, 2, 5]) if (m * d <= n) out.push(m * d)
  if (out[out.length - 1] !== n) out.push(n)
  return out
}

export async function evaluateEditor(editor: BaseEditor, records: EditRequest[],
  opts: { sequential?: number; onProgress?: (done: number, total: number) => void; provenance?: Record<string, unknown> } = {}): Promise<EvalResult> {
  if (records.length === 0) throw mendError('ERR_INVALID_ARG', 'Expected at least one request to evaluate')
  const seqN = opts.sequential ?? 0
  if (!Number.isInteger(seqN) || seqN < 0 || seqN > records.length) {
    throw mendError('ERR_INVALID_ARG', `Expected --sequential in [0, ${records.length}] but received ${seqN}`)
  }
  const ks = seqN > 0 ? checkpoints(seqN) : []
  let total = records.length + seqN  // until the sequential part reports its own
  let done = 0
  const single: RequestMetrics[] = []
  for (const r of records) {
    const { metrics } = await editor.edit({ ...editorRequest([r]), greedyMatch: true })
    single.push(metrics[0])
    opts.onProgress?.(++done, total)
  }
  const pre = single.reduce((a, m) => a + m.pre.rewrite_acc, 0) / single.length
  const sequential: MetricRow[] = []
  const perCheckpoint: { edits: number; metrics: RequestMetrics[] }[] = []
  if (ks.length) {
    // one sequence of seqN edits, measured after k of them for every checkpoint k
    // The sequential part reports its own work (edits, refinement, measurements); the total grows to include it.
    const n = records.length
    const curve = await editor.sequentialCurve({ ...editorRequest(records.slice(0, seqN)), greedyMatch: true }, ks,
      opts.onProgress ? { onProgress: (d, t) => { done = n + d; total = n + t; opts.onProgress!(done, total) } } : {})
    curve.forEach((metrics, i) => { sequential.push(summarise(ks[i], metrics)); perCheckpoint.push({ edits: ks[i], metrics }) })
  }
  opts.onProgress?.(total, total)
  const out: EvalResult = { single: { ...summarise(1, single), preReliability: pre }, sequential, requests: { single, sequential: perCheckpoint } }
  if (opts.provenance) out.provenance = opts.provenance
  return out
}

const pct = (x: number | undefined) => (x === undefined ? '–' : `${(100 * x).toFixed(1)}%`)

export function markdownReport(r: EvalResult, title: string): string {
  const head = ['| edits | requests | reliability | generalization | locality | portability | greedy match |', '|---|---|---|---|---|---|---|']
  const lines = [`# ${title}`, '']
  if (r.provenance) {
    lines.push('Produced by:', '', ...Object.entries(r.provenance).map(([k, v]) => `- ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`), '')
  }
  lines.push(`Single edits on the unedited model (${r.single.requests} requests; reliability before editing ${pct(r.single.preReliability)}):`, '', ...head)
  const row = (m: MetricRow) => `| ${m.edits} | ${m.requests} | ${pct(m.reliability)} | ${pct(m.generalization)} | ${pct(m.locality)} | ${pct(m.portability)} | ${pct(m.greedy)} |`
  lines.push(row(r.single))
  if (r.sequential.length) {
    lines.push('', 'Sequential edits (metrics over the first k requests after k accumulated edits):', '',
      ...head, ...r.sequential.map(row), '', '![reliability, generalization, locality and greedy match against the number of edits](plot.svg)')
  }
  return lines.join('\n') + '\n'
}

/** A small SVG line plot of reliability, generalization, locality and greedy match (%) against the number of sequential edits (log axis). */
export function svgPlot(rows: MetricRow[], title = 'MEND under sequential editing', compare?: { rows: MetricRow[]; label: string; mainLabel: string }): string {
  const W = 480, H = 300, L = 50, R = 20, T = 28, B = 40
  const xs = [...new Set([...rows, ...(compare?.rows ?? [])].map((r) => r.edits))].sort((a, b) => a - b)
  const lx = (k: number) => (xs.length < 2 ? L : L + ((Math.log10(k) - Math.log10(xs[0])) / (Math.log10(xs[xs.length - 1]) - Math.log10(xs[0]) || 1)) * (W - L - R))
  const ly = (v: number) => T + (1 - v) * (H - T - B)
  const series: [string, string, (r: MetricRow) => number | undefined][] = [
    ['reliability', '#1f77b4', (r) => r.reliability], ['generalization', '#2ca02c', (r) => r.generalization],
    ['locality', '#d62728', (r) => r.locality], ['greedy match', '#9467bd', (r) => r.greedy]]
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<line x1="${L}" y1="${ly(0)}" x2="${W - R}" y2="${ly(0)}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${ly(0)}" stroke="black"/>`]
  for (const v of [0, 0.25, 0.5, 0.75, 1]) parts.push(`<text x="${L - 6}" y="${ly(v) + 4}" text-anchor="end">${v * 100}%</text>`)
  for (const k of xs) parts.push(`<text x="${lx(k)}" y="${ly(0) + 16}" text-anchor="middle">${k}</text>`)
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">sequential edits (log scale)</text>`)
  parts.push(`<text x="${(L + W - R) / 2}" y="${T - 6}" text-anchor="middle" font-size="12" font-weight="bold">${title.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}</text>`)
  parts.push(`<text x="12" y="${(T + ly(0)) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(T + ly(0)) / 2})">metric after the last edit (%)</text>`)
  const draw = (rs: MetricRow[], dash: boolean) => series.forEach(([, color, f]) => {
    const pts = rs.filter((r) => f(r) !== undefined).map((r) => `${lx(r.edits).toFixed(1)},${ly(f(r)!).toFixed(1)}`)
    if (pts.length) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash ? ' stroke-dasharray="5,4"' : ''} points="${pts.join(' ')}"/>`)
    for (const p of pts) { const [x, y] = p.split(','); parts.push(dash ? `<rect x="${+x - 2.5}" y="${+y - 2.5}" width="5" height="5" fill="${color}"/>` : `<circle cx="${x}" cy="${y}" r="3" fill="${color}"/>`) }
  })
  draw(rows, false)
  if (compare) draw(compare.rows, true)
  series.forEach(([name, color], i) => parts.push(`<text x="${W - R - 90}" y="${T + 14 + 14 * i}" fill="${color}">${name}</text>`))
  if (compare) {
    const esc = (x: string) => x.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    const y0 = T + 14 + 14 * series.length
    parts.push(`<line x1="${W - R - 90}" y1="${y0 - 4}" x2="${W - R - 70}" y2="${y0 - 4}" stroke="black" stroke-width="2"/><text x="${W - R - 66}" y="${y0}">${esc(compare.mainLabel)}</text>`)
    parts.push(`<line x1="${W - R - 90}" y1="${y0 + 10}" x2="${W - R - 70}" y2="${y0 + 10}" stroke="black" stroke-width="2" stroke-dasharray="5,4"/><text x="${W - R - 66}" y="${y0 + 14}">${esc(compare.label)}</text>`)
  }
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

/** @deprecated Renamed `evaluateEditor` (beside `EditTrainer.evaluate`, one step's losses); this alias goes in the next release. */
export const evaluate = evaluateEditor
