// 12.kernels — every CPU kernel against a plain float64 JavaScript reference (forward) and against
// directional finite differences of that reference (backward), through the testing addon
// (test/helpers/testing-addon.ts). Each check names the tensor and prints its largest difference.
import t, { type Test } from 'tap'
import { testingAddon } from './helpers/testing-addon'

const K = testingAddon()

type Vec = ArrayLike<number>

// ---- helpers ---------------------------------------------------------------------------------

// Deterministic random numbers (mulberry32), so a failure reproduces.
let seed = 12345
function rand(): number {
  seed = (seed + 0x6d2b79f5) | 0
  let x = seed
  x = Math.imul(x ^ (x >>> 15), x | 1)
  x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296
}
function randn(): number {
  const u = Math.max(rand(), 1e-12)
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand())
}
function randF32(n: number, scale = 1, offset = 0): Float32Array {
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = offset + scale * randn()
  return a
}
function randF64(n: number, scale = 1): Float64Array {
  const a = new Float64Array(n)
  for (let i = 0; i < n; i++) a[i] = scale * randn()
  return a
}
function randInt(n: number, lo: number, hi: number): Int32Array {
  const a = new Int32Array(n)
  for (let i = 0; i < n; i++) a[i] = lo + Math.floor(rand() * (hi - lo))
  return a
}
function dot(a: Vec, b: Vec): number {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i] * b[i]
  return s
}
function absDot(a: Vec, b: Vec): number {
  let s = 0
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] * b[i])
  return s
}
// x + eps * d, in float64
function axpy(x: Vec, eps: number, d: Vec): Float64Array {
  const r = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) r[i] = x[i] + eps * d[i]
  return r
}
function sub(a: Vec, b: Vec): Float64Array {
  const r = new Float64Array(a.length)
  for (let i = 0; i < a.length; i++) r[i] = a[i] - b[i]
  return r
}
function maxAbs(a: Vec): number {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]))
  return m
}
const fmt = (x: number) => x.toExponential(2)

// got ≈ want elementwise: max |got - want| <= rtol * max(|want|) (+ atol). Names the tensor.
function close(tt: Test, name: string, got: Vec, want: Vec, rtol: number, atol = 0): number {
  tt.equal(got.length, want.length, `${name}: length`)
  let d = 0
  let bad = -1
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i])
    if (!(e <= d)) { d = e; if (Number.isNaN(e)) { bad = i; break } }
  }
  const scale = maxAbs(want)
  const tol = rtol * scale + atol
  tt.ok(bad < 0 && d <= tol,
    `${name}: max |diff| = ${bad >= 0 ? `NaN at ${bad}` : fmt(d)} (max |ref| ${fmt(scale)}, tol ${fmt(tol)})`)
  return d
}
// An analytic directional derivative against a central difference: |a - n| <= rtol * (|n| + floor),
// floor = sum |g_i d_i| * 1e-3 keeps cancellation in a random direction from making the test flaky.
function dirClose(tt: Test, name: string, analytic: number, numeric: number, absScale: number, rtol = 1e-3): number {
  const err = Math.abs(analytic - numeric)
  const tol = rtol * (Math.max(Math.abs(numeric), Math.abs(analytic)) + 1e-3 * absScale)
  const rel = err / Math.max(Math.abs(numeric), 1e-300)
  tt.ok(err <= tol,
    `${name}: <grad, d> = ${analytic.toPrecision(9)}, finite difference ${numeric.toPrecision(9)} ` +
    `(|diff| ${fmt(err)}, rel ${fmt(rel)}, tol ${fmt(tol)})`)
  return rel
}
// Central difference of f along the direction: (f(+eps) - f(-eps)) / 2 eps
function central(f: (eps: number) => number, eps: number): number {
  return (f(eps) - f(-eps)) / (2 * eps)
}

// ---- references (float64, written for clarity) -------------------------------------------------

function encoderRef(ids: Int32Array, pos: Int32Array | null, wte: Vec, wpe: Vec, B: number, T: number, C: number, pos0: number): Float64Array {
  const out = new Float64Array(B * T * C)
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const r = b * T + t
      const p = pos ? pos[r] : pos0 + t
      for (let c = 0; c < C; c++) out[r * C + c] = wte[ids[r] * C + c] + wpe[p * C + c]
    }
  }
  return out
}

function layernormRef(inp: Vec, w: Vec, bias: Vec, N: number, C: number, eps: number) {
  const out = new Float64Array(N * C)
  const mean = new Float64Array(N)
  const rstd = new Float64Array(N)
  for (let n = 0; n < N; n++) {
    let m = 0
    for (let c = 0; c < C; c++) m += inp[n * C + c]
    m /= C
    let v = 0
    for (let c = 0; c < C; c++) v += (inp[n * C + c] - m) ** 2
    v /= C
    const s = 1 / Math.sqrt(v + eps)
    for (let c = 0; c < C; c++) out[n * C + c] = (inp[n * C + c] - m) * s * w[c] + bias[c]
    mean[n] = m
    rstd[n] = s
  }
  return { out, mean, rstd }
}

