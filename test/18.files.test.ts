// 18.files — the files a user names (issue 13, findings 2 and 3): weights and edit logs are read
// into private memory by default, so truncating or rewriting the file after loading changes nothing
// (before: SIGBUS, or silently changed logits); `{ mmap: true }` maps the file, documented as "must
// not change while loaded". A FIFO in place of a model, editor, edit log or config file is ERR_IO at
// once (before: a hang), and output directories that cannot be made (/proc) are ERR_IO at once.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { spawnSync } from 'node:child_process'
import { GPT2LMHeadModel, MEND, FunctionalGPT2LMHeadModel } from '../lib/index'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-files-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
const ids = { inputIds: [[1, 2, 3]] }
const dist = path.join(__dirname, '..', 'dist', 'index.js')

async function withCode(t: Tap, p: () => Promise<unknown> | unknown, code: string, pattern: RegExp, what: string) {
  try {
    await p()
    t.fail(`${what}: succeeded`)
  } catch (e) {
    t.equal((e as { code?: string }).code, code, `${what}: ${code} (${(e as Error).message})`)
    t.match((e as Error).message, pattern, `${what}: message names it`)
  }
}
type Tap = typeof t

t.test('truncating or rewriting files after loading (child process: the failure was SIGBUS)', async (t) => {
  t.ok(fs.existsSync(dist), 'dist/index.js is built')
  const script = path.join(tmp, 'truncate.js')
  fs.writeFileSync(script, `
const fs = require('fs'), path = require('path')
const { GPT2LMHeadModel, MEND, FunctionalGPT2LMHeadModel } = require(${JSON.stringify(dist)})
const dir = process.argv[2], mmap = process.argv[3] === 'mmap'
;(async () => {
  const cfg = ${JSON.stringify(cfg)}
  const src = await GPT2LMHeadModel.random(cfg, 1)
  await src.savePretrained(dir)
  const other = await GPT2LMHeadModel.random(cfg, 2)
  await other.savePretrained(dir + '-other')
  const m = await GPT2LMHeadModel.fromPretrained(dir, { mmap })
  const before = Array.from((await m.forward({ inputIds: [[1, 2, 3]] })).logits.data)
  const file = path.join(dir, 'model.safetensors')
  // Same size, other weights, written in place (not replaced by a new inode).
  const fd = fs.openSync(file, 'r+')
  fs.writeSync(fd, fs.readFileSync(path.join(dir + '-other', 'model.safetensors')), 0, undefined, 0)
  fs.closeSync(fd)
  const rewritten = Array.from((await m.forward({ inputIds: [[1, 2, 3]] })).logits.data)
  console.log('rewritten ' + (JSON.stringify(rewritten) === JSON.stringify(before) ? 'same' : 'changed'))
  if (mmap) return
  fs.truncateSync(file, 100)
  const truncated = Array.from((await m.forward({ inputIds: [[1, 2, 3]] })).logits.data)
  console.log('truncated ' + (JSON.stringify(truncated) === JSON.stringify(before) ? 'same' : 'changed'))
  // An edit log, truncated after loading: without() and saveEdits still work.
  const mend = new MEND(m, { rank: 4, innerParams: ['h.0.mlp.c_fc.weight'] })
  const e1 = await mend.edit({ inputIds: [[1, 2, 3]], labels: [[1, 2, 3]] })
  const e2 = await e1.edited.edit({ inputIds: [[3, 2, 1]], labels: [[3, 2, 1]] })
  const log = path.join(dir, 'edits.safetensors')
  await e2.edited.model.saveEdits(log)
  const loaded = await FunctionalGPT2LMHeadModel.loadEdits(m, log)
  fs.truncateSync(log, 16)
  await loaded.without(0)
  await loaded.saveEdits(log + '.again')
  const again = await FunctionalGPT2LMHeadModel.loadEdits(m, log + '.again')
  console.log('log ' + again.edits.length)
})().catch((e) => { console.log('error ' + e.code + ' ' + e.message); process.exit(3) })
`)
  const r = spawnSync(process.execPath, [script, path.join(tmp, 'm-read')], { encoding: 'utf8', timeout: 60_000 })
  t.equal(r.signal, null, `no signal (got ${r.signal}); stderr: ${r.stderr.slice(-300)}`)
  t.equal(r.status, 0, `exit status 0; stdout: ${r.stdout}`)
  t.match(r.stdout, /rewritten same/, 'default: rewriting the file in place does not change the loaded model')
  t.match(r.stdout, /truncated same/, 'default: truncating it does not either (and no SIGBUS)')
  t.match(r.stdout, /log 2/, 'a truncated edit log already loaded still gives without() and saveEdits')
  const mm = spawnSync(process.execPath, [script, path.join(tmp, 'm-mmap'), 'mmap'], { encoding: 'utf8', timeout: 60_000 })
  t.equal(mm.status, 0, `mmap: exit status 0; stdout: ${mm.stdout} ${mm.stderr.slice(-300)}`)
  t.match(mm.stdout, /rewritten changed/, '{ mmap: true } maps the file: rewriting it shows in the model (why it must not change)')
})

