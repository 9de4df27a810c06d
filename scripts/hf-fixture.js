#!/usr/bin/env node
// hf-fixture.js — writes what scripts/hf-compare.py compares: for two GPT-2 models (a random one
// with odd sizes, written here by savePretrained, and the bundled trained one in assets/), a batch
// (left and right padding, labels with -100) and node-mend's CPU logits and loss for it.
//   node scripts/hf-fixture.js OUT_DIR        (needs the built addon and dist/: npm run build:native, npx tsc)
// OUT_DIR/<name>/: batch.json (model_dir, the batch, node-mend's loss), logits.safetensors (float32
// "logits" (B,T,V)); the random model is written to OUT_DIR/random/model/.
'use strict'
const fs = require('fs')
const path = require('path')

const root = path.resolve(__dirname, '..')
const { GPT2LMHeadModel } = require(path.join(root, 'dist', 'model', 'gpt2.js'))
const { safetensorsWrite } = require(path.join(root, 'dist', 'core', 'native.js'))

// B = 3 rows of T = 11: row 0 full, row 1 left-padded by 3, row 2 right-padded by 2 (ids stay in
// range in the padding, as tokenizers leave them); labels = ids where the mask is 1, else -100.
function batch(V, seed) {
  let s = seed
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648
  const B = 3, T = 11
  const ids = [], mask = [], labels = []
  for (let b = 0; b < B; b++) {
    const r = [], m = [], l = []
    for (let t = 0; t < T; t++) {
      const on = !(b === 1 && t < 3) && !(b === 2 && t >= T - 2)
      const id = Math.floor(rnd() * V)
      // the first real token after left padding is no target: its predictor is a padding query,
      // which sees no key (node-mend gives it output 0, transformers a uniform row: DESIGN §4)
      const target = on && !(t > 0 && m[t - 1] === 0)
      r.push(id); m.push(on ? 1 : 0); l.push(target ? id : -100)
    }
    ids.push(r); mask.push(m); labels.push(l)
  }
  return { input_ids: ids, attention_mask: mask, labels }
}

// batch.json's model_dir is relative to the fixture folder, so the bundled model is not copied (the
// device tool's 64 MiB: the tree already carries assets/)
async function write(dir, modelDir, model, b) {
  fs.mkdirSync(dir, { recursive: true })
  const out = await model.forward({ inputIds: b.input_ids, attentionMask: b.attention_mask, labels: b.labels })
  const rec = { model_dir: path.relative(dir, modelDir), ...b, loss: out.loss, shape: out.logits.shape }
  fs.writeFileSync(path.join(dir, 'batch.json'), JSON.stringify(rec) + '\n')
  await safetensorsWrite(path.join(dir, 'logits.safetensors'), [{ name: 'logits', shape: out.logits.shape, data: out.logits.data }], {})
  console.log(`${dir}: logits ${out.logits.shape.join('x')}, loss ${out.loss}`)
}

async function main() {
  const outDir = process.argv[2]
  if (!outDir) { console.error('usage: node scripts/hf-fixture.js OUT_DIR'); process.exit(2) }
  fs.mkdirSync(outDir, { recursive: true })
  // random: odd sizes, an explicit n_inner and epsilon, so config handling is compared too
  const rdir = path.join(outDir, 'random')
  const cfg = { nLayer: 3, nHead: 3, nEmbd: 96, nInner: 200, vocabSize: 1001, nPositions: 40, layerNormEpsilon: 1e-6 }
  const m = await GPT2LMHeadModel.random(cfg, 7)
  await m.savePretrained(path.join(rdir, 'model'))
  await write(rdir, path.join(rdir, 'model'), m, batch(cfg.vocabSize, 1))
  // the bundled trained model (assets/worldfacts-gpt2)
  const bundled = path.join(root, 'assets', 'worldfacts-gpt2')
  if (fs.existsSync(path.join(bundled, 'model.safetensors'))) {
    const bm = await GPT2LMHeadModel.fromPretrained(bundled)
    await write(path.join(outDir, 'worldfacts'), bundled, bm, batch(bm.config.vocabSize, 2))
  }
}

main().catch((e) => { console.error(e); process.exit(1) })
