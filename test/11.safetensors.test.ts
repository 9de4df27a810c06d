// 11.safetensors — the native safetensors reader and writer: round trips, files written by hand
// (F16/BF16/F64, unaligned F32, integer dtypes) and a mutation fuzz of the header and the layout.
// Every malformed file must reject with ERR_SAFETENSORS or ERR_IO naming the file; none may crash.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

// eslint-disable-next-line @typescript-eslint/no-var-requires
const addon = require(process.env.NODE_MEND_ADDON || path.join(__dirname, '../build/Release/node_mend.node'))

type ReadTensor = { dtype: string; shape: number[]; data: Float32Array | null }
type ReadResult = { metadata: Record<string, string>; tensors: Record<string, ReadTensor> }
const read = (p: string): Promise<ReadResult> => addon.safetensorsRead(p)

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-mend-st-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
const tmp = (name: string) => path.join(dir, name)

// A raw safetensors file: 8-byte little-endian header length, header, data. The header is padded
// with spaces to a multiple of 8 unless `pad` is false; `len` overrides the stored length.
function rawFile(header: string | Buffer, data: Buffer, opts: { pad?: boolean; len?: bigint } = {}): Buffer {
  let h = Buffer.isBuffer(header) ? header : Buffer.from(header, 'utf8')
  if (opts.pad !== false && h.length % 8) h = Buffer.concat([h, Buffer.alloc(8 - (h.length % 8), 0x20)])
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(opts.len ?? BigInt(h.length))
  return Buffer.concat([len, h, data])
}

// Reference decoders written from the format definitions, independent of the native code.
function f16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exp = (bits >> 10) & 0x1f
  const mant = bits & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 31) return mant ? NaN : sign * Infinity
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}
function bf16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exp = (bits >> 7) & 0xff
  const mant = bits & 0x7f
  if (exp === 0) return sign * mant * 2 ** -133
  if (exp === 255) return mant ? NaN : sign * Infinity
  return sign * (1 + mant / 128) * 2 ** (exp - 127)
}
const u16 = (vals: number[]) => { const b = Buffer.alloc(vals.length * 2); vals.forEach((v, i) => b.writeUInt16LE(v, i * 2)); return b }
const f32 = (vals: number[]) => { const b = Buffer.alloc(vals.length * 4); vals.forEach((v, i) => b.writeFloatLE(v, i * 4)); return b }
const f64 = (vals: number[]) => { const b = Buffer.alloc(vals.length * 8); vals.forEach((v, i) => b.writeDoubleLE(v, i * 8)); return b }
const sameFloat = (a: number, b: number) => (Number.isNaN(a) && Number.isNaN(b)) || Object.is(a, b)
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length))