function geluRef(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)))
}

interface View { a: Vec; off: number; bs: number; rs: number }
// Causal attention with key padding mask; query t at absolute position qOff + t. Rows with no
// allowed key give 0 output and 0 probabilities.
function attentionRef(q: View, k: View, v: View, mask: Int32Array | null, B: number, Tq: number, Tk: number,
  C: number, NH: number, qOff: number) {
  const hs = C / NH
  const out = new Float64Array(B * Tq * C)
  const att = new Float64Array(B * NH * Tq * Tk)
  const s = new Float64Array(Tk)
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < Tq; t++) {
        const qi = q.off + b * q.bs + t * q.rs + h * hs
        let mx = -Infinity
        for (let j = 0; j < Tk; j++) {
          const allowed = j <= qOff + t && (!mask || mask[b * Tk + j] !== 0)
          if (!allowed) { s[j] = -Infinity; continue }
          const ki = k.off + b * k.bs + j * k.rs + h * hs
          let d = 0
          for (let i = 0; i < hs; i++) d += q.a[qi + i] * k.a[ki + i]
          s[j] = d / Math.sqrt(hs)
          mx = Math.max(mx, s[j])
        }
        if (mx === -Infinity) continue  // no key: zeros
        let sum = 0
        for (let j = 0; j < Tk; j++) { s[j] = s[j] === -Infinity ? 0 : Math.exp(s[j] - mx); sum += s[j] }
        const arow = ((b * NH + h) * Tq + t) * Tk
        const orow = (b * Tq + t) * C + h * hs
        for (let j = 0; j < Tk; j++) {
          const p = s[j] / sum
          att[arow + j] = p
          if (p === 0) continue
          const vi = v.off + b * v.bs + j * v.rs + h * hs
          for (let i = 0; i < hs; i++) out[orow + i] += p * v.a[vi + i]
        }
      }
    }
  }
  return { out, att }
}
// The packed GPT-2 layout: q, k, v inside qkv (B,T,3C)
function packedViews(qkv: Vec, T: number, C: number): [View, View, View] {
  return [
    { a: qkv, off: 0, bs: T * 3 * C, rs: 3 * C },
    { a: qkv, off: C, bs: T * 3 * C, rs: 3 * C },
    { a: qkv, off: 2 * C, bs: T * 3 * C, rs: 3 * C },
  ]
}
function attentionFwd(out: Float32Array, att: Float32Array | null, q: View, k: View, v: View, mask: Int32Array | null,
  B: number, Tq: number, Tk: number, C: number, NH: number, qOff: number) {
  K.attentionForward(out, att, q.a, q.off, q.bs, q.rs, k.a, k.off, k.bs, k.rs, v.a, v.off, v.bs, v.rs,
    mask, B, Tq, Tk, C, NH, qOff)
}

function crossentropyRef(logits: Vec, targets: Int32Array, N: number, V: number): Float64Array {
  const losses = new Float64Array(N)
  for (let n = 0; n < N; n++) {
    if (targets[n] === -100) continue
    let mx = -Infinity
    for (let j = 0; j < V; j++) mx = Math.max(mx, logits[n * V + j])
    let s = 0
    for (let j = 0; j < V; j++) s += Math.exp(logits[n * V + j] - mx)
    losses[n] = Math.log(s) + mx - logits[n * V + targets[n]]
  }
  return losses
}

// ---- tests -----------------------------------------------------------------------------------

t.test('encoder: repeated ids, explicit positions, pos0, += gradients', async tt => {
  const B = 4, T = 16, C = 600, V = 7, maxT = 20  // B*T*C large enough for the parallel backward
  const ids = randInt(B * T, 0, V)  // 64 rows over 7 ids: many repeats
  const pos = randInt(B * T, 0, maxT)  // explicit, repeated positions
  const wte = randF32(V * C), wpe = randF32(maxT * C, 0.1)
  const out = new Float32Array(B * T * C)
  K.encoderForward(out, ids, pos, wte, wpe, B, T, C, 0)
  close(tt, 'encoder out (explicit pos)', out, encoderRef(ids, pos, wte, wpe, B, T, C, 0), 1e-7)
  K.encoderForward(out, ids, null, wte, wpe, B, T, C, 3)
  close(tt, 'encoder out (pos0 = 3)', out, encoderRef(ids, null, wte, wpe, B, T, C, 3), 1e-7)

  // L = <out, R>; both dwte and dwpe accumulate (+=) onto what is there.
  const R = randF32(B * T * C)
  for (const withPos of [true, false]) {
    const p = withPos ? pos : null
    const dwte0 = randF32(V * C), dwpe0 = randF32(maxT * C)
    const dwte = dwte0.slice(), dwpe = dwpe0.slice()
    K.encoderBackward(dwte, dwpe, R, ids, p, B, T, C)
    const gte = sub(dwte, dwte0), gpe = sub(dwpe, dwpe0)
    const dte = randF64(V * C), dpe = randF64(maxT * C)
    const L = (e: number) => dot(encoderRef(ids, p, axpy(wte, e, dte), axpy(wpe, e, dpe), B, T, C, 0), R)
    const an = dot(gte, dte) + dot(gpe, dpe)
    dirClose(tt, `encoder d(wte, wpe) ${withPos ? 'explicit pos' : 'pos = t'}`, an, central(L, 1e-3),
      absDot(gte, dte) + absDot(gpe, dpe))
    // each gradient alone (the other null)
    const only = new Float32Array(V * C)
    K.encoderBackward(only, null, R, ids, p, B, T, C)
    close(tt, 'encoder dwte with dwpe = null', only, gte, 1e-6)
  }
})

