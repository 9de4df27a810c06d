// 28.device — the `device` option of the model constructors (fromPretrained, random, fromTensors):
// 'cpu' is the default; 'cuda' without a usable GPU (or without the CUDA backend in this addon) is
// ERR_NO_DEVICE saying why, never a silent run on the CPU; where a GPU is present it is refused as
// not implemented yet (the CUDA kernels exist, a model the API runs on the GPU does not); any other device
// is ERR_INVALID_ARG. Also runs the CUDA op test executable when this build has one: it compares
// every CUDA op with the CPU op where a GPU is present, and prints a visible SKIP where none is;
// and its host-shim twin, which checks the plumbing everywhere.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { spawnSync } from 'node:child_process'
import { cudaInfo, GPT2LMHeadModel } from '../lib/index'

const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-device-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const info = cudaInfo()
t.comment(`CUDA backend: ${info.built ? 'built' : 'not built'}; ${info.available ? `device ${info.device}` : `no device: ${info.reason}`}`)
const cudaError = info.available ? { code: 'ERR_NOT_IMPLEMENTED', message: /device "cuda" found .*not yet a model that lives on the GPU/ }
  : { code: 'ERR_NO_DEVICE', message: /device "cuda" is not available: / }

t.test('cudaInfo says whether the backend is built and why no device is usable', async (t) => {
  t.type(info.built, 'boolean')
  t.type(info.available, 'boolean')
  if (!info.available) t.ok(info.reason.length > 10, `a reason: ${info.reason}`)
  if (!info.built) t.notOk(info.available, 'no device without the backend')
})

t.test("device 'cpu' is the default and gives the same model", async (t) => {
  const a = await GPT2LMHeadModel.random(cfg, 3)
  const b = await GPT2LMHeadModel.random(cfg, 3, { device: 'cpu' })
  const c = await GPT2LMHeadModel.random(cfg, { seed: 3, device: 'cpu' })
  t.equal(a.device, 'cpu')
  t.equal(b.device, 'cpu')
  const ids = { inputIds: [[1, 2, 3]] }
  const la = (await a.forward(ids)).logits.data
  t.same((await b.forward(ids)).logits.data, la, 'random(cfg, 3, { device: "cpu" })')
  t.same((await c.forward(ids)).logits.data, la, 'random(cfg, { seed: 3, device: "cpu" })')
  await a.savePretrained(path.join(tmp, 'm'))
  const d = await GPT2LMHeadModel.fromPretrained(path.join(tmp, 'm'), { device: 'cpu' })
  t.same((await d.forward(ids)).logits.data, la, 'fromPretrained(dir, { device: "cpu" })')
  const tensors: Record<string, Float32Array> = {}
  for (const p of a.parameters()) tensors[p.name] = a.parameter(p.name).data
  const e = await GPT2LMHeadModel.fromTensors(cfg, tensors, { device: 'cpu' })
  t.same((await e.forward(ids)).logits.data, la, 'fromTensors(cfg, tensors, { device: "cpu" })')
  for (const m of [a, b, c, d, e]) m.dispose()
})

t.test("device 'cuda' is refused with a coded error that says why, never run on the CPU", async (t) => {
  await t.rejects(GPT2LMHeadModel.random(cfg, 3, { device: 'cuda' }), cudaError, 'random(cfg, seed, { device })')
  await t.rejects(GPT2LMHeadModel.random(cfg, { device: 'cuda' }), cudaError, 'random(cfg, { device })')
  await t.rejects(GPT2LMHeadModel.fromTensors(cfg, {}, { device: 'cuda' }), cudaError, 'fromTensors')
  await t.rejects(GPT2LMHeadModel.fromPretrained(path.join(tmp, 'absent'), { device: 'cuda' }), cudaError,
    'fromPretrained: the device is checked before the directory is read')
  try {
    await GPT2LMHeadModel.random(cfg, 3, { device: 'cuda' })
  } catch (e) {
    t.comment(`the message: ${(e as Error).message}`)
    t.match((e as Error).message, /GPT2LMHeadModel\.random/, 'names the call')
    if (!info.available) t.ok((e as Error).message.includes(info.reason), 'and the reason')
  }
})

t.test('an unknown device or option is ERR_INVALID_ARG', async (t) => {
  await t.rejects(GPT2LMHeadModel.random(cfg, 3, { device: 'tpu' } as never),
    { code: 'ERR_INVALID_ARG', message: /Expected "cpu" or "cuda" for GPT2LMHeadModel.random device but received "tpu"/ })
  await t.rejects(GPT2LMHeadModel.random(cfg, 3, { device: 0 } as never), { code: 'ERR_INVALID_ARG', message: /but received 0/ })
  await t.rejects(GPT2LMHeadModel.fromPretrained(tmp, { devise: 'cpu' } as never),
    { code: 'ERR_INVALID_ARG', message: /Unknown option "devise" for GPT2LMHeadModel.fromPretrained; did you mean "device"/ })
  await t.rejects(GPT2LMHeadModel.fromTensors(cfg, {}, 'cuda' as never), { code: 'ERR_INVALID_ARG', message: /Expected an options object/ })
  await t.rejects(GPT2LMHeadModel.random(cfg, { seed: 1, sede: 2 } as never), { code: 'ERR_INVALID_ARG', message: /"sede"/ })
})

// The CUDA op test (native/testing/cuda_ops_test.cc), built with the addon where nvcc is found.
const opsTest = path.join(__dirname, '..', 'build', 'Release', 'mend_cuda_ops_test')
t.test('the CUDA ops against the CPU ops (mend_cuda_ops_test)', { skip: fs.existsSync(opsTest) ? false : 'this build has no CUDA backend (no nvcc at build time)' }, async (t) => {
  const r = spawnSync(opsTest, [], { encoding: 'utf8', timeout: 600_000 })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
  t.equal(r.status, 0, `exit status ${r.status}`)
  if (/^SKIP: no CUDA device/m.test(out)) {
    t.comment(out.trim())
    t.notOk(info.available, 'skipped only where the addon sees no device either')
  } else {
    t.match(out, /\d+ passed, 0 failed/, 'every case passes')
    if (r.status !== 0) t.comment(out.split('\n').filter((l) => /FAIL/.test(l)).join('\n'))
  }
})

// The same test over a host shim of the CUDA API (CPU kernels behind it): built in every testing
// build, so the test's plumbing and the device forward's composition (model/gpt2_cuda.cc against
// model/gpt2.cc) are checked here too; it runs no CUDA kernel.
const shimTest = path.join(__dirname, '..', 'build', 'Release', 'mend_cuda_shim_test')
t.test('the CUDA op test and the device forward over the host shim (mend_cuda_shim_test)', { skip: fs.existsSync(shimTest) ? false : 'not built' }, async (t) => {
  const r = spawnSync(shimTest, [], { encoding: 'utf8', timeout: 300_000 })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
  t.equal(r.status, 0, `exit status ${r.status}`)
  t.match(out, /on the host shim/, 'runs over the shim')
  t.match(out, /model gpt2 forward .* logits .* OK/, 'the device forward composes the ops as the CPU model does')
  const m = out.match(/(\d+) passed, (\d+) failed/)
  t.ok(m && Number(m[1]) > 100 && m[2] === '0', m ? m[0] : 'no summary line')
  if (r.status !== 0) t.comment(out.split('\n').filter((l) => /FAIL/.test(l)).join('\n'))
})
