// GPT-2 engine: forward against an independent float64 reference, loss, whole-model gradients by
// directional finite differences, capture, padding, batching, concurrency, generation.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GPT2LMHeadModel } from '../lib/index'
import { toHFConfig } from '../lib/model/config'
import { native } from '../lib/core/native'
import { maxAbs, maxAbsDiff, randn, referenceForward, RefParams, rng } from './helpers/reference'

const cfg = { nLayer: 2, nHead: 2, nEmbd: 16, vocabSize: 61, nPositions: 24 }
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-gpt2-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

function params64(m: GPT2LMHeadModel): RefParams {
  const p: RefParams = new Map()
  for (const { name } of m.parameters()) p.set(name, Float64Array.from(m.parameter(name).data))
  return p
}

// Writes a model directory with the given float32 parameters.
async function writeDir(dir: string, params: Map<string, Float32Array>, shapes: Map<string, number[]>, rename = (n: string) => n) {
  fs.mkdirSync(dir, { recursive: true })
  const tensors = [...params].map(([name, data]) => ({ name: rename(name), shape: shapes.get(name)!, data }))
  await native().safetensorsWrite(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' })
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(toHFConfig(cfg)))
}

function randomIds(r: () => number, B: number, T: number): number[][] {
  return Array.from({ length: B }, () => Array.from({ length: T }, () => Math.floor(r() * cfg.vocabSize)))
}

t.test('forward equals the float64 reference (logits and loss)', async (t) => {
  // Non-trivial LayerNorm and bias values: perturb the HF init so every parameter matters.
  const base = await GPT2LMHeadModel.random(cfg, 7)
  const r = rng(1)
  const shapes = new Map(base.parameters().map((p) => [p.name, p.shape]))
  const ps = new Map<string, Float32Array>()
  for (const { name } of base.parameters()) {
    const d = base.parameter(name).data
    ps.set(name, d.map((v) => v + 0.1 * randn(r)))
  }
  await writeDir(path.join(tmp, 'perturbed'), ps, shapes)
  const m = await GPT2LMHeadModel.fromPretrained(path.join(tmp, 'perturbed'))
  const ids = randomIds(r, 3, 11)
  const labels = ids.map((row) => row.map((v, i) => (i % 4 === 2 ? -100 : v)))
  const out = await m.forward({ inputIds: ids, labels })
  const ref = referenceForward(params64(m), cfg, ids, undefined, labels)
  const d = maxAbsDiff(out.logits.data, ref.logits)
  t.comment(`logits [3,11,${cfg.vocabSize}]: max |native - reference| = ${d.toExponential(2)} (max |logit| ${maxAbs(ref.logits).toFixed(2)})`)
  t.same(out.logits.shape, [3, 11, cfg.vocabSize])
  t.ok(d < 2e-5 * Math.max(1, maxAbs(ref.logits)), 'logits within float32 rounding')
  t.comment(`loss: native ${out.loss} reference ${ref.loss}`)
  t.ok(Math.abs(out.loss! - ref.loss!) < 1e-5 * Math.max(1, ref.loss!), 'loss within float32 rounding')
  const last = await m.forward({ inputIds: ids }, { lastOnly: true })
  t.same(last.logits.shape, [3, cfg.vocabSize])
  for (let b = 0; b < 3; b++) {
    const full = out.logits.data.subarray((b * 11 + 10) * cfg.vocabSize, (b * 11 + 11) * cfg.vocabSize)
    // Different GEMM shapes (M = B vs M = B*T) may round differently: float32 tolerance.
    const dl = maxAbsDiff(last.logits.data.subarray(b * cfg.vocabSize, (b + 1) * cfg.vocabSize), full)
    t.ok(dl < 1e-5 * Math.max(1, maxAbs(full)), `lastOnly row ${b} equals the full logits' last position (max diff ${dl.toExponential(2)})`)
  }
  // Padded batch against the reference too.
  const mask = [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], new Array(11).fill(1)]
  const pm = await m.forward({ inputIds: ids, attentionMask: mask })
  const pref = referenceForward(params64(m), cfg, ids, mask)
  let dm = 0
  for (let b = 0; b < 3; b++) for (let s = 0; s < 11; s++) if (mask[b][s]) {
    const o = (b * 11 + s) * cfg.vocabSize
    dm = Math.max(dm, maxAbsDiff(pm.logits.data.subarray(o, o + cfg.vocabSize), pref.logits.subarray(o, o + cfg.vocabSize)))
  }
  t.comment(`padded logits: max |native - reference| over real tokens = ${dm.toExponential(2)}`)
  t.ok(dm < 2e-5 * Math.max(1, maxAbs(pref.logits)), 'padded logits within float32 rounding')
})

