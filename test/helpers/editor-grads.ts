// Shared by the outer-gradient tests of the classic (test/40) and lifelong (test/32) training steps:
// random token batches and editor specs, spec copies, every parameter group by name, and the check of
// the trainer's accumulated gradients against central differences of its loss along random directions.
import { Test } from 'tap'
import { EditorSpec, NativeBatch, NativeModel, NativeRidge, native } from '../../lib/core/native'
import { randn } from './reference'

export function batch(r: () => number, vocab: number, B: number, T: number, nTarget: number): NativeBatch {
  const ids = new Int32Array(B * T).map(() => Math.floor(r() * vocab))
  const labels = ids.map((v, i) => (i % T >= T - nTarget ? v : -100))
  const mask = new Int32Array(B * T).fill(1)
  return { ids, B, T, mask, labels }
}

export function randomSpec(spec: EditorSpec, r: () => number): EditorSpec {
  const fill = (a: Float32Array, f: () => number) => { for (let i = 0; i < a.length; i++) a[i] = f() }
  for (const tr of spec.transforms) {
    for (const L of tr.layers) {
      fill(L.u, () => 0.3 * randn(r)); fill(L.v, () => 0.3 * randn(r)); fill(L.bias, () => 0.1 * randn(r))
      fill(L.scale, () => 1 + 0.2 * randn(r)); fill(L.shift, () => 0.1 * randn(r))
    }
    fill(tr.uMean, () => 0.05 * randn(r)); fill(tr.vMean, () => 1e-3 * randn(r))
    fill(tr.uStd, () => 0.5 + r()); fill(tr.vStd, () => 0.01 + 0.02 * r())
    tr.k = 10
  }
  fill(spec.editLrs, () => 0.15 + 0.1 * r())
  return spec
}

export function clone(spec: EditorSpec): EditorSpec {
  return {
    ...spec, editLrs: Float32Array.from(spec.editLrs),
    transforms: spec.transforms.map((tr) => ({
      ...tr, uMean: Float32Array.from(tr.uMean), vMean: Float32Array.from(tr.vMean), uStd: Float32Array.from(tr.uStd),
      vStd: Float32Array.from(tr.vStd), uS: Float32Array.from(tr.uS), vS: Float32Array.from(tr.vS),
      layers: tr.layers.map((L) => ({ ...L, u: Float32Array.from(L.u), v: Float32Array.from(L.v), bias: Float32Array.from(L.bias), scale: Float32Array.from(L.scale), shift: Float32Array.from(L.shift) })),
    })),
  }
}

/** Every parameter array of a spec with a name, in a fixed order. */
export function groups(spec: EditorSpec): [string, Float32Array][] {
  const out: [string, Float32Array][] = []
  spec.transforms.forEach((tr) => tr.layers.forEach((L, j) => {
    for (const k of ['u', 'v', 'bias', 'scale', 'shift'] as const) out.push([`mend.(${tr.dIn}, ${tr.dOut}).layers.${j}.${k}`, L[k]])
  }))
  out.push(['edit_lrs', spec.editLrs])
  return out
}

/**
 * One training step's gradients (accumulateBs 1000, no optimizer step) against central differences
 * of the evaluation loss along a random unit direction per parameter group, with step eps(name).
 * The float32 loss resolves steps of one ulp, so the difference quotient carries ± ulp(L)/(2·eps).
 * Returns the largest relative error.
 */
export async function checkOuterGradients(t: Test, c: {
  model: NativeModel; spec: EditorSpec; edit: NativeBatch; outer: NativeBatch; loc: NativeBatch; r: () => number
  cedit: number; cloc: number; eps: (name: string) => number; malmenPrior?: NativeRidge
}): Promise<number> {
  const opts = { lr: 0, lrLr: 0, cedit: c.cedit, cloc: c.cloc, gradClip: 1e9, accumulateBs: 1000, ...(c.malmenPrior ? { malmenPrior: c.malmenPrior } : {}) }
  const loss = async (s: EditorSpec) => (await native().createTrainer(c.model, s, opts).step(c.edit, c.outer, c.loc, { train: false })).total
  const tr = native().createTrainer(c.model, clone(c.spec), opts)
  const res = await tr.step(c.edit, c.outer, c.loc, { train: true, updateStats: false })
  t.ok(Math.abs(res.total - (await loss(c.spec))) < 1e-6 * Math.abs(res.total), `training and evaluation give the same loss ${res.total}`)
  t.ok(res.loc > 0 && res.edit > 0, `L_edit ${res.edit.toFixed(4)}, KL_loc ${res.loc.toExponential(3)}`)
  const grads = groups(tr.grads())
  const base = groups(c.spec)
  let worst = 0
  for (let gi = 0; gi < base.length; gi++) {
    const [name, w] = base[gi]
    const g = grads[gi][1]
    const d = new Float64Array(w.length).map(() => randn(c.r))
    const norm = Math.sqrt(d.reduce((a, x) => a + x * x, 0))
    let dot = 0
    for (let i = 0; i < w.length; i++) { d[i] /= norm; dot += g[i] * 1000 * d[i] } // grads are scaled by 1/accumulateBs
    const eps = c.eps(name)
    const plus = clone(c.spec), minus = clone(c.spec)
    const pw = groups(plus)[gi][1], mw = groups(minus)[gi][1]
    for (let i = 0; i < w.length; i++) { pw[i] = w[i] + eps * d[i]; mw[i] = w[i] - eps * d[i] }
    const fd = ((await loss(plus)) - (await loss(minus))) / (2 * eps)
    const quantum = 2 ** (Math.floor(Math.log2(res.total)) - 23) / (2 * eps)
    const err = Math.abs(dot - fd) / (Math.max(Math.abs(fd), 1e-3) + 4 * quantum / 3e-2)
    worst = Math.max(worst, err)
    t.ok(err < 3e-2, `${name}: <∇L, d> = ${dot.toExponential(4)}, central difference = ${fd.toExponential(4)} (± ${quantum.toExponential(1)} float32 quantum), rel err ${err.toExponential(2)}`)
  }
  t.comment(`largest relative error: ${worst.toExponential(2)}`)
  return worst
}
