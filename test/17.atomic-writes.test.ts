// 17.atomic-writes — every file node-mend writes goes to a temporary file of its own, is fsynced and
// renamed (issue 13, finding 8): ten concurrent saveEdits to one path all succeed and leave one
// whole log (before: three failed with ERR_IO and the file could hold a log whose save had failed,
// since they shared one temporary name); a failed write leaves the destination as it was and no
// temporary file behind.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { GPT2LMHeadModel, MEND, FunctionalGPT2LMHeadModel } from '../lib/index'
import { writeFileAtomic } from '../lib/core/files'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-atomic-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
const leftovers = (dir: string) => fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))

t.test('concurrent saves to one path', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const mend = new MEND(m, { rank: 4, innerParams: ['h.0.mlp.c_fc.weight'] })
  const edited = []
  for (let i = 0; i < 10; i++) edited.push((await mend.edit({ inputIds: [[1, 2, 3]], labels: [[1, 2, 3]] }, { request: { i } })).edited)
  const file = path.join(tmp, 'edits.safetensors')
  const res = await Promise.allSettled(edited.map((e) => e.model.saveEdits(file)))
  t.same(res.map((r) => r.status), new Array(10).fill('fulfilled'), 'all ten saves succeed')
  const back = await FunctionalGPT2LMHeadModel.loadEdits(m, file)
  const i = (back.edits[0].request as { i: number }).i
  t.ok(Number.isInteger(i) && i >= 0 && i < 10, `the file holds one whole log (request ${i})`)
  t.same(leftovers(tmp), [], 'no temporary file left behind')
  // Ten savePretrained of one directory at once.
  const dir = path.join(tmp, 'model')
  const saves = await Promise.allSettled(Array.from({ length: 10 }, () => m.savePretrained(dir)))
  t.same(saves.map((r) => r.status), new Array(10).fill('fulfilled'), 'ten concurrent savePretrained succeed')
  t.ok((await GPT2LMHeadModel.fromPretrained(dir)).config.nEmbd === 8, 'and the directory loads')
  t.same(leftovers(dir), [], 'no temporary file left in it')
})

t.test('a failed write leaves the destination as it was', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  // The destination is a directory: the rename fails, the directory is untouched, nothing is left.
  const dir = path.join(tmp, 'model2')
  await m.savePretrained(dir)
  fs.rmSync(path.join(dir, 'config.json'))
  fs.mkdirSync(path.join(dir, 'config.json'))
  fs.writeFileSync(path.join(dir, 'config.json', 'keep'), 'x')
  await t.rejects(m.savePretrained(dir), { code: 'ERR_IO', message: /config\.json/ }, 'config.json being a directory: ERR_IO')
  t.same(fs.readdirSync(path.join(dir, 'config.json')), ['keep'], 'the directory in the way is untouched')
  t.same(leftovers(dir), [], 'no temporary file left behind')
  const f = path.join(tmp, 'kept.txt')
  writeFileAtomic(f, 'first')
  fs.chmodSync(tmp, 0o500) // no new files in the directory: the write fails before touching f
  try {
    if (process.getuid?.() !== 0) t.throws(() => writeFileAtomic(f, 'second'), { code: 'ERR_IO', message: /kept\.txt/ }, 'an unwritable directory: ERR_IO')
  } finally {
    fs.chmodSync(tmp, 0o700)
  }
  t.equal(fs.readFileSync(f, 'utf8'), 'first', 'the old content is intact')
})
