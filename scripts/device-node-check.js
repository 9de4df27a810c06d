#!/usr/bin/env node
// device-node-check.js — run by scripts/device-check.sh on the GPU machine under the carried Node
// binary, with the addon and dist/ built on the development machine (.device-carry/): does that
// addon load there, what does cudaInfo() say, is device: 'cuda' refused as designed (not run on the
// CPU), and does the CPU engine give the fixture's logits there too. Needs no node_modules.
//   NODE_MEND_ADDON=.device-carry/node_mend.node node scripts/device-node-check.js DIST_DIR FIXTURE_DIR...
'use strict'
const fs = require('fs')
const path = require('path')

async function main() {
  const [dist, ...fixtures] = process.argv.slice(2)
  const { GPT2LMHeadModel } = require(path.resolve(dist, 'model', 'gpt2.js'))
  const { cudaInfo } = require(path.resolve(dist, 'core', 'device.js'))
  const { safetensorsRead } = require(path.resolve(dist, 'core', 'native.js'))
  let fails = 0
  const check = (ok, what) => { console.log(`  ${ok ? 'OK  ' : 'FAIL'} ${what}`); if (!ok) fails++ }
  const info = cudaInfo()
  console.log(`node ${process.version}; cudaInfo: ${JSON.stringify(info)}`)
  check(info.built, 'the carried addon has the CUDA backend')
  check(info.available, `the addon sees the GPU${info.available ? ': ' + info.device : ' (' + info.reason + ')'}`)
  const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
  try {
    await GPT2LMHeadModel.random(cfg, 0, { device: 'cuda' })
    check(false, "device: 'cuda' was accepted, but no device-resident model exists: it must be refused")
  } catch (e) {
    const want = info.available ? 'ERR_NOT_IMPLEMENTED' : 'ERR_NO_DEVICE'
    check(e.code === want, `device: 'cuda' refused with ${e.code} (expected ${want}): ${e.message}`)
  }
  for (const dir of fixtures) {
    const b = JSON.parse(fs.readFileSync(path.join(dir, 'batch.json'), 'utf8'))
    const m = await GPT2LMHeadModel.fromPretrained(path.join(dir, b.model_dir))
    const out = await m.forward({ inputIds: b.input_ids, attentionMask: b.attention_mask, labels: b.labels })
    const ref = (await safetensorsRead(path.join(dir, 'logits.safetensors'))).tensors.logits.data
    let maxd = 0
    for (let i = 0; i < ref.length; i++) maxd = Math.max(maxd, Math.abs(ref[i] - out.logits.data[i]))
    check(maxd <= 1e-4 && Math.abs(out.loss - b.loss) <= 1e-5,
      `${path.basename(dir)}: CPU engine here vs the fixture's logits max|diff| ${maxd.toExponential(2)}, loss ${out.loss} vs ${b.loss}`)
  }
  console.log(`device-node-check: ${fails} failed`)
  process.exit(fails ? 1 : 0)
}

main().catch((e) => { console.error(e); process.exit(1) })
