#!/usr/bin/env node
// Writes the seed corpus of the fuzz targets (test/fuzz/corpus/<target>/), deterministic: small
// safetensors files the writer produces (F32, with metadata, empty and scalar tensors) and
// hand-made F16/BF16/F64/I32 and edge-case layouts; byte strings for the validators' decoder that
// reach each of its three branches. Run once; the committed corpus also holds inputs a fuzz run
// added (scripts/fuzz.sh merges new coverage back).
'use strict'
const fs = require('fs')
const path = require('path')
const root = path.resolve(__dirname, '..')
const dir = (t) => path.join(root, 'test', 'fuzz', 'corpus', t)

function file(header, data) {
  let h = Buffer.from(JSON.stringify(header))
  if (h.length % 8) h = Buffer.concat([h, Buffer.alloc(8 - (h.length % 8), 0x20)])
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(h.length))
  return Buffer.concat([len, h, data])
}
const f32 = (v) => { const b = Buffer.alloc(v.length * 4); v.forEach((x, i) => b.writeFloatLE(x, i * 4)); return b }
const seeds = {
  'f32-one': file({ a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } }, f32([1, 2, 3, 4])),
  'f32-meta': file({ __metadata__: { format: 'pt', k: 'v' }, 'h.0.attn.c_attn.weight': { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }, f32([1, -2, 3.5, 7])),
  'mixed-dtypes': file({ x: { dtype: 'F16', shape: [2], data_offsets: [0, 4] }, y: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] }, z: { dtype: 'F64', shape: [1], data_offsets: [8, 16] }, i: { dtype: 'I32', shape: [2], data_offsets: [16, 24] } }, Buffer.alloc(24, 0x3c)),
  'empty-and-scalar': file({ e: { dtype: 'F32', shape: [0, 5], data_offsets: [0, 0] }, s: { dtype: 'F32', shape: [], data_offsets: [0, 4] } }, f32([42])),
  'empty-header': file({}, Buffer.alloc(0)),
  'editor-names': file({ __metadata__: { format: 'node-mend-editor' }, 'mend.(4, 16).mlp.layers.0.u': { dtype: 'F32', shape: [20, 2], data_offsets: [0, 160] }, edit_lrs: { dtype: 'F32', shape: [1], data_offsets: [160, 164] } }, Buffer.alloc(164)),
  'short-length': (() => { const b = file({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32([1])); b.writeBigUInt64LE(b.readBigUInt64LE(0) - 4n, 0); return b })(),
  'truncated': file({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32([1, 2, 3, 4])).subarray(0, 30),
}
fs.mkdirSync(dir('safetensors'), { recursive: true })
for (const [name, b] of Object.entries(seeds)) fs.writeFileSync(path.join(dir('safetensors'), name), b)

// Validators: the first byte picks the branch (0 editor, 1 edit log, 2 checkpoint); then a
// deterministic pseudo-random tail (mostly ordinary values).
let x = 12345
const rnd = () => { x = (x * 1103515245 + 12345) >>> 0; return x >>> 16 }
fs.mkdirSync(dir('validators'), { recursive: true })
for (let branch = 0; branch < 3; branch++) {
  for (let k = 0; k < 4; k++) {
    const n = [16, 200, 1200, 4000][k]
    const b = Buffer.alloc(n)
    b[0] = branch
    for (let i = 1; i < n; i++) b[i] = k === 0 ? 0 : rnd() % (k === 3 ? 256 : 200)
    fs.writeFileSync(path.join(dir('validators'), `branch${branch}-${k}`), b)
  }
}
console.log(`seeds written to ${path.relative(root, dir(''))}`)