t.test('layernorm: forward statistics, backward by finite differences', async tt => {
  for (const [N, C, offset] of [[5, 7, 0], [37, 203, 100], [64, 520, 3]]) {
    const eps = 1e-5
    const inp = randF32(N * C, 2, offset)  // offset: a large mean tests the two-pass variance
    const w = randF32(C, 0.5, 1), b = randF32(C, 0.2)
    const out = new Float32Array(N * C), mean = new Float32Array(N), rstd = new Float32Array(N)
    K.layernormForward(out, mean, rstd, inp, w, b, N, C, eps)
    const ref = layernormRef(inp, w, b, N, C, eps)
    close(tt, `layernorm out N=${N} C=${C}`, out, ref.out, 1e-5)
    close(tt, `layernorm mean N=${N} C=${C}`, mean, ref.mean, 1e-6)
    close(tt, `layernorm rstd N=${N} C=${C}`, rstd, ref.rstd, 1e-5)
    const out2 = new Float32Array(N * C)
    K.layernormForward(out2, null, null, inp, w, b, N, C, eps)
    close(tt, 'layernorm out with mean/rstd = null', out2, out, 0)

    const R = randF32(N * C)
    const dinp0 = randF32(N * C), dw0 = randF32(C), db0 = randF32(C)
    const dinp = dinp0.slice(), dw = dw0.slice(), db = db0.slice()
    K.layernormBackward(dinp, dw, db, R, inp, w, mean, rstd, N, C)
    const gi = sub(dinp, dinp0), gw = sub(dw, dw0), gb = sub(db, db0)
    const di = randF64(N * C), dwd = randF64(C), dbd = randF64(C)
    const L = (e: number) => dot(layernormRef(axpy(inp, e, di), axpy(w, e, dwd), axpy(b, e, dbd), N, C, eps).out, R)
    dirClose(tt, `layernorm d(inp, weight, bias) N=${N} C=${C}`, dot(gi, di) + dot(gw, dwd) + dot(gb, dbd),
      central(L, 1e-4), absDot(gi, di) + absDot(gw, dwd) + absDot(gb, dbd))
    // each input alone, so errors cannot cancel between them
    const Li = (e: number) => dot(layernormRef(axpy(inp, e, di), w, b, N, C, eps).out, R)
    dirClose(tt, `layernorm dinp N=${N} C=${C}`, dot(gi, di), central(Li, 1e-4), absDot(gi, di))
    const Lw = (e: number) => dot(layernormRef(inp, axpy(w, e, dwd), b, N, C, eps).out, R)
    dirClose(tt, `layernorm dweight N=${N} C=${C}`, dot(gw, dwd), central(Lw, 1e-4), absDot(gw, dwd))
    // null gradients are skipped; the others are unchanged
    const dinpOnly = new Float32Array(N * C)
    K.layernormBackward(dinpOnly, null, null, R, inp, w, mean, rstd, N, C)
    close(tt, 'layernorm dinp with dweight/dbias = null', dinpOnly, gi, 1e-6)
  }
})

t.test('gelu: tanh approximation and its exact derivative, in place', async tt => {
  const N = 10007
  const x = randF32(N, 3)
  x[0] = 0; x[1] = 12; x[2] = -12; x[3] = 1e-20; x[4] = -5.5
  const out = new Float32Array(N)
  K.geluForward(out, x, N)
  close(tt, 'gelu out', out, Array.from(x, geluRef), 1e-6)
  const inplace = x.slice()
  K.geluForward(inplace, inplace, N)
  close(tt, 'gelu out in place (out = inp)', inplace, out, 0)

  const R = randF32(N)
  const dinp = new Float32Array(N).fill(NaN)  // "=": every element must be written
  K.geluBackward(dinp, x, R, N)
  // elementwise: dinp_i = R_i * gelu'(x_i), against a float64 central difference
  const h = 1e-5
  const fd = new Float64Array(N)
  for (let i = 0; i < N; i++) fd[i] = R[i] * (geluRef(x[i] + h) - geluRef(x[i] - h)) / (2 * h)
  close(tt, 'gelu dinp (elementwise finite difference)', dinp, fd, 1e-5)
  const d = randF64(N)
  const L = (e: number) => dot(Array.from(axpy(x, e, d), geluRef), R)
  dirClose(tt, 'gelu d(inp)', dot(dinp, d), central(L, 1e-4), absDot(dinp, d))
  const inplaceGrad = R.slice()
  K.geluBackward(inplaceGrad, x, inplaceGrad, N)
  close(tt, 'gelu dinp in place (dinp = dout)', inplaceGrad, dinp, 0)
})