t.test('every parameter gradient matches a directional finite difference', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 11)
  const r = rng(2)
  const ids = randomIds(r, 2, 9)
  const mask = [[1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1, 1, 1]]
  const labels = ids.map((row, b) => row.map((v, i) => (mask[b][i] ? v : -100)))
  const g = await m.lossAndGrad({ inputIds: ids, attentionMask: mask, labels })
  const p = params64(m)
  const ref0 = referenceForward(p, cfg, ids, mask, labels)
  t.ok(Math.abs(g.loss - ref0.loss!) < 1e-5 * ref0.loss!, `loss ${g.loss} vs reference ${ref0.loss}`)
  // Per parameter: random direction d, <grad, d> against the central difference of the float64 loss.
  const eps = 1e-4
  let worst = 0
  for (const { name } of m.parameters()) {
    const w = p.get(name)!
    const d = new Float64Array(w.length).map(() => randn(r))
    let dot = 0
    for (let i = 0; i < w.length; i++) dot += g.grads[name].data[i] * d[i]
    const plus = new Map(p), minus = new Map(p)
    plus.set(name, w.map((v, i) => v + eps * d[i]))
    minus.set(name, w.map((v, i) => v - eps * d[i]))
    const fd = (referenceForward(plus, cfg, ids, mask, labels).loss! - referenceForward(minus, cfg, ids, mask, labels).loss!) / (2 * eps)
    const rel = Math.abs(dot - fd) / Math.max(Math.abs(fd), 1e-3)
    worst = Math.max(worst, rel)
    t.ok(rel < 2e-3, `${name}: <grad,d> = ${dot.toExponential(5)}, central difference = ${fd.toExponential(5)}, rel err ${rel.toExponential(2)}`)
  }
  t.comment(`largest relative error over ${m.parameters().length} parameters: ${worst.toExponential(2)}`)
})

t.test('whole-model gradient against float32 finite differences of the native loss', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 3)
  const r = rng(3)
  const ids = randomIds(r, 2, 8)
  const g = await m.lossAndGrad({ inputIds: ids, labels: ids })
  const shapes = new Map(m.parameters().map((p) => [p.name, p.shape]))
  const dirs = new Map<string, Float32Array>()
  let dot = 0, norm = 0
  for (const { name } of m.parameters()) {
    const d = new Float32Array(g.grads[name].data.length).map(() => randn(r))
    dirs.set(name, d)
    for (let i = 0; i < d.length; i++) { dot += g.grads[name].data[i] * d[i]; norm += d[i] * d[i] }
  }
  // Unit-norm direction: the step is small against the loss curvature, large against float32 noise.
  const scale = 1 / Math.sqrt(norm)
  dot *= scale
  for (const d of dirs.values()) for (let i = 0; i < d.length; i++) d[i] *= scale
  const eps = 1e-2
  const losses: number[] = []
  for (const sgn of [1, -1]) {
    const ps = new Map<string, Float32Array>()
    for (const { name } of m.parameters()) {
      const w = m.parameter(name).data, d = dirs.get(name)!
      ps.set(name, w.map((v, i) => v + sgn * eps * d[i]))
    }
    const dir = path.join(tmp, `fd${sgn}`)
    await writeDir(dir, ps, shapes)
    const mm = await GPT2LMHeadModel.fromPretrained(dir)
    losses.push((await mm.forward({ inputIds: ids, labels: ids })).loss!)
    mm.dispose()
  }
  const fd = (losses[0] - losses[1]) / (2 * eps)
  const rel = Math.abs(fd - dot) / Math.abs(fd)
  t.comment(`all ${m.parameters().length} parameters, unit direction: <grad,d> = ${dot.toExponential(5)}, float32 central difference = ${fd.toExponential(5)}, rel err ${rel.toExponential(2)}`)
  t.ok(rel < 1e-2, 'directional derivative matches (float32 loss differences)')
})

