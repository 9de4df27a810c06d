// 14.optimizer — the addon's optimizerStep (global-norm clipping + AdamW over a list of params,
// native/mend/optimizer.cc) against the Pretrainer's arithmetic written out in JavaScript (norm =
// √ of the double sum of g·g in order, scale = clip / (norm + 1e-6) when norm > clip > 0, g rounded
// to float32 after scaling, then adamwUpdate per param): bit for bit, on the params, both moments,
// the clipped gradients and the norm. Also: no clipping below the clip or with gradClip 0, a
// non-finite norm (ERR_NON_FINITE, nothing written) and argument errors.
import t from 'tap'
import path from 'node:path'

// eslint-disable-next-line @typescript-eslint/no-var-requires
const addon = require(process.env.NODE_MEND_ADDON || path.join(__dirname, '../build/Release/node_mend.node'))

let seed = 99
function randn(): number {
  seed = (seed * 1103515245 + 12345) % 2147483648
  const u = Math.max(seed / 2147483648, 1e-12)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * (seed / 2147483648))
}
const rand = (n: number, s: number) => Float32Array.from({ length: n }, () => s * randn())

interface State { p: Float32Array[]; g: Float32Array[]; m: Float32Array[]; v: Float32Array[] }
function state(sizes: number[], gscale: number): State {
  return { p: sizes.map((n) => rand(n, 0.1)), g: sizes.map((n) => rand(n, gscale)), m: sizes.map((n) => rand(n, 0.01)),
    v: sizes.map((n) => Float32Array.from(rand(n, 0.01), Math.abs)) }
}
const copy = (s: State): State => ({ p: s.p.map((a) => a.slice()), g: s.g.map((a) => a.slice()), m: s.m.map((a) => a.slice()), v: s.v.map((a) => a.slice()) })

interface Opts { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number[]; t: number; gradClip: number }
// lib/model/pretrain.ts before optimizerStep, verbatim in its arithmetic.
function reference(s: State, o: Opts): number {
  let sq = 0
  for (const g of s.g) for (const x of g) sq += x * x
  const norm = Math.sqrt(sq)
  const scale = o.gradClip > 0 && norm > o.gradClip ? o.gradClip / (norm + 1e-6) : 1
  s.g.forEach((g, k) => {
    if (scale !== 1) for (let i = 0; i < g.length; i++) g[i] *= scale
    addon.adamwUpdate(s.p[k], g, s.m[k], s.v[k], o.lr, o.beta1, o.beta2, o.eps, o.weightDecay[k], o.t)
  })
  return norm
}

// The first element that differs in bits between two lists of arrays, or '' when none does.
function firstDiff(a: Float32Array[], b: Float32Array[]): string {
  for (let k = 0; k < a.length; k++) {
    const x = new Uint32Array(a[k].buffer), y = new Uint32Array(b[k].buffer)
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return `[${k}][${i}]: ${a[k][i]} vs ${b[k][i]}`
  }
  return ''
}

const sizes = [1, 7, 300, 4096, 33]
for (const [what, gscale, gradClip] of [['clipped', 1, 1], ['below the clip', 1e-3, 1], ['gradClip 0 (none)', 1, 0]] as const) {
  t.test(`optimizerStep = Pretrainer's clip + adamwUpdate, bit for bit: ${what}`, async (tt) => {
    const ours = state(sizes, gscale), ref = copy(ours)
    for (let step = 1; step <= 3; step++) {
      const o: Opts = { lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: [0.01, 0, 0.01, 0.1, 0], t: step, gradClip }
      const norm = reference(ref, o)
      const r = addon.optimizerStep(ours.p, ours.g, ours.m, ours.v, o)
      tt.equal(r.gradNorm, norm, `step ${step}: gradNorm ${r.gradNorm} (JavaScript ${norm})`)
      for (const [name, k] of [['params', 'p'], ['grads', 'g'], ['m', 'm'], ['v', 'v']] as const) {
        const d = firstDiff(ours[k], ref[k])
        tt.equal(d, '', `step ${step}: ${name} identical${d ? ` (first difference ${d})` : ''}`)
      }
      // the next step's gradients, the same for both
      ours.g = ours.g.map((g) => Float32Array.from(g, (x) => x * 0.5 + 0.1))
      ref.g = ours.g.map((g) => g.slice())
    }
  })
}

t.test('optimizerStep: a non-finite norm throws ERR_NON_FINITE and writes nothing', async (tt) => {
  const s = state([5, 9], 1)
  s.g[1][3] = Infinity
  const before = copy(s)
  tt.throws(() => addon.optimizerStep(s.p, s.g, s.m, s.v, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: [0, 0], t: 1, gradClip: 1 }),
    { code: 'ERR_NON_FINITE' }, 'Inf in a gradient')
  for (const k of ['p', 'g', 'm', 'v'] as const) tt.equal(firstDiff(s[k], before[k]), '', `${k} unchanged`)
})

t.test('optimizerStep: argument errors', async (tt) => {
  const s = state([5, 9], 1)
  const o = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: [0, 0], t: 1, gradClip: 1 }
  const code = { code: 'ERR_INVALID_ARG' }
  tt.throws(() => addon.optimizerStep(s.p, s.g.slice(0, 1), s.m, s.v, o), code, 'one grads array short')
  tt.throws(() => addon.optimizerStep(s.p, [s.g[0], s.g[0]], s.m, s.v, o), code, 'a grad of the wrong length')
  tt.throws(() => addon.optimizerStep(s.p, s.g, s.m, s.v, { ...o, weightDecay: [0] }), code, 'weightDecay not one per param')
  tt.throws(() => addon.optimizerStep(s.p, s.g, s.m, s.v, { ...o, t: 0 }), code, 'step 0')
  tt.throws(() => addon.optimizerStep(s.p, s.g, s.m, [s.v[0], new Float64Array(9)], o), code, 'not a Float32Array')
})