t.test('bias: += forward, column-sum backward', async tt => {
  for (const [N, C] of [[3, 5], [300, 130]]) {
    const out0 = randF32(N * C), bias = randF32(C)
    const out = out0.slice()
    K.biasForward(out, bias, N, C)
    const ref = new Float64Array(N * C)
    for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) ref[n * C + c] = out0[n * C + c] + bias[c]
    close(tt, `bias out N=${N} C=${C}`, out, ref, 1e-7)

    const R = randF32(N * C)
    const db0 = randF32(C)
    const db = db0.slice()
    K.biasBackward(db, R, N, C)
    const g = sub(db, db0)
    const d = randF64(C)
    const L = (e: number) => {
      const bb = axpy(bias, e, d)
      let s = 0
      for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) s += (out0[n * C + c] + bb[c]) * R[n * C + c]
      return s
    }
    dirClose(tt, `bias dbias N=${N} C=${C}`, dot(g, d), central(L, 1e-3), absDot(g, d))
  }
})

t.test('attention: packed qkv, padding masks, fully masked rows, KV-cache queries', async tt => {
  const B = 4, T = 13, C = 40, NH = 4  // head size 10: not a multiple of the 4-wide blocks
  const qkv = randF32(B * T * 3 * C)
  const mask = new Int32Array(B * T).fill(1)
  for (let j = 0; j < 4; j++) mask[1 * T + j] = 0  // batch 1: left padding (queries 0..3 see no key)
  for (let j = T - 3; j < T; j++) mask[2 * T + j] = 0  // batch 2: right padding
  mask[3 * T + 0] = 0; mask[3 * T + 6] = 0; mask[3 * T + 7] = 0  // batch 3: holes
  const [qv, kv, vv] = packedViews(qkv, T, C)
  const out = new Float32Array(B * T * C), att = new Float32Array(B * NH * T * T)
  attentionFwd(out, att, qv, kv, vv, mask, B, T, T, C, NH, 0)
  const ref = attentionRef(qv, kv, vv, mask, B, T, T, C, NH, 0)
  close(tt, 'attention out (packed qkv, masked)', out, ref.out, 1e-5)
  close(tt, 'attention att (packed qkv, masked)', att, ref.att, 1e-5)
  let zero = true
  for (let tq = 0; tq < 4; tq++) {
    for (let c = 0; c < C; c++) zero &&= out[(1 * T + tq) * C + c] === 0
    for (let h = 0; h < NH; h++) for (let j = 0; j < T; j++) zero &&= att[((1 * NH + h) * T + tq) * T + j] === 0
  }
  tt.ok(zero, 'attention: fully masked query rows give exactly 0 output and 0 probabilities')
  const outNoAtt = new Float32Array(B * T * C)
  attentionFwd(outNoAtt, null, qv, kv, vv, mask, B, T, T, C, NH, 0)
  close(tt, 'attention out with att = null', outNoAtt, out, 0)
  const outNoMask = new Float32Array(B * T * C)
  attentionFwd(outNoMask, null, qv, kv, vv, null, B, T, T, C, NH, 0)
  close(tt, 'attention out with mask = null', outNoMask, attentionRef(qv, kv, vv, null, B, T, T, C, NH, 0).out, 1e-5)

  // Backward: L = <out, R>, directions in q, k and v separately, then all together.
  const R = randF32(B * T * C)
  const dqkv = new Float32Array(B * T * 3 * C).fill(NaN)  // "=": every element must be written
  K.attentionBackward(dqkv, R, qkv, att, mask, B, T, C, NH)
  for (const part of ['q', 'k', 'v', 'qkv']) {
    const d = randF64(B * T * 3 * C)
    for (let i = 0; i < d.length; i++) {
      const which = Math.floor((i % (3 * C)) / C)
      if (part !== 'qkv' && 'qkv'[which] !== part) d[i] = 0
    }
    const L = (e: number) => {
      const p = axpy(qkv, e, d)
      const [a, b, c] = packedViews(p, T, C)
      return dot(attentionRef(a, b, c, mask, B, T, T, C, NH, 0).out, R)
    }
    dirClose(tt, `attention d${part}`, dot(dqkv, d), central(L, 1e-4), absDot(dqkv, d))
  }
  let dqZero = true
  for (let tq = 0; tq < 4; tq++) for (let c = 0; c < C; c++) dqZero &&= dqkv[(1 * T + tq) * 3 * C + c] === 0
  tt.ok(dqZero, 'attention: dq of fully masked query rows is exactly 0')

  // KV-cache decoding: Tq new queries at q_off = past length, K/V read from (B, Tmax, C) caches.
  for (const Tq of [1, 4]) {
    const qOff = T - Tq, Tmax = T + 3
    const qNew = new Float32Array(B * Tq * 3 * C)  // the last Tq rows of qkv, as c_attn gives them
    const kCache = new Float32Array(B * Tmax * C).fill(1e30), vCache = new Float32Array(B * Tmax * C).fill(1e30)
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < T; j++) {
        for (let c = 0; c < C; c++) {
          kCache[(b * Tmax + j) * C + c] = qkv[(b * T + j) * 3 * C + C + c]
          vCache[(b * Tmax + j) * C + c] = qkv[(b * T + j) * 3 * C + 2 * C + c]
        }
      }
      for (let tq = 0; tq < Tq; tq++) {
        for (let c = 0; c < 3 * C; c++) qNew[(b * Tq + tq) * 3 * C + c] = qkv[(b * T + qOff + tq) * 3 * C + c]
      }
    }
    const q2: View = { a: qNew, off: 0, bs: Tq * 3 * C, rs: 3 * C }
    const k2: View = { a: kCache, off: 0, bs: Tmax * C, rs: C }
    const v2: View = { a: vCache, off: 0, bs: Tmax * C, rs: C }
    const out2 = new Float32Array(B * Tq * C), att2 = new Float32Array(B * NH * Tq * T)
    attentionFwd(out2, att2, q2, k2, v2, mask, B, Tq, T, C, NH, qOff)
    const lastOut = new Float32Array(B * Tq * C), lastAtt = new Float32Array(B * NH * Tq * T)
    for (let b = 0; b < B; b++) {
      for (let tq = 0; tq < Tq; tq++) {
        lastOut.set(out.subarray((b * T + qOff + tq) * C, (b * T + qOff + tq + 1) * C), (b * Tq + tq) * C)
        for (let h = 0; h < NH; h++) {
          const src = ((b * NH + h) * T + qOff + tq) * T
          lastAtt.set(att.subarray(src, src + T), ((b * NH + h) * Tq + tq) * T)
        }
      }
    }
    close(tt, `attention out, Tq=${Tq} q_off=${qOff} vs the full computation's last rows`, out2, lastOut, 1e-6)
    close(tt, `attention att, Tq=${Tq} q_off=${qOff} vs the full computation's last rows`, att2, lastAtt, 1e-6)
    close(tt, `attention out, Tq=${Tq} q_off=${qOff} vs reference`, out2,
      attentionRef(q2, k2, v2, mask, B, Tq, T, C, NH, qOff).out, 1e-5)
  }

  // A batch whose keys are all masked gives all-zero rows.
  const allMasked = new Int32Array(B * T).fill(1)
  allMasked.fill(0, 2 * T, 3 * T)
  attentionFwd(out, att, qv, kv, vv, allMasked, B, T, T, C, NH, 0)
  close(tt, 'attention out with one batch fully masked', out, attentionRef(qv, kv, vv, allMasked, B, T, T, C, NH, 0).out, 1e-5)
  tt.equal(maxAbs(out.subarray(2 * T * C, 3 * T * C)), 0, 'attention: the fully masked batch has 0 output')
})