t.test('requested parameters only, backward stops early, captures give X and D', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 5)
  const ids = randomIds(rng(4), 2, 7)
  const full = await m.lossAndGrad({ inputIds: ids, labels: ids })
  const names = ['transformer.h.1.mlp.c_fc.weight', 'h.1.mlp.c_proj.weight', 'transformer.h.1.attn.c_attn.weight', 'transformer.h.1.attn.c_proj.weight']
  const part = await m.lossAndGrad({ inputIds: ids, labels: ids }, { params: names, capture: names })
  t.equal(part.loss, full.loss, 'same loss')
  for (const n of names) {
    const c = n.startsWith('transformer.') ? n : `transformer.${n}`
    const d = maxAbsDiff(part.grads[n].data, full.grads[c].data)
    t.ok(d <= 1e-6 * Math.max(1, maxAbs(full.grads[c].data)), `${n}: partial backward equals full backward (max diff ${d.toExponential(2)})`)
    // G = Xᵀ D from the captured rows.
    const { x, d: dy } = part.captures[n]
    const [rows, din] = x.shape, dout = dy.shape[1]
    const G = new Float64Array(din * dout)
    for (let rr = 0; rr < rows; rr++) for (let i = 0; i < din; i++) for (let j = 0; j < dout; j++) G[i * dout + j] += x.data[rr * din + i] * dy.data[rr * dout + j]
    const dg = maxAbsDiff(G, part.grads[n].data)
    t.ok(dg < 1e-5 * Math.max(1e-3, maxAbs(G)), `${n}: Xᵀ·D equals the weight gradient (max diff ${dg.toExponential(2)})`)
  }
  t.same(Object.keys(part.grads).filter((k) => k.startsWith('transformer.')).sort(), names.map((n) => n.startsWith('transformer.') ? n : `transformer.${n}`).sort(), 'only the requested gradients')
  // lm_head is tied to wte.
  const lm = await m.lossAndGrad({ inputIds: ids, labels: ids }, { params: ['lm_head.weight'] })
  t.equal(maxAbsDiff(lm.grads['lm_head.weight'].data, full.grads['transformer.wte.weight'].data), 0, 'lm_head.weight gradient is the tied wte gradient')
})

t.test('the LM head on label rows only equals the LM head on every row', async (t) => {
  // Cross-entropy without returned logits runs the LM head (forward and backward) on the positions
  // that predict a label only; wantLogits runs it on every row. Same loss, gradients and captures.
  const m = await GPT2LMHeadModel.random(cfg, 13)
  const B = 3, T = 10
  const idsRows = randomIds(rng(6), B, T)
  const ids = Int32Array.from(idsRows.flat())
  const mask = Int32Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
  // Row 0: the last 3 tokens are the target; row 1: two targets; row 2: one.
  const lab = [[7, 8, 9], [4, 9], [6]]
  const labels = Int32Array.from({ length: B * T }, (_, i) => (lab[Math.floor(i / T)].includes(i % T) ? ids[i] : -100))
  const capture = ['transformer.h.0.mlp.c_fc.weight', 'transformer.h.1.attn.c_attn.weight']
  const all = await m.native.lossAndGrad(ids, B, T, mask, labels, null, capture, true, null)
  const rows = await m.native.lossAndGrad(ids, B, T, mask, labels, null, capture, false, null)
  t.equal(rows.nTargets, all.nTargets, `${all.nTargets} targets both ways`)
  t.ok(Math.abs(rows.loss - all.loss) <= 1e-6 * Math.abs(all.loss), `loss: label rows ${rows.loss}, every row ${all.loss}`)
  let worst = 0
  for (const [name, g] of Object.entries(all.grads)) {
    const scale = Math.max(1e-6, maxAbs(g))
    const d = maxAbsDiff(rows.grads[name], g) / scale
    worst = Math.max(worst, d)
    t.ok(d <= 2e-5, `${name}: largest difference ${d.toExponential(2)} of its largest entry`)
  }
  for (const name of capture) {
    for (const k of ['x', 'd'] as const) {
      const d = maxAbsDiff(rows.captures[name][k], all.captures[name][k]) / Math.max(1e-9, maxAbs(all.captures[name][k]))
      t.ok(d <= 2e-5, `capture ${name}.${k}: largest difference ${d.toExponential(2)} of its largest entry`)
    }
  }
  t.comment(`largest gradient difference over ${Object.keys(all.grads).length} parameters: ${worst.toExponential(2)} (relative to each one's largest entry)`)
})

