// EasyEdit peer check of the editor network (run by hand; needs PyTorch and EasyEdit's source):
//   node bench/easyedit_peer.js [outDir]   then   /usr/bin/python3 bench/easyedit_peer.py outDir path/to/local_nn.py
// A random, non-identity editor on a small random GPT-2 makes one edit; the kept rows (u, δ) of
// every inner param, the editor file and node-mend's factors Ũ, D̃ are written to outDir. The Python
// side runs EasyEdit's own IDMLP/LRLinear (easyeditor/trainer/algs/local_nn.py, unmodified) with
// GradientTransform's normalisation on the same rows and prints the largest differences.
'use strict'
const fs = require('fs')
const path = require('path')
const { GPT2LMHeadModel, MEND } = require('../dist/index')

async function main() {
  const out = path.resolve(process.argv[2] || 'easyedit-peer')
  fs.mkdirSync(out, { recursive: true })
  const cfg = { nLayer: 3, nHead: 2, nEmbd: 16, vocabSize: 53, nPositions: 32 }
  const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight', 'transformer.h.2.mlp.c_proj.weight', 'transformer.h.2.mlp.c_fc.weight']
  const model = await GPT2LMHeadModel.random(cfg, 2)
  let s = 12345
  const uni = () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 }
  const randn = () => Math.sqrt(-2 * Math.log(uni() + 1e-12)) * Math.cos(2 * Math.PI * uni())
  const spec = new MEND(model, { innerParams: inner, rank: 6, nHidden: 1 }).editorSpec()
  for (const tr of spec.transforms) {
    for (const L of tr.layers) {
      for (const a of [L.u, L.v]) for (let i = 0; i < a.length; i++) a[i] = 0.3 * randn()
      for (const a of [L.bias, L.shift]) for (let i = 0; i < a.length; i++) a[i] = 0.1 * randn()
      for (let i = 0; i < L.scale.length; i++) L.scale[i] = 1 + 0.2 * randn()
    }
    for (let i = 0; i < tr.uStd.length; i++) tr.uStd[i] = 0.5 + uni()
    for (let i = 0; i < tr.vStd.length; i++) tr.vStd[i] = 0.5 + uni()
    for (let i = 0; i < tr.uMean.length; i++) tr.uMean[i] = 0.01 * randn()
    for (let i = 0; i < tr.vMean.length; i++) tr.vMean[i] = 0.01 * randn()
    tr.k = 10
  }
  const mend = MEND.fromEditorSpec(model, spec, { innerParams: inner, rank: 6, nHidden: 1 })
  await mend.save(path.join(out, 'editor.safetensors'))
  const ids = Array.from({ length: 10 }, () => Math.floor(uni() * cfg.vocabSize))
  const batch = { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, i) => (i >= 6 ? v : -100))] }
  const g = await model.lossAndGrad(batch, { params: [], capture: inner })
  const { info } = await mend.edit(batch, { returnFactors: true })
  const rows = inner.map((name, k) => {
    const { x, d } = g.captures[name]
    const din = x.shape[1], dout = d.shape[1]
    const u = [], v = []
    for (let i = 0; i < x.shape[0]; i++) {
      const xs = Array.from(x.data.subarray(i * din, (i + 1) * din)), ds = Array.from(d.data.subarray(i * dout, (i + 1) * dout))
      if (xs.some((a) => a !== 0) && ds.some((a) => a !== 0)) { u.push(xs); v.push(ds) }
    }
    const f = info.factors[name]
    return { name, shape: `(${din}, ${dout})`, mode: spec.modeOf[k], u, v, ut: Array.from(f.u.data), dt: Array.from(f.d.data) }
  })
  fs.writeFileSync(path.join(out, 'rows.json'), JSON.stringify({ layerActivations: mend.layerActivations, rows }))
  console.log(`wrote ${out}/editor.safetensors and rows.json (${rows.map((r) => r.u.length).join(', ')} kept rows; layer activations ${JSON.stringify(mend.layerActivations)})`)

}
main().catch((e) => { console.error(e); process.exit(1) })