t.test('attention: long sequence, few heads (query chunks across threads)', async tt => {
  const B = 1, T = 160, C = 64, NH = 2
  const qkv = randF32(B * T * 3 * C)
  const mask = new Int32Array(B * T).fill(1)
  mask.fill(0, 0, 5)
  const [qv, kv, vv] = packedViews(qkv, T, C)
  const out = new Float32Array(B * T * C), att = new Float32Array(B * NH * T * T)
  attentionFwd(out, att, qv, kv, vv, mask, B, T, T, C, NH, 0)
  const ref = attentionRef(qv, kv, vv, mask, B, T, T, C, NH, 0)
  close(tt, 'attention out T=160', out, ref.out, 1e-5)
  close(tt, 'attention att T=160', att, ref.att, 1e-5)
  const R = randF32(B * T * C)
  const dqkv = new Float32Array(B * T * 3 * C)
  K.attentionBackward(dqkv, R, qkv, att, mask, B, T, C, NH)
  const d = randF64(B * T * 3 * C)
  const L = (e: number) => {
    const [a, b, c] = packedViews(axpy(qkv, e, d), T, C)
    return dot(attentionRef(a, b, c, mask, B, T, T, C, NH, 0).out, R)
  }
  dirClose(tt, 'attention dqkv T=160', dot(dqkv, d), central(L, 1e-4), absDot(dqkv, d))

  // GPT-2 small shape, timed (printed only: the machines running tests vary)
  {
    const B2 = 8, T2 = 128, C2 = 768, NH2 = 12
    const big = randF32(B2 * T2 * 3 * C2)
    const o = new Float32Array(B2 * T2 * C2), a = new Float32Array(B2 * NH2 * T2 * T2)
    const [q2, k2, v2] = packedViews(big, T2, C2)
    attentionFwd(o, a, q2, k2, v2, null, B2, T2, T2, C2, NH2, 0)
    let t0 = process.hrtime.bigint()
    attentionFwd(o, a, q2, k2, v2, null, B2, T2, T2, C2, NH2, 0)
    const fwdMs = Number(process.hrtime.bigint() - t0) / 1e6
    const dq = new Float32Array(B2 * T2 * 3 * C2)
    t0 = process.hrtime.bigint()
    K.attentionBackward(dq, o, big, a, null, B2, T2, C2, NH2)
    const bwdMs = Number(process.hrtime.bigint() - t0) / 1e6
    tt.comment(`attention B=8 T=128 C=768 NH=12: forward ${fwdMs.toFixed(1)} ms, backward ${bwdMs.toFixed(1)} ms`)
  }
})

