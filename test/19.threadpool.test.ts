// 19.threadpool — the native thread pool (issue 13, finding 6): it shrinks when setNumThreads asks
// for fewer threads (the process's thread count drops), a region uses only the threads asked for,
// results do not depend on the count, and more threads than free cores no longer collapses a
// generate (before: 16 tokens took 16 ms with 2 threads and ~1 s with 8 on a 2-core machine,
// because every idle worker spun and every worker took part in every region).
import t from 'tap'
import * as fs from 'node:fs'
import { GPT2LMHeadModel, numThreads, setNumThreads } from '../lib/index'

const tasks = () => fs.readdirSync('/proc/self/task').length
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

t.test('the pool grows and shrinks; results do not depend on the thread count', { skip: process.platform !== 'linux' }, async (t) => {
  const before = numThreads()
  t.teardown(() => setNumThreads(before))
  const m = await GPT2LMHeadModel.random({ nLayer: 2, nHead: 4, nEmbd: 128, vocabSize: 500, nPositions: 64 }, 1)
  const ids = [Array.from({ length: 48 }, (_, i) => (i * 7) % 500)]
  setNumThreads(1)
  const ref = (await m.forward({ inputIds: ids })).logits.data
  const base = tasks()
  setNumThreads(12)
  const wide = (await m.forward({ inputIds: ids })).logits.data
  const grown = tasks()
  t.ok(grown >= base + 11, `12 threads: the process has ${grown} threads (was ${base})`)
  setNumThreads(1)
  await m.forward({ inputIds: ids })
  t.ok(tasks() <= base, `1 thread: no worker is kept (${tasks()} threads)`)
  setNumThreads(2)
  const narrow = (await m.forward({ inputIds: ids })).logits.data
  const shrunk = tasks()
  t.ok(shrunk <= grown - 10, `back to 2 threads: the pool shrank (${grown} -> ${shrunk} threads)`)
  let d = 0
  for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(ref[i] - wide[i]), Math.abs(ref[i] - narrow[i]))
  t.ok(d < 1e-4, `logits with 1, 12 and 2 threads agree (max |diff| ${d})`)
})

t.test('more threads than cores does not collapse', async (t) => {
  const before = numThreads()
  t.teardown(() => setNumThreads(before))
  const m = await GPT2LMHeadModel.random({ nLayer: 2, nHead: 4, nEmbd: 128, vocabSize: 500, nPositions: 64 }, 1)
  const time = async (n: number) => {
    setNumThreads(n)
    await m.generate([[1, 2, 3, 4]], { maxNewTokens: 16 })
    const ts: number[] = []
    for (let r = 0; r < 5; r++) {
      const t0 = process.hrtime.bigint()
      await m.generate([[1, 2, 3, 4]], { maxNewTokens: 16 })
      ts.push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
    return median(ts)
  }
  const one = await time(1)
  const many = await time(16)
  t.comment(`16-token generate: ${one.toFixed(1)} ms with 1 thread, ${many.toFixed(1)} ms with 16`)
  t.ok(many < 20 * one + 50, `16 threads: ${many.toFixed(1)} ms, within 20x of 1 thread (${one.toFixed(1)} ms) + 50 ms`)
})

t.test('random() spreads large tensors over the threads and gives the same weights at any thread count', async (t) => {
  const before = numThreads()
  t.teardown(() => setNumThreads(before))
  // wte of 4100 x 256 = 1.05M values: two chunks of the initialiser (1M values each at most).
  const cfg = { nLayer: 1, nHead: 2, nEmbd: 256, vocabSize: 4100, nPositions: 8 }
  setNumThreads(1)
  const one = await GPT2LMHeadModel.random(cfg, 5)
  setNumThreads(2)
  const two = await GPT2LMHeadModel.random(cfg, 5)
  let differ = 0
  for (const { name } of one.parameters()) {
    const a = one.parameter(name).data, b = two.parameter(name).data
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differ++
  }
  t.equal(differ, 0, '1 and 2 threads: every parameter bit-identical')
  // Chunk 0 of a tensor draws from the stream the tensor always had: wte of a smaller vocabulary
  // (one chunk) is the start of this one.
  const small = await GPT2LMHeadModel.random({ ...cfg, vocabSize: 2048 }, 5)
  const ws = small.parameter('transformer.wte.weight').data, wl = one.parameter('transformer.wte.weight').data
  let same = 0
  for (let i = 0; i < ws.length; i++) if (ws[i] === wl[i]) same++
  t.equal(same, ws.length, `wte of vocabulary 2048 equals the first ${ws.length} values of vocabulary 4100's`)
  // The second chunk is not a copy of the first.
  t.not(wl[1 << 20], wl[0], 'the second chunk has its own stream')
  for (const m of [one, two, small]) m.dispose()
})
