// 28.native-faults — no C++ exception leaves a native entry point (issue 13, finding 1): a worker
// thread terminated in the middle of native calls does not abort the process (run in a child
// process, since the failure is SIGABRT); std::bad_alloc and other exceptions in a binding arrive as
// coded errors; editor sizes a user controls (nHidden, rank) are bounded before anything is built.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { spawnSync } from 'node:child_process'
import { GPT2LMHeadModel, MEND } from '../lib/index'
import { freshEditorSpec, editorLayout } from '../lib/mend/network'
import { createEditor } from '../lib/core/native'
import { testingAddon } from './helpers/testing-addon'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-faults-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const dist = path.join(__dirname, '..', 'dist', 'index.js')

t.test('terminating a worker_thread inside native calls does not abort the process', async (t) => {
  t.ok(fs.existsSync(dist), 'dist/index.js is built (npm run build:ts)')
  const script = path.join(tmp, 'terminate.js')
  fs.writeFileSync(script, `
const { Worker, isMainThread, parentPort } = require('worker_threads')
if (isMainThread) {
  let n = 0
  const go = () => {
    const w = new Worker(__filename)
    w.on('error', (e) => { console.log('worker error', e.message) })
    w.on('message', () => setTimeout(() => w.terminate().then(() => { if (++n < 12) go(); else console.log('survived ' + n) }), 1 + (n * 7) % 25))
  }
  go()
} else {
  const { GPT2LMHeadModel, MEND } = require(${JSON.stringify(dist)})
  ;(async () => {
    const m = await GPT2LMHeadModel.random({ nLayer: 2, nHead: 2, nEmbd: 64, vocabSize: 500, nPositions: 64 }, 1)
    parentPort.postMessage('started')
    const ids = [Array.from({ length: 60 }, (_, i) => i)]
    for (;;) {
      const calls = []
      for (let i = 0; i < 8; i++) calls.push(m.forward({ inputIds: ids }))
      await Promise.all(calls)
      const mend = new MEND(m, { rank: 8, innerParams: ['h.1.mlp.c_fc.weight'] })
      await mend.edit({ inputIds: ids, labels: ids })
      await m.generate([[1, 2, 3]], { maxNewTokens: 4 })
    }
  })()
}
`)
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 120_000 })
  t.equal(r.signal, null, `no signal (got ${r.signal}); stderr: ${r.stderr.slice(-300)}`)
  t.equal(r.status, 0, 'exit status 0')
  t.match(r.stdout, /survived 12/, 'all 12 workers were terminated mid-call and the process lived on')
})

t.test('an addon loaded only in worker threads survives the last one ending (child process)', async (t) => {
  // Node unloads an addon when the last worker that loaded it ends; the process-wide thread pool's
  // threads, still spinning after a region, then ran unmapped code (SIGSEGV, seen under ASan). The
  // addon pins itself (RTLD_NODELETE).
  const script = path.join(tmp, 'unload.js')
  fs.writeFileSync(script, `
const { Worker, isMainThread, parentPort } = require('worker_threads')
if (isMainThread) {
  let n = 0
  const go = () => {
    const w = new Worker(__filename)
    w.on('message', () => w.terminate().then(() => { if (++n < 15) setTimeout(go, 5); else setTimeout(() => console.log('survived ' + n), 300) }))
  }
  go()
} else {
  const { GPT2LMHeadModel, setNumThreads } = require(${JSON.stringify(dist)})
  setNumThreads(4)
  GPT2LMHeadModel.random({ nLayer: 1, nHead: 2, nEmbd: 64, vocabSize: 300, nPositions: 64 }, 1)
    .then((m) => m.forward({ inputIds: [Array.from({ length: 60 }, (_, i) => i)] }))
    .then(() => parentPort.postMessage('done'))
}
`)
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 120_000 })
  t.equal(r.signal, null, `no signal (got ${r.signal}); stderr: ${r.stderr.slice(-300)}`)
  t.match(r.stdout, /survived 15/, '15 workers loaded the addon, ran a parallel region and ended; the process lived on')
})

t.test('C++ exceptions in a binding become coded errors', async (t) => {
  const addon = testingAddon()
  for (const [kind, code, msg] of [['bad_alloc', 'ERR_OUT_OF_MEMORY', /out of memory/], ['runtime', 'ERR_INTERNAL', /a runtime error/],
    ['other', 'ERR_INTERNAL', /unknown native exception/]] as const) {
    try {
      addon.nativeThrow(kind)
      t.fail(`${kind}: nothing thrown`)
    } catch (e) {
      t.equal((e as { code?: string }).code, code, `${kind}: code ${(e as { code?: string }).code}`)
      t.match((e as Error).message, msg, `${kind}: message "${(e as Error).message}"`)
    }
  }
  t.equal(addon.nativeThrow('none'), undefined, 'a call that does not throw returns normally')
})

t.test('editor sizes are bounded up front', async (t) => {
  const m = await GPT2LMHeadModel.random({ nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }, 1)
  for (const [cfg, what] of [[{ rank: 8, nHidden: 60000 }, 'nHidden'], [{ rank: 8, nHidden: 33 }, 'nHidden'], [{ rank: 2 ** 40 }, 'rank'],
    [{ rank: 1e300 }, 'rank']] as const) {
    t.throws(() => new MEND(m, cfg), { code: 'ERR_INVALID_ARG', message: new RegExp(`for ${what} but received`) }, `${JSON.stringify(cfg)} is refused`)
  }
  t.doesNotThrow(() => new MEND(m, { rank: 8, nHidden: 32 }), 'nHidden 32 is accepted')
  // The native check has the same bounds (a spec built without the TypeScript checks).
  const layout = editorLayout(m, ['h.0.mlp.c_fc.weight'])
  const big = freshEditorSpec(layout, { rank: 4, nHidden: 33, editLr: 1e-4, seed: 0 })
  t.throws(() => createEditor(m.native, big), { code: 'ERR_INVALID_ARG', message: /34 layers/ }, 'native: 34 layers refused')
  const wide = freshEditorSpec(layout, { rank: 4, nHidden: 1, editLr: 1e-4, seed: 0 })
  const D = 8 + 32
  wide.transforms[0].rank = D + 1
  for (const l of wide.transforms[0].layers) { l.u = new Float32Array(D * (D + 1)); l.v = new Float32Array(D * (D + 1)) }
  t.throws(() => createEditor(m.native, wide), { code: 'ERR_INVALID_ARG', message: /rank 41/ }, 'native: rank > d_in + d_out refused')
})