t.test('round trip write -> read', async t => {
  const weird = 'wé"ird\\name/😀\n\u0001'
  const special = new Float32Array([0, -0, 1.5, -3.25e-39, Infinity, -Infinity, NaN, 3.4028234663852886e38])
  new Uint32Array(special.buffer)[6] = 0x7fc01234 // a NaN with a payload must survive bit-exactly
  const tensors = [
    { name: 'h.0.attn.c_attn.weight', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => Math.sin(i) * 1e3) },
    { name: 'special', shape: [2, 2, 2], data: special },
    { name: 'empty', shape: [0, 5], data: new Float32Array(0) },
    { name: 'scalar', shape: [], data: new Float32Array([42.5]) },
    { name: weird, shape: [1], data: new Float32Array([7]) },
    { name: '__proto__', shape: [2], data: new Float32Array([1, 2]) },
  ]
  const metadata = { format: 'pt', 'clé "quoted"': 'valüe "with" \\ quotes \n and 日本語 and 🎉', empty: '', ctl: '\u0000\u001f\t' }
  const file = tmp('roundtrip.safetensors')
  const ret = await addon.safetensorsWrite(file, tensors, metadata)
  t.equal(ret, undefined, 'write resolves to undefined')
  t.same(fs.readdirSync(dir).filter(f => f.includes('.tmp-')), [], 'no temporary file left behind')

  const raw = fs.readFileSync(file)
  const n = Number(raw.readBigUInt64LE(0))
  t.equal(n % 8, 0, 'header length is a multiple of 8')
  const header = raw.subarray(8, 8 + n).toString('utf8')
  t.match(header, /^\{"__metadata__":/, '__metadata__ comes first')
  const parsed = JSON.parse(header)
  t.same(Object.keys(parsed).slice(1), tensors.map(x => x.name), 'tensors in the given order')
  let off = 0
  for (const x of tensors) {
    t.same(parsed[x.name].data_offsets, [off, off + x.data.length * 4], `contiguous offsets for ${JSON.stringify(x.name)}`)
    off += x.data.length * 4
  }
  t.equal(raw.length, 8 + n + off, 'file size')

  const r = await read(file)
  t.same({ ...r.metadata }, metadata, 'metadata with unicode, quotes and control characters')
  t.same(Object.keys(r.tensors).sort(), tensors.map(x => x.name).sort(), 'tensor names')
  t.ok(Object.prototype.hasOwnProperty.call(r.tensors, '__proto__'), '"__proto__" is an own property')
  for (const x of tensors) {
    const got = r.tensors[x.name]
    t.equal(got.dtype, 'F32')
    t.same(got.shape, x.shape, `shape of ${JSON.stringify(x.name)}`)
    t.ok(got.data instanceof Float32Array, 'data is a Float32Array')
    t.same(bits(got.data!), bits(x.data), `values of ${JSON.stringify(x.name)} are bit-exact`)
  }

  // Aligned F32 data are views of a private mapping: writing to them must not fault nor touch the file.
  const w = r.tensors['h.0.attn.c_attn.weight'].data!
  w[0] = 12345
  t.equal(w[0], 12345)
  t.same(fs.readFileSync(file), raw, 'the file is unchanged after writing into a view')
  const again = await read(file)
  t.equal(again.tensors['h.0.attn.c_attn.weight'].data![0], tensors[0].data[0], 'a fresh read sees the file')

  // Overwriting an existing file works (rename over it).
  await addon.safetensorsWrite(file, [{ name: 'x', shape: [1], data: new Float32Array([1]) }], {})
  const r2 = await read(file)
  t.same(Object.keys(r2.tensors), ['x'])
  t.same({ ...r2.metadata }, {})
})

t.test('files written by hand', async t => {
  const f16Bits = [0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0x0001, 0x8001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x3555]
  const bf16Bits = [0x0000, 0x8000, 0x3f80, 0xc040, 0x0001, 0x007f, 0x0080, 0x7f80, 0xff80, 0x7fc0, 0x4049, 0x7f7f]
  const f64Vals = [1.5, -1e40, 1e-50, Math.PI, -0, 65504.123, 3.4028235e38, 3.40282356e38, 3.4028236e38, Infinity, NaN, 1e-46]
  const i64 = Buffer.alloc(16); i64.writeBigInt64LE(-5n, 0); i64.writeBigInt64LE(1n << 40n, 8)
  const f32Vals = [1.25, -2.5, 3.1415927410125732, 1e-42]

  const parts: [string, string, number[], Buffer][] = [
    ['half', 'F16', [2, 7], u16(f16Bits)],
    ['brain', 'BF16', [12], u16(bf16Bits)],
    ['double', 'F64', [3, 4], f64(f64Vals)],
    ['ids', 'I64', [2], i64],
    ['flag', 'BOOL', [3], Buffer.from([1, 0, 1])],
    ['odd', 'F32', [4], f32(f32Vals)], // starts at an odd file offset: read by copy
  ]
  const header: Record<string, unknown> = { __metadata__: { by: 'hand' } }
  let off = 0
  for (const [name, dtype, shape, buf] of parts) {
    header[name] = { dtype, shape, data_offsets: [off, off + buf.length] }
    off += buf.length
  }
  let json = JSON.stringify(header)
  // Unpadded header whose data start (8 + n) is odd: the F32 tensor is misaligned in the mapping.
  while ((8 + Buffer.byteLength(json) + off - 16) % 4 !== 1) json += ' '
  const file = tmp('byhand.safetensors')
  fs.writeFileSync(file, rawFile(json, Buffer.concat(parts.map(p => p[3])), { pad: false }))

  const r = await read(file)
  t.same({ ...r.metadata }, { by: 'hand' })
  const half = r.tensors.half
  t.equal(half.dtype, 'F16'); t.same(half.shape, [2, 7])
  const f16Bad = f16Bits.filter((b, i) => !sameFloat(half.data![i], Math.fround(f16Value(b))))
  t.same(f16Bad.map(b => b.toString(16)), [], 'F16 values incl. subnormals, ±inf, NaN, ±0')
  t.equal(half.data![5], 2 ** -24, 'smallest F16 subnormal')
  t.equal(half.data![4], 65504, 'largest F16')
  const brain = r.tensors.brain
  t.equal(brain.dtype, 'BF16')
  const bfBad = bf16Bits.filter((b, i) => !sameFloat(brain.data![i], Math.fround(bf16Value(b))))
  t.same(bfBad.map(b => b.toString(16)), [], 'BF16 values incl. subnormals, ±inf, NaN')
  t.equal(brain.data![10], 3.140625)
  const dbl = r.tensors.double
  t.same(f64Vals.filter((v, i) => !sameFloat(dbl.data![i], Math.fround(v))), [], 'F64 converted with float32 rounding, incl. beyond the float range')
  t.ok(Object.is(dbl.data![4], -0))
  t.same(r.tensors.ids, { dtype: 'I64', shape: [2], data: null }, 'integer tensors: dtype and shape, data null')
  t.same(r.tensors.flag, { dtype: 'BOOL', shape: [3], data: null })
  t.same(Array.from(r.tensors.odd.data!), f32Vals.map(v => Math.fround(v)), 'unaligned F32 copied exactly')

  // Trailing spaces inside the header and leading whitespace are valid JSON.
  const ws = tmp('whitespace.safetensors')
  fs.writeFileSync(ws, rawFile(' \n\t{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  \r\n ', f32([9]), { pad: false }))
  t.same(Array.from((await read(ws)).tensors.a.data!), [9])
  // Escapes and surrogate pairs in names.
  const esc = tmp('escapes.safetensors')
  fs.writeFileSync(esc, rawFile('{"\\u00e9\\ud83d\\ude00\\"\\/\\t":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}', f32([3])))
  t.same(Object.keys((await read(esc)).tensors), ['é😀"/\t'])
})