t.test('crossentropy: stable log-softmax, ignored targets, in-place backward', async tt => {
  const N = 9, V = 1031  // V > one 1024 block, odd tail
  const logits = randF32(N * V, 4)
  for (let j = 0; j < V; j++) logits[2 * V + j] += 1000  // a row far from 0: needs the max shift
  for (let j = 0; j < V; j++) logits[5 * V + j] *= 20  // a peaked row
  const targets = randInt(N, 0, V)
  targets[1] = -100; targets[6] = -100
  targets[3] = V - 1
  const losses = new Float32Array(N).fill(NaN)
  const count = K.crossentropyForward(losses, logits, targets, N, V)
  tt.equal(count, N - 2, 'crossentropy counts the non-ignored rows')
  close(tt, 'crossentropy losses', losses, crossentropyRef(logits, targets, N, V), 1e-6, 1e-6)
  tt.ok(losses[1] === 0 && losses[6] === 0, 'crossentropy: ignored rows have loss 0')

  const scale = 1 / count
  const dlogits = new Float32Array(N * V).fill(NaN)
  K.crossentropyBackward(dlogits, logits, targets, scale, N, V)
  // reference: (softmax - onehot) * scale
  const ref = new Float64Array(N * V)
  for (let n = 0; n < N; n++) {
    if (targets[n] === -100) continue
    let mx = -Infinity
    for (let j = 0; j < V; j++) mx = Math.max(mx, logits[n * V + j])
    let s = 0
    for (let j = 0; j < V; j++) s += Math.exp(logits[n * V + j] - mx)
    for (let j = 0; j < V; j++) ref[n * V + j] = (Math.exp(logits[n * V + j] - mx) / s - (j === targets[n] ? 1 : 0)) * scale
  }
  close(tt, 'crossentropy dlogits', dlogits, ref, 1e-5, 1e-9)
  const d = randF64(N * V)
  const L = (e: number) => {
    const ls = crossentropyRef(axpy(logits, e, d), targets, N, V)
    let s = 0
    for (let n = 0; n < N; n++) s += ls[n]
    return s * scale
  }
  dirClose(tt, 'crossentropy d(logits)', dot(dlogits, d), central(L, 1e-4), absDot(dlogits, d))
  const inplace = logits.slice()
  K.crossentropyBackward(inplace, inplace, targets, scale, N, V)
  close(tt, 'crossentropy dlogits in place (dlogits = logits)', inplace, dlogits, 0)

  // GPT-2 vocabulary width
  const N2 = 3, V2 = 50257
  const big = randF32(N2 * V2, 3)
  const tg = new Int32Array([50256, 17, -100])
  const l2 = new Float32Array(N2)
  tt.equal(K.crossentropyForward(l2, big, tg, N2, V2), 2, 'crossentropy count, V=50257')
  close(tt, 'crossentropy losses V=50257', l2, crossentropyRef(big, tg, N2, V2), 1e-6, 1e-6)
})

t.test('adamw: several steps against the PyTorch formulas, with and without weight decay', async tt => {
  const n = 1001
  for (const wd of [0, 0.01]) {
    const lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8
    // the kernel takes float32 hyper-parameters; the reference uses the same values
    const [flr, fb1, fb2, feps, fwd] = [lr, b1, b2, eps, wd].map(Math.fround)
    const p = randF32(n), m = new Float32Array(n), v = new Float32Array(n)
    const pr = Float64Array.from(p), mr = new Float64Array(n), vr = new Float64Array(n)
    for (let step = 1; step <= 5; step++) {
      const g = randF32(n, step)
      g[0] = 0
      K.adamwUpdate(p, g, m, v, n, lr, b1, b2, eps, wd, step)
      const bc1 = 1 - fb1 ** step, bc2 = 1 - fb2 ** step
      for (let i = 0; i < n; i++) {
        mr[i] = fb1 * mr[i] + (1 - fb1) * g[i]
        vr[i] = fb2 * vr[i] + (1 - fb2) * g[i] * g[i]
        const mhat = mr[i] / bc1, vhat = vr[i] / bc2
        pr[i] = pr[i] * (1 - flr * fwd) - flr * mhat / (Math.sqrt(vhat) + feps)
      }
    }
    close(tt, `adamw param after 5 steps, wd=${wd}`, p, pr, 1e-6)
    close(tt, `adamw m after 5 steps, wd=${wd}`, m, mr, 1e-6)
    close(tt, `adamw v after 5 steps, wd=${wd}`, v, vr, 1e-6)
  }
})

