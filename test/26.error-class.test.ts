// 26.error-class — native errors arrive as the library's MendError: the loader hands MendError to
// the addon's setErrorClass, and every error the addon raises (argument checks, failed Promises)
// is then constructed as `new MendError(code, message)`. Also the mechanism on the raw addon: any
// constructor, null to go back to Error with `.code`, and a constructor that throws falls back to
// Error with `.code`.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { GPT2LMHeadModel, MendError } from '../lib/index'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-errclass-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }

t.test('native errors through the library are MendError instances with their code', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const dir = path.join(tmp, 'trunc')
  await m.savePretrained(dir)
  const f = path.join(dir, 'model.safetensors')
  fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 200))
  try {
    await GPT2LMHeadModel.fromPretrained(dir)
    t.fail('a truncated model.safetensors loaded')
  } catch (e) {
    t.ok(e instanceof MendError, `truncated weights: ${(e as Error).constructor.name} is a MendError`)
    t.equal((e as MendError).code, 'ERR_SAFETENSORS', 'with the native code')
    t.match((e as Error).message, /model\.safetensors/, 'and the native message naming the file')
  }
})

t.test('setErrorClass on the raw addon', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const addon = require(process.env.NODE_MEND_ADDON || path.join(__dirname, '../build/Release/node_mend.node'))
  const missing = path.join(tmp, 'missing.safetensors')
  const config = { nLayer: 1, nHead: 2, nEmbd: 8, nInner: 0, vocabSize: 20, nPositions: 10, layerNormEpsilon: 1e-5 }
  class Custom extends Error {
    constructor(public code: string, message: string) { super(message) }
  }
  const caught = async (p: () => unknown) => { try { await p() } catch (e) { return e as Error & { code?: string } } return null }
  addon.setErrorClass(Custom)
  let e = await caught(() => addon.loadModel(missing, config))
  t.ok(e instanceof Custom, 'a rejected Promise (missing file) is an instance of the class')
  t.equal(e?.code, 'ERR_IO', `code ${e?.code}`)
  t.match(e?.message, /missing\.safetensors/, 'message names the file')
  e = await caught(() => addon.setNumThreads(0))
  t.ok(e instanceof Custom && e.code === 'ERR_INVALID_ARG', 'a synchronous argument error too')
  addon.setErrorClass(class { constructor() { throw new Error('boom') } })
  e = await caught(() => addon.loadModel(missing, config))
  t.ok(e instanceof Error && !(e instanceof Custom) && e.code === 'ERR_IO', 'a constructor that throws: Error with .code')
  addon.setErrorClass(null)
  e = await caught(() => addon.loadModel(missing, config))
  t.ok(e instanceof Error && !(e instanceof Custom) && e.code === 'ERR_IO', 'null: Error with .code again')
  t.throws(() => addon.setErrorClass(42), { code: 'ERR_INVALID_ARG' }, 'not a constructor')
  addon.setErrorClass(MendError)
})