t.test('errors', async t => {
  const missing = tmp('does-not-exist.safetensors')
  await t.rejects(read(missing), { code: 'ERR_IO', message: new RegExp(missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }, 'missing file')
  await t.rejects(read(dir), { code: 'ERR_IO' }, 'a directory')
  await t.rejects(addon.safetensorsWrite(path.join(dir, 'no/such/dir/x.safetensors'), [], {}), { code: 'ERR_IO', message: /no\/such\/dir/ }, 'write into a missing directory')

  const data = new Float32Array(6)
  const bad: [string, () => unknown][] = [
    ['read without a path', () => addon.safetensorsRead()],
    ['read with a number', () => addon.safetensorsRead(3)],
    ['write with a non-string path', () => addon.safetensorsWrite(1, [], {})],
    ['tensors not an array', () => addon.safetensorsWrite(tmp('x'), {}, {})],
    ['shape product mismatch', () => addon.safetensorsWrite(tmp('x'), [{ name: 'a', shape: [2, 2], data }], {})],
    ['negative dimension', () => addon.safetensorsWrite(tmp('x'), [{ name: 'a', shape: [-6], data }], {})],
    ['fractional dimension', () => addon.safetensorsWrite(tmp('x'), [{ name: 'a', shape: [1.5, 4], data }], {})],
    ['data not a Float32Array', () => addon.safetensorsWrite(tmp('x'), [{ name: 'a', shape: [6], data: new Float64Array(6) }], {})],
    ['empty name', () => addon.safetensorsWrite(tmp('x'), [{ name: '', shape: [6], data }], {})],
    ['reserved name', () => addon.safetensorsWrite(tmp('x'), [{ name: '__metadata__', shape: [6], data }], {})],
    ['duplicate names', () => addon.safetensorsWrite(tmp('x'), [{ name: 'a', shape: [6], data }, { name: 'a', shape: [6], data }], {})],
    ['non-string metadata', () => addon.safetensorsWrite(tmp('x'), [], { a: 1 })],
  ]
  for (const [what, fn] of bad) t.throws(fn, { code: 'ERR_INVALID_ARG' }, what)
})

t.test('mutation fuzz', async t => {
  // Deterministic PRNG (mulberry32) so a failure can be replayed.
  let seed = 0x5eed1234
  const rand = () => { seed = (seed + 0x6d2b79f5) | 0; let x = seed; x = Math.imul(x ^ (x >>> 15), x | 1); x ^= x + Math.imul(x ^ (x >>> 7), x | 61); return ((x ^ (x >>> 14)) >>> 0) / 4294967296 }
  const randInt = (n: number) => Math.floor(rand() * n)

  const data = Buffer.concat([f32([1, 2, 3, 4, 5, 6]), u16([0x3c00, 0x4000, 0x4200, 0x4400]), u16([0x3f80, 0x4000, 0x4040, 0x4080]), Buffer.from([7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0])])
  const base = {
    __metadata__: { format: 'pt', note: 'héllo "q"' },
    'h.0.attn.c_attn.weight': { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
    wte: { dtype: 'F16', shape: [4], data_offsets: [24, 32] },
    'ln_f.bias': { dtype: 'BF16', shape: [2, 2], data_offsets: [32, 40] },
    ids: { dtype: 'I32', shape: [3], data_offsets: [40, 52] },
  }
  const baseHeader = JSON.stringify(base)
  const valid = rawFile(baseHeader, data)
  const hlen = Number(valid.readBigUInt64LE(0))

  type Case = { name: string; bytes: Buffer; expect: 'reject' | 'accept' | 'either'; mention?: string }
  const cases: Case[] = []
  const add = (name: string, bytes: Buffer, expect: Case['expect'] = 'reject', mention?: string) => cases.push({ name, bytes, expect, mention })
  const withHeader = (h: object | string | Buffer, d = data) => rawFile(typeof h === 'string' || Buffer.isBuffer(h) ? h : JSON.stringify(h), d)
  const patch = (edit: (h: any) => void) => { const h = JSON.parse(baseHeader); edit(h); return withHeader(h) }

  add('valid', valid, 'accept')

  // Truncation: every cut through the length field and the header boundaries, then sampled cuts.
  const cuts = new Set<number>()
  for (let i = 0; i < 24; i++) cuts.add(i)
  for (let i = 8 + hlen - 16; i < Math.min(valid.length, 8 + hlen + 16); i++) cuts.add(i)
  while (cuts.size < 300) cuts.add(randInt(valid.length))
  for (const c of cuts) add(`truncated at ${c}`, valid.subarray(0, c))

  // Header length field.
  const setLen = (n: bigint) => { const b = Buffer.from(valid); b.writeBigUInt64LE(n, 0); return b }
  // One (or four) bytes short drops padding spaces: still valid JSON, but every tensor would be read
  // shifted (issue 13): the data buffer must be fully indexed, so the trailing bytes reject it.
  add('header length one too small', setLen(BigInt(hlen - 1)), 'reject', 'bytes after the last tensor')
  add('header length four too small', setLen(BigInt(hlen - 4)), 'reject')
  for (const [what, n] of [['0', 0n], ['cutting the closing brace', BigInt(baseHeader.length - 1)], ['one too big', BigInt(hlen + 1)],
    ['to the end of the file', BigInt(valid.length - 8)], ['past the end', BigInt(valid.length - 7)],
    ['100 MB + 1', 100_000_001n], ['2^32', 1n << 32n], ['2^63', 1n << 63n], ['2^64-1', (1n << 64n) - 1n]] as [string, bigint][]) {
    add(`header length ${what}`, setLen(n))
  }

  // Random byte flips inside the header: anything may happen, except a crash.
  for (let i = 0; i < 200; i++) {
    const b = Buffer.from(valid)
    const pos = 8 + randInt(hlen)
    b[pos] = randInt(256)
    add(`header byte ${pos} = ${b[pos]}`, b, 'either')
  }
  // Deleting any structural character breaks the JSON or the layout.
  for (let i = 0; i < baseHeader.length; i++) {
    if ('{}[]:,"'.includes(baseHeader[i])) add(`delete ${baseHeader[i]} at ${i}`, withHeader(baseHeader.slice(0, i) + baseHeader.slice(i + 1)))
  }
  for (const junk of ['x', '}', '{}', ',', '\u0000', '[]', '0', 'null']) add(`trailing ${JSON.stringify(junk)}`, withHeader(baseHeader + junk))
  add('empty object header, with unreferenced data', withHeader('{}'), 'reject', 'bytes after the last tensor')
  add('empty object header, no data', withHeader('{}', Buffer.alloc(0)), 'accept')
  add('root is an array', withHeader('[]'))
  add('root is a string', withHeader('"x"'))
  add('root is a number', withHeader('12'))
  add('header is spaces', withHeader('        '))
  add('deep nesting', withHeader(`{"__metadata__":${'['.repeat(5000)}${']'.repeat(5000)}}`))
  add('deep nesting, unterminated', withHeader(`{"a":${'{"a":'.repeat(3000)}`))
  add('unterminated string', withHeader('{"abc'))
  add('lone high surrogate', withHeader('{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
  add('lone low surrogate', withHeader('{"\\udc00":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
  add('bad \\u escape', withHeader('{"\\u12g4":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
  add('bad escape', withHeader('{"\\x41":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
  add('raw control character', withHeader('{"a\u0001":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))
  add('invalid UTF-8', withHeader(Buffer.concat([Buffer.from('{"a'), Buffer.from([0xc3, 0x28]), Buffer.from('":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')])), 'reject', 'UTF-8')
  add('overlong UTF-8', withHeader(Buffer.concat([Buffer.from('{"a'), Buffer.from([0xc0, 0xaf]), Buffer.from('":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')])), 'reject', 'UTF-8')
  add('single quotes', withHeader("{'a':{}}"))
  add('NaN literal', withHeader('{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}'))
  add('leading zero', withHeader('{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}'))
  add('integer beyond 64 bits', withHeader('{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}'))
  add('true literal cut', withHeader('{"a":tru}'))

  // Offsets.
  add('end past the data', patch(h => { h.ids.data_offsets = [40, 56] }), 'reject', 'ids')
  add('begin past the data', patch(h => { h.ids.data_offsets = [60, 72] }), 'reject', 'ids')
  add('reversed offsets', patch(h => { h.ids.data_offsets = [52, 40] }), 'reject', 'ids')
  add('overlapping offsets', patch(h => { h.wte.data_offsets = [20, 28] }), 'reject', 'overlap')
  add('identical offsets', patch(h => { h['ln_f.bias'].data_offsets = [24, 32]; h.wte.dtype = 'BF16' }), 'reject', 'overlap')
  add('offsets shorter than the shape', patch(h => { h.ids.data_offsets = [40, 48] }), 'reject', 'ids')
  add('offsets longer than the shape', patch(h => { h['h.0.attn.c_attn.weight'].data_offsets = [0, 28]; h.wte.data_offsets = [28, 36] }), 'reject', 'h.0.attn.c_attn.weight')
  add('negative offset', patch(h => { h.ids.data_offsets = [-4, 8] }), 'reject', 'ids')
  add('fractional offset', patch(h => { h.ids.data_offsets = [40.5, 52] }), 'reject', 'ids')
  add('three offsets', patch(h => { h.ids.data_offsets = [40, 52, 64] }), 'reject', 'ids')
  add('one offset', patch(h => { h.ids.data_offsets = [40] }), 'reject', 'ids')
  add('string offsets', patch(h => { h.ids.data_offsets = ['40', '52'] }), 'reject', 'ids')
  add('offsets an object', patch(h => { h.ids.data_offsets = { b: 40, e: 52 } }), 'reject', 'ids')
  add('offsets near 2^63', withHeader(baseHeader.replace('[40,52]', '[9223372036854775800,9223372036854775807]')), 'reject', 'ids')
  add('offsets shifted past the end', patch(h => { h.ids.data_offsets = [44, 56] }), 'reject', 'ids')
  // Shapes.
  add('negative dimension', patch(h => { h.ids.shape = [-3] }), 'reject', 'ids')
  add('fractional dimension', patch(h => { h.ids.shape = [1.5, 2] }), 'reject', 'ids')
  add('exponent dimension', withHeader(baseHeader.replace('"shape":[3]', '"shape":[3e0]')), 'reject', 'ids')
  add('string dimension', patch(h => { h.ids.shape = ['3'] }), 'reject', 'ids')
  add('null dimension', patch(h => { h.ids.shape = [null] }), 'reject', 'ids')
  add('shape not an array', patch(h => { h.ids.shape = 3 }), 'reject', 'ids')
  add('shape wrong product', patch(h => { h.ids.shape = [2, 2] }), 'reject', 'ids')
  add('shape product overflows', patch(h => { h.ids.shape = [4294967296, 4294967296, 3] }), 'reject', 'ids')
  add('shape product overflows with elem size', withHeader(baseHeader.replace('"shape":[3]', '"shape":[4611686018427387904]')), 'reject', 'ids')
  add('huge dims with a zero', withHeader(baseHeader.replace('"shape":[3]', '"shape":[9223372036854775807,9223372036854775807,0]')), 'reject', 'ids')
  // Dtypes and entries.
  for (const dt of ['F8_E4M3', 'f32', '', 'COMPLEX64', 'U16', 'F32 ']) add(`dtype ${JSON.stringify(dt)}`, patch(h => { h.ids.dtype = dt }), 'reject', dt === '' ? 'ids' : dt)
  add('dtype a number', patch(h => { h.ids.dtype = 32 }), 'reject', 'ids')
  add('missing dtype', patch(h => { delete h.ids.dtype }), 'reject', 'ids')
  add('missing shape', patch(h => { delete h.ids.shape }), 'reject', 'ids')
  add('missing offsets', patch(h => { delete h.ids.data_offsets }), 'reject', 'ids')
  add('extra key', patch(h => { h.ids.extra = 1 }), 'reject', 'ids')
  add('entry not an object', patch(h => { h.ids = [1, 2] }), 'reject', 'ids')
  add('entry null', patch(h => { h.ids = null }), 'reject', 'ids')
  add('duplicate tensor names', withHeader(baseHeader.replace('"ids":', '"wte":')), 'reject', 'wte')
  add('duplicate tensor names, second identical', withHeader(baseHeader.slice(0, -1) + ',"wte":{"dtype":"F16","shape":[4],"data_offsets":[24,32]}}'), 'reject', 'wte')
  add('duplicate key inside an entry', withHeader(baseHeader.replace('"dtype":"I32"', '"dtype":"I32","dtype":"I32"')))
  // Metadata.
  for (const [what, v] of [['number', 1], ['null', null], ['object', { a: 'b' }], ['array', ['a']], ['bool', true]] as [string, unknown][]) {
    add(`metadata ${what} value`, patch(h => { h.__metadata__.note = v }), 'reject', 'note')
  }
  add('metadata not an object', patch(h => { h.__metadata__ = 'x' }), 'reject', '__metadata__')
  add('metadata null', patch(h => { h.__metadata__ = null }), 'reject', '__metadata__')
  add('duplicate metadata key', withHeader(baseHeader.replace('"note":', '"format":')))
  add('duplicate __metadata__', withHeader(baseHeader.slice(0, -1) + ',"__metadata__":{}}'))

  // Data bytes do not matter to the layout: any flip reads back.
  for (let i = 0; i < 20; i++) {
    const b = Buffer.from(valid)
    const pos = 8 + hlen + randInt(data.length)
    b[pos] ^= 1 + randInt(255)
    add(`data byte ${pos} flipped`, b, 'accept')
  }
  add('unreferenced trailing data', Buffer.concat([valid, Buffer.alloc(5)]), 'reject', '5 bytes after the last tensor')
  add('a hole between tensors', withHeader(baseHeader.replace('[40,52]', '[44,56]'), Buffer.concat([data.subarray(0, 40), Buffer.alloc(4), data.subarray(40)])), 'reject', 'hole of 4 bytes')
  add('a hole at the start', withHeader(baseHeader.replace('[0,24]', '[4,28]').replace('[24,32]', '[28,36]').replace('[32,40]', '[36,44]').replace('[40,52]', '[44,56]'), Buffer.concat([Buffer.alloc(4), data])), 'reject', 'hole of 4 bytes')

  const codes = new Set(['ERR_SAFETENSORS', 'ERR_IO'])
  let rejected = 0, accepted = 0
  const failures: string[] = []
  for (let i = 0; i < cases.length; i++) {
    const c = cases[i]
    const file = tmp(`fuzz-${i}.safetensors`)
    fs.writeFileSync(file, c.bytes)
    try {
      const r = await read(file)
      accepted++
      if (c.expect === 'reject') failures.push(`${c.name}: accepted (${Object.keys(r.tensors).join(', ')})`)
      // Whatever was accepted is coherent: float tensors hold shape-product elements.
      for (const [name, x] of Object.entries(r.tensors)) {
        const numel = x.shape.reduce((a, b) => a * b, 1)
        if (x.data !== null && x.data.length !== numel) failures.push(`${c.name}: "${name}" has ${x.data.length} values for shape [${x.shape}]`)
      }
    } catch (err: any) {
      rejected++
      if (c.expect === 'accept') failures.push(`${c.name}: rejected: ${err && err.message}`)
      else if (!err || !codes.has(err.code)) failures.push(`${c.name}: code ${err && err.code}: ${err && err.message}`)
      else if (!String(err.message).includes(path.basename(file))) failures.push(`${c.name}: message does not name the file: ${err.message}`)
      else if (c.mention && !String(err.message).includes(c.mention)) failures.push(`${c.name}: message does not mention ${c.mention}: ${err.message}`)
    }
    fs.unlinkSync(file)
  }
  t.comment(`fuzz: ${cases.length} cases, ${rejected} rejected, ${accepted} read successfully`)
  t.ok(cases.length >= 500, `several hundred cases (${cases.length})`)
  t.same(failures, [], 'every case rejected with a coded error naming the file, or read coherently')
})