t.test('padding does not change real tokens; a batch equals its rows; concurrent calls agree', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 9)
  const r = rng(5)
  const rows = [randomIds(r, 1, 5)[0], randomIds(r, 1, 8)[0], randomIds(r, 1, 3)[0]]
  const V = cfg.vocabSize
  const alone = await Promise.all(rows.map((row) => m.forward({ inputIds: [row] })))
  for (const side of ['left', 'right'] as const) {
    const T = 8
    const ids = rows.map((row) => side === 'left' ? [...new Array(T - row.length).fill(0), ...row] : [...row, ...new Array(T - row.length).fill(0)])
    const mask = rows.map((row) => side === 'left' ? [...new Array(T - row.length).fill(0), ...row.map(() => 1)] : [...row.map(() => 1), ...new Array(T - row.length).fill(0)])
    const out = await m.forward({ inputIds: ids, attentionMask: mask })
    let worst = 0
    rows.forEach((row, b) => {
      const off = side === 'left' ? T - row.length : 0
      for (let s = 0; s < row.length; s++) {
        const a = alone[b].logits.data.subarray(s * V, (s + 1) * V)
        const p = out.logits.data.subarray((b * T + off + s) * V, (b * T + off + s + 1) * V)
        worst = Math.max(worst, maxAbsDiff(a, p))
      }
    })
    t.ok(worst < 1e-5, `${side} padding: real-token logits equal the unpadded rows (max diff ${worst.toExponential(2)})`)
  }
  // Same-length batch equals its rows one by one.
  const ids = randomIds(r, 4, 6)
  const batch = await m.forward({ inputIds: ids })
  let worst = 0
  for (let b = 0; b < 4; b++) {
    const one = await m.forward({ inputIds: [ids[b]] })
    worst = Math.max(worst, maxAbsDiff(one.logits.data, batch.logits.data.subarray(b * 6 * V, (b + 1) * 6 * V)))
  }
  t.ok(worst < 1e-5, `batch of 4 equals 4 single rows (max diff ${worst.toExponential(2)})`)
  // Two forwards in flight at once give what they give one after another.
  const a = randomIds(r, 2, 12), b2 = randomIds(r, 3, 7)
  const seqA = await m.forward({ inputIds: a }), seqB = await m.forward({ inputIds: b2 })
  const [parA, parB] = await Promise.all([m.forward({ inputIds: a }), m.forward({ inputIds: b2 })])
  t.equal(maxAbsDiff(parA.logits.data, seqA.logits.data), 0, 'concurrent forward A is bit-identical')
  t.equal(maxAbsDiff(parB.logits.data, seqB.logits.data), 0, 'concurrent forward B is bit-identical')
  const [gA, gB] = await Promise.all([m.lossAndGrad({ inputIds: a, labels: a }), m.lossAndGrad({ inputIds: b2, labels: b2 })])
  const sA = await m.lossAndGrad({ inputIds: a, labels: a })
  t.equal(gA.loss, sA.loss, 'concurrent lossAndGrad loss equals sequential')
  t.equal(maxAbsDiff(gA.grads['transformer.wte.weight'].data, sA.grads['transformer.wte.weight'].data), 0, 'concurrent gradients bit-identical')
  t.ok(gB.loss > 0)
})

t.test('generate: the KV cache gives the same tokens as recomputation', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 13)
  const r = rng(6)
  const prompt = randomIds(r, 3, 5)
  const mask = [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]
  const withCache = await m.generate(prompt, { maxNewTokens: 12, attentionMask: mask })
  const without = await m.generate(prompt, { maxNewTokens: 12, attentionMask: mask, useCache: false })
  t.same(withCache, without, 'greedy tokens equal with and without the cache')
  t.equal(withCache[0].length, 12)
  // Greedy generation equals repeated argmax of forward.
  const seq = [...prompt[0]]
  for (let i = 0; i < 12; i++) {
    const out = await m.forward({ inputIds: [seq] }, { lastOnly: true })
    let best = 0
    for (let v = 1; v < cfg.vocabSize; v++) if (out.logits.data[v] > out.logits.data[best]) best = v
    seq.push(best)
  }
  t.same(withCache[0], seq.slice(5), 'greedy generate equals argmax of forward, step by step')
  const s1 = await m.generate(prompt, { maxNewTokens: 8, temperature: 0.8, topK: 10, seed: 42 })
  const s2 = await m.generate(prompt, { maxNewTokens: 8, temperature: 0.8, topK: 10, seed: 42, useCache: false })
  t.same(s1, s2, 'sampling with a seed is reproducible and the cache does not change it')
  const eos = withCache[0][2]
  const stopped = await m.generate([prompt[0]], { maxNewTokens: 12, eosTokenId: eos })
  t.ok(stopped[0].length <= 3 && stopped[0][stopped[0].length - 1] === eos, 'stops at eos')
})