t.test('argument checks throw ERR_INVALID_ARG instead of reading out of bounds', async tt => {
  const code = { code: 'ERR_INVALID_ARG' }
  const f = (n: number) => new Float32Array(n)
  tt.throws(() => K.layernormForward(f(5), null, null, f(6), f(3), f(3), 2, 3, 1e-5), code, 'layernorm: short out')
  tt.throws(() => K.geluForward(f(4), null, 4), code, 'gelu: null input')
  tt.throws(() => K.encoderForward(f(6), new Int32Array([0, 5]), null, f(6), f(6), 1, 2, 3, 0), code,
    'encoder: id past the vocabulary')
  tt.throws(() => K.encoderForward(f(6), new Int32Array([0, 1]), null, f(6), f(6), 1, 2, 3, 1), code,
    'encoder: position past wpe')
  tt.throws(() => K.crossentropyForward(f(2), f(10), new Int32Array([0, 5]), 2, 5), code,
    'crossentropy: target past V')
  const qkv = f(2 * 3 * 8)
  tt.throws(() => K.attentionForward(f(16), null, qkv, 17, 24, 24, qkv, 8, 24, 24, qkv, 16, 24, 24, null, 1, 2, 2, 8, 2, 0),
    code, 'attention: q view past the end')
  tt.throws(() => K.attentionForward(f(16), null, qkv, 0, 24, 24, qkv, 8, 24, 24, qkv, 16, 24, 24, null, 1, 2, 2, 8, 3, 0),
    code, 'attention: C not a multiple of NH')
  tt.throws(() => K.attentionBackward(f(48), f(16), qkv, f(7), null, 1, 2, 8, 2), code, 'attention: short att')
  tt.throws(() => K.adamwUpdate(f(3), f(3), f(2), f(3), 3, 1e-3, 0.9, 0.999, 1e-8, 0, 1), code, 'adamw: short m')
  tt.throws(() => K.adamwUpdate(f(3), f(3), f(3), f(3), 3, 1e-3, 0.9, 0.999, 1e-8, 0, 0), code, 'adamw: step 0')
  tt.throws(() => K.gemm(false, false, 2, 2, 3, 1, f(6), 2, f(6), 2, 0, f(4), 2), code, 'gemm: lda < K')
  tt.throws(() => K.gemm(false, true, 2, 2, 3, 1, f(6), 3, f(5), 3, 0, f(4), 2), code, 'gemm: short B')
  tt.throws(() => K.biasForward(f(6), new Int32Array(3), 2, 3), code, 'bias: wrong array type')
})

// gemm last: gemm.cc comes from another change and is the kernel most likely to be missing.
t.test('gemm: four transpose combinations, odd sizes, strides, alpha/beta, both backends', async tt => {
  const backend = K.gemmBackend()
  tt.ok(['avx512f', 'avx2-fma', 'portable'].includes(backend), `gemm backend is ${backend}`)
  // C = alpha op(A) op(B) + beta C in float64; scale = the magnitude bound for float32 rounding
  function gemmRef(ta: boolean, tb: boolean, M: number, N: number, Kd: number, alpha: number, A: Vec, lda: number,
    B: Vec, ldb: number, beta: number, C: Vec, ldc: number) {
    const out = Float64Array.from(C)
    const bound = new Float64Array(C.length)
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0, sa = 0
        for (let k = 0; k < Kd; k++) {
          const a = ta ? A[k * lda + i] : A[i * lda + k]
          const b = tb ? B[j * ldb + k] : B[k * ldb + j]
          s += a * b
          sa += Math.abs(a * b)
        }
        const c = beta === 0 ? 0 : beta * C[i * ldc + j]
        out[i * ldc + j] = alpha * s + c
        bound[i * ldc + j] = Math.abs(alpha) * sa + Math.abs(c)
      }
    }
    return { out, bound }
  }
  const cases: [number, number, number][] = [[1, 1, 1], [37, 29, 53], [5, 70, 3], [131, 67, 300], [64, 64, 64], [3, 2, 0]]
  for (const portable of [false, true]) {
    const prev = K.gemmForcePortable(portable)
    tt.equal(typeof prev, 'boolean', 'gemmForcePortable returns the previous setting')
    for (const [M, N, Kd] of cases) {
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
        for (const [alpha, beta] of [[1, 0], [0.7, -0.3]]) {
          const arows = ta ? Kd : M, acols = ta ? M : Kd, brows = tb ? N : Kd, bcols = tb ? Kd : N
          const lda = acols + 3, ldb = bcols + 1, ldc = N + 2
          const A = randF32(Math.max(arows * lda, 1)), B = randF32(Math.max(brows * ldb, 1))
          const C0 = randF32(M * ldc)
          if (beta === 0) C0.fill(NaN)  // beta = 0: C is not read
          for (let i = 0; i < M; i++) C0.fill(777, i * ldc + N, (i + 1) * ldc)  // padding must survive
          const C = C0.slice()
          K.gemm(ta, tb, M, N, Kd, alpha, A, lda, B, ldb, beta, C, ldc)
          const { out, bound } = gemmRef(ta, tb, M, N, Kd, alpha, A, lda, B, ldb, beta, C0, ldc)
          let worst = 0, maxDiff = 0, nan = false
          for (let i = 0; i < M; i++) {
            for (let j = 0; j < ldc; j++) {
              const idx = i * ldc + j
              if (j >= N) { if (C[idx] !== 777) nan = true; continue }
              const e = Math.abs(C[idx] - out[idx])
              if (Number.isNaN(e)) nan = true
              maxDiff = Math.max(maxDiff, e)
              worst = Math.max(worst, e / (1e-6 * Math.max(Kd, 1) * bound[idx] + 1e-30))
            }
          }
          tt.ok(!nan && worst <= 1,
            `gemm C ${portable ? 'portable' : backend} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} M=${M} N=${N} K=${Kd} ` +
            `alpha=${alpha} beta=${beta}: max |diff| = ${fmt(maxDiff)} (${(worst * 100).toFixed(1)}% of the bound)`)
        }
      }
    }
    K.gemmForcePortable(prev)
  }
})

