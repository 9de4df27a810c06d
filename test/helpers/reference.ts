/**
 * An independent, deliberately plain float64 GPT-2 (Hugging Face GPT2LMHeadModel, eval mode) for
 * tests: straight loops, no shared code with the native engine.
 */
import { mulberry32 } from '../../lib/core/random'

export interface RefConfig {
  nLayer: number; nHead: number; nEmbd: number; vocabSize: number; nPositions: number; nInner?: number; eps?: number
}
export type RefParams = Map<string, Float64Array>

const GELU_C = Math.sqrt(2 / Math.PI)
const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x * x * x)))

function layerNorm(x: Float64Array, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const C = w.length, out = new Float64Array(x.length)
  for (let r = 0; r < x.length / C; r++) {
    let mean = 0
    for (let i = 0; i < C; i++) mean += x[r * C + i]
    mean /= C
    let v = 0
    for (let i = 0; i < C; i++) v += (x[r * C + i] - mean) ** 2
    v /= C
    const rs = 1 / Math.sqrt(v + eps)
    for (let i = 0; i < C; i++) out[r * C + i] = (x[r * C + i] - mean) * rs * w[i] + b[i]
  }
  return out
}

function conv1d(x: Float64Array, rows: number, W: Float64Array, b: Float64Array | null, din: number, dout: number): Float64Array {
  const y = new Float64Array(rows * dout)
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < dout; j++) {
      let s = b ? b[j] : 0
      for (let i = 0; i < din; i++) s += x[r * din + i] * W[i * dout + j]
      y[r * dout + j] = s
    }
  }
  return y
}

/** logits (B*T*V) and, with labels, the mean shifted cross-entropy. */
export function referenceForward(p: RefParams, cfg: RefConfig, ids: number[][], mask?: number[][], labels?: number[][]):
  { logits: Float64Array; loss?: number } {
  const B = ids.length, T = ids[0].length, C = cfg.nEmbd, V = cfg.vocabSize, NH = cfg.nHead, hs = C / NH
  const I = cfg.nInner ?? 4 * C, eps = cfg.eps ?? 1e-5
  const get = (n: string) => { const v = p.get(n); if (!v) throw new Error(`reference: missing ${n}`); return v }
  const wte = get('transformer.wte.weight'), wpe = get('transformer.wpe.weight')
  const logits = new Float64Array(B * T * V)
  let lossSum = 0, count = 0
  for (let b = 0; b < B; b++) {
    const m = mask ? mask[b] : new Array(T).fill(1)
    let x = new Float64Array(T * C)
    let c = 0
    for (let t = 0; t < T; t++) {
      c += m[t] ? 1 : 0
      const pos = Math.max(0, c - 1)
      for (let i = 0; i < C; i++) x[t * C + i] = wte[ids[b][t] * C + i] + wpe[pos * C + i]
    }
    for (let l = 0; l < cfg.nLayer; l++) {
      const pre = `transformer.h.${l}.`
      const h1 = layerNorm(x, get(pre + 'ln_1.weight'), get(pre + 'ln_1.bias'), eps)
      const qkv = conv1d(h1, T, get(pre + 'attn.c_attn.weight'), get(pre + 'attn.c_attn.bias'), C, 3 * C)
      const y = new Float64Array(T * C)
      for (let h = 0; h < NH; h++) {
        for (let t = 0; t < T; t++) {
          const sc: number[] = []
          let mx = -Infinity
          for (let j = 0; j <= t; j++) {
            if (!m[j]) { sc.push(-Infinity); continue }
            let s = 0
            for (let i = 0; i < hs; i++) s += qkv[t * 3 * C + h * hs + i] * qkv[j * 3 * C + C + h * hs + i]
            s /= Math.sqrt(hs)
            sc.push(s)
            mx = Math.max(mx, s)
          }
          if (mx === -Infinity) continue // no allowed key: output 0
          let z = 0
          const pr = sc.map((s) => { const e = s === -Infinity ? 0 : Math.exp(s - mx); z += e; return e })
          for (let j = 0; j <= t; j++) {
            const w = pr[j] / z
            for (let i = 0; i < hs; i++) y[t * C + h * hs + i] += w * qkv[j * 3 * C + 2 * C + h * hs + i]
          }
        }
      }
      const a = conv1d(y, T, get(pre + 'attn.c_proj.weight'), get(pre + 'attn.c_proj.bias'), C, C)
      for (let i = 0; i < T * C; i++) x[i] += a[i]
      const h2 = layerNorm(x, get(pre + 'ln_2.weight'), get(pre + 'ln_2.bias'), eps)
      const f = conv1d(h2, T, get(pre + 'mlp.c_fc.weight'), get(pre + 'mlp.c_fc.bias'), C, I).map(gelu)
      const o = conv1d(f, T, get(pre + 'mlp.c_proj.weight'), get(pre + 'mlp.c_proj.bias'), I, C)
      const nx = new Float64Array(T * C)
      for (let i = 0; i < T * C; i++) nx[i] = x[i] + o[i]
      x = nx
    }
    const hf = layerNorm(x, get('transformer.ln_f.weight'), get('transformer.ln_f.bias'), eps)
    for (let t = 0; t < T; t++) {
      for (let v = 0; v < V; v++) {
        let s = 0
        for (let i = 0; i < C; i++) s += hf[t * C + i] * wte[v * C + i]
        logits[(b * T + t) * V + v] = s
      }
      if (labels && t + 1 < T && labels[b][t + 1] !== -100) {
        const row = logits.subarray((b * T + t) * V, (b * T + t + 1) * V)
        let mx = -Infinity
        for (const z of row) mx = Math.max(mx, z)
        let se = 0
        for (const z of row) se += Math.exp(z - mx)
        lossSum += -(row[labels[b][t + 1]] - mx - Math.log(se))
        count++
      }
    }
  }
  return labels ? { logits, loss: lossSum / count } : { logits }
}

/** Largest absolute difference between two arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]))
  return m
}

/** Deterministic PRNG for test data: the library's mulberry32 (floats in [0, 1)). */
export const rng = mulberry32
export function randn(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r())
}