t.test('mmap is an explicit option', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 3)
  const dir = path.join(tmp, 'opt')
  await m.savePretrained(dir)
  const a = await GPT2LMHeadModel.fromPretrained(dir)
  const b = await GPT2LMHeadModel.fromPretrained(dir, { mmap: true })
  t.same(Array.from((await b.forward(ids)).logits.data), Array.from((await a.forward(ids)).logits.data), 'read and mapped give the same model')
  await withCode(t, () => GPT2LMHeadModel.fromPretrained(dir, { mmap: 'yes' } as never), 'ERR_INVALID_ARG', /mmap/, 'mmap not a boolean')
  await withCode(t, () => GPT2LMHeadModel.fromPretrained(dir, { map: true } as never), 'ERR_INVALID_ARG', /did you mean "mmap"/, 'misspelt option')
})

t.test('FIFOs and other non-regular files are refused at once', { skip: process.platform === 'win32' }, async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const dir = path.join(tmp, 'fifo')
  await m.savePretrained(dir)
  const mkfifo = (p: string) => {
    fs.rmSync(p, { force: true })
    const r = spawnSync('mkfifo', [p])
    if (r.status !== 0) throw new Error(`mkfifo ${p} failed`)
  }
  const weights = path.join(dir, 'model.safetensors')
  fs.copyFileSync(weights, path.join(tmp, 'weights.bak'))
  mkfifo(weights)
  await withCode(t, () => GPT2LMHeadModel.fromPretrained(dir), 'ERR_IO', /model\.safetensors: not a regular file \(a FIFO\)/, 'FIFO as model.safetensors')
  fs.rmSync(weights)
  fs.copyFileSync(path.join(tmp, 'weights.bak'), weights)
  const editor = path.join(tmp, 'editor.safetensors')
  mkfifo(editor)
  await withCode(t, () => MEND.fromPretrained(m, editor), 'ERR_IO', /editor\.safetensors: not a regular file/, 'FIFO as an editor file')
  const log = path.join(tmp, 'edits.safetensors')
  mkfifo(log)
  await withCode(t, () => FunctionalGPT2LMHeadModel.loadEdits(m, log), 'ERR_IO', /edits\.safetensors: not a regular file/, 'FIFO as an edit log')
  mkfifo(path.join(dir, 'config.json'))
  await withCode(t, () => GPT2LMHeadModel.fromPretrained(dir), 'ERR_IO', /config\.json: not a regular file/, 'FIFO as config.json')
})

t.test('output directories that cannot be made are ERR_IO at once (no hang under /proc)', { skip: process.platform !== 'linux' }, async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const { edited } = await new MEND(m, { rank: 4, innerParams: ['h.0.mlp.c_fc.weight'] }).edit({ inputIds: [[1, 2, 3]], labels: [[1, 2, 3]] })
  const t0 = Date.now()
  await withCode(t, () => m.savePretrained('/proc/node-mend-test/out'), 'ERR_IO', /cannot create \/proc\/node-mend-test\/out/, 'savePretrained under /proc')
  await withCode(t, () => edited.model.savePretrained('/proc/node-mend-test'), 'ERR_IO', /\/proc\/node-mend-test/, 'edited savePretrained under /proc')
  await withCode(t, () => edited.model.saveEdits('/proc/node-mend-test/edits.safetensors'), 'ERR_IO', /\/proc\/node-mend-test/, 'saveEdits under /proc')
  const file = path.join(tmp, 'a-file')
  fs.writeFileSync(file, 'x')
  await withCode(t, () => m.savePretrained(path.join(file, 'sub')), 'ERR_IO', /a-file.*not a directory/, 'a directory under a file')
  t.ok(Date.now() - t0 < 10_000, `settled in ${Date.now() - t0} ms`)
})