// The AVX2 clones of the element-wise kernels (vec_math.h: compiled for AVX2 without FMA) must give
// bit for bit what the baseline (SSE2) code gives: attention forward (with and without the mask and
// probabilities, a KV-cache offset, few and many queries) and backward, and GELU.
t.test('AVX2 clones are bit-identical to the baseline kernels', async (tt) => {
  const sameBits = (name: string, a: Float32Array, b: Float32Array) => {
    const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length)
    let diff = 0, first = -1, maxd = 0
    for (let i = 0; i < ua.length; i++) {
      if (ua[i] !== ub[i]) { diff++; if (first < 0) first = i; maxd = Math.max(maxd, Math.abs(a[i] - b[i])) }
    }
    tt.equal(diff, 0, `${name}: ${diff} of ${ua.length} values differ${diff ? ` (first at ${first}, max |diff| ${fmt(maxd)})` : ''}`)
  }
  tt.comment(`AVX2 clones in use on this CPU: ${K.avx2Clones()}`)
  const run = (baseline: boolean, f: () => Float32Array[]): Float32Array[] => {
    const prev = K.forceBaselineClones(baseline)
    try { return f() } finally { K.forceBaselineClones(prev) }
  }
  for (const [B, T, C, NH, qOff, Tq] of [[2, 37, 48, 4, 0, 37], [1, 130, 64, 2, 0, 130], [3, 20, 32, 2, 13, 7], [1, 9, 16, 2, 8, 1]]) {
    const Tk = qOff + Tq
    const qkv = randF32(B * Tk * 3 * C)
    const mask = new Int32Array(B * Tk).fill(1)
    for (let j = 0; j < Math.min(3, Tk); j++) mask[j] = 0
    const [qv, kv, vv] = packedViews(qkv, Tk, C)
    const q = { ...qv, off: qv.off + qOff * 3 * C }
    const outs = [true, false].map((baseline) => run(baseline, () => {
      const out = new Float32Array(B * Tq * C), att = new Float32Array(B * NH * Tq * Tk), out2 = new Float32Array(B * Tq * C)
      attentionFwd(out, att, q, kv, vv, mask, B, Tq, Tk, C, NH, qOff)
      attentionFwd(out2, null, q, kv, vv, null, B, Tq, Tk, C, NH, qOff)
      const r = [out, att, out2]
      if (qOff === 0) {
        const dqkv = new Float32Array(B * Tk * 3 * C)
        K.attentionBackward(dqkv, randF32Seeded(B * Tq * C, 7), qkv, att, mask, B, Tk, C, NH)
        r.push(dqkv)
      }
      return r
    }))
    const names = ['attention out', 'attention att', 'attention out (no mask, no att)', 'attention dqkv']
    outs[0].forEach((a, i) => sameBits(`${names[i]} B=${B} Tq=${Tq} Tk=${Tk} C=${C} NH=${NH}`, outs[1][i], a))
  }
  const x = randF32(10007, 3)
  const g = [true, false].map((baseline) => run(baseline, () => {
    const y = new Float32Array(x.length), d = new Float32Array(x.length)
    K.geluForward(y, x, x.length)
    K.geluBackward(d, x, randF32Seeded(x.length, 11), x.length)
    return [y, d]
  }))
  sameBits('gelu forward', g[1][0], g[0][0])
  sameBits('gelu backward', g[1][1], g[0][1])
})

// The same random numbers every call (for inputs both runs of a comparison must share).
function randF32Seeded(n: number, s: number): Float32Array {
  const keep = seed
  seed = s
  const a = randF32(n)
  seed = keep
  return a
}