t.test('Hugging Face name styles, buffers, tied lm_head, F16/BF16, savePretrained', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 17)
  const ids = randomIds(rng(7), 2, 6)
  const ref = await m.forward({ inputIds: ids })
  const shapes = new Map(m.parameters().map((p) => [p.name, p.shape]))
  const ps = new Map(m.parameters().map((p) => [p.name, m.parameter(p.name).data]))
  // GPT2Model-style names ("h.0…") plus attn.bias buffers and an lm_head.weight, as on the hub.
  const extra = new Map(ps)
  const bias = new Float32Array(cfg.nPositions * cfg.nPositions).fill(1)
  for (let l = 0; l < cfg.nLayer; l++) { extra.set(`transformer.h.${l}.attn.bias`, bias); shapes.set(`transformer.h.${l}.attn.bias`, [1, 1, cfg.nPositions, cfg.nPositions]) }
  extra.set('lm_head.weight', ps.get('transformer.wte.weight')!); shapes.set('lm_head.weight', shapes.get('transformer.wte.weight')!)
  await writeDir(path.join(tmp, 'hub'), extra, shapes, (n) => n.replace(/^transformer\./, ''))
  const hub = await GPT2LMHeadModel.fromPretrained(path.join(tmp, 'hub'))
  t.equal(maxAbsDiff((await hub.forward({ inputIds: ids })).logits.data, ref.logits.data), 0, 'h.0… names load to the same logits')
  await m.savePretrained(path.join(tmp, 'saved'))
  const again = await GPT2LMHeadModel.fromPretrained(path.join(tmp, 'saved'))
  t.equal(maxAbsDiff((await again.forward({ inputIds: ids })).logits.data, ref.logits.data), 0, 'savePretrained round trip is exact')
  const cj = JSON.parse(fs.readFileSync(path.join(tmp, 'saved', 'config.json'), 'utf8'))
  t.equal(cj.model_type, 'gpt2'); t.equal(cj.n_layer, cfg.nLayer)
  // F16 and BF16: hand-written safetensors with the rounded weights; logits equal a model built from
  // the same rounded values in F32.
  for (const dtype of ['F16', 'BF16'] as const) {
    const dir = path.join(tmp, dtype)
    fs.mkdirSync(dir, { recursive: true })
    const rounded = new Map<string, Float32Array>()
    const header: Record<string, unknown> = {}
    const chunks: Buffer[] = []
    let off = 0
    for (const [name, data] of ps) {
      const buf = Buffer.alloc(data.length * 2)
      const back = new Float32Array(data.length)
      for (let i = 0; i < data.length; i++) {
        const h = dtype === 'F16' ? toF16(data[i]) : toBF16(data[i])
        buf.writeUInt16LE(h, i * 2)
        back[i] = dtype === 'F16' ? fromF16(h) : fromBF16(h)
      }
      rounded.set(name, back)
      header[name] = { dtype, shape: shapes.get(name), data_offsets: [off, off + buf.length] }
      off += buf.length
      chunks.push(buf)
    }
    const hj = Buffer.from(JSON.stringify(header))
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(hj.length))
    fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([len, hj, ...chunks]))
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(toHFConfig(cfg)))
    await writeDir(path.join(tmp, dtype + '-f32'), rounded, shapes)
    const a = await GPT2LMHeadModel.fromPretrained(dir)
    const b = await GPT2LMHeadModel.fromPretrained(path.join(tmp, dtype + '-f32'))
    t.equal(maxAbsDiff((await a.forward({ inputIds: ids })).logits.data, (await b.forward({ inputIds: ids })).logits.data), 0, `${dtype} weights convert exactly`)
  }
})

// float32 -> IEEE half, round to nearest even (the values here are normal and small).
function toF16(v: number): number {
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer)[0]
  const sign = (u >>> 16) & 0x8000
  let exp = ((u >>> 23) & 0xff) - 127 + 15
  let mant = u & 0x7fffff
  if (exp <= 0) { // subnormal half
    if (exp < -10) return sign
    mant |= 0x800000
    const shift = 14 - exp
    let h = mant >>> shift
    const rem = mant & ((1 << shift) - 1), half = 1 << (shift - 1)
    if (rem > half || (rem === half && (h & 1))) h++
    return sign | h
  }
  let h = (exp << 10) | (mant >>> 13)
  const rem = mant & 0x1fff
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++
  return sign | h
}
function fromF16(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff
  if (e === 0) return s * m * 2 ** -24
  if (e === 31) return m ? NaN : s * Infinity
  return s * (1 + m / 1024) * 2 ** (e - 15)
}
function toBF16(v: number): number {
  const u = new Uint32Array(new Float32Array([v]).buffer)[0]
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}
function fromBF16(h: number): number {
  return new Float32Array(new Uint32Array([h << 16]).buffer)[0]
}
