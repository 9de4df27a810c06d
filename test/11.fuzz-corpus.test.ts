// 11.fuzz-corpus — replays the committed fuzz corpus (test/fuzz/corpus/<target>/) through the fuzz
// targets built into the testing addon (native/testing/fuzz/): the safetensors header parser and the
// editor, edit-log and checkpoint validators. Every input must be refused with a coded error or
// accepted coherently (0); anything else is the FuzzFinding the libFuzzer run (scripts/fuzz.sh)
// would have reported.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { testingAddon } from './helpers/testing-addon'

const FINDINGS = ['fine', 'a refusal without a known code', 'an accepted input that is incoherent', 'an accepted input giving NaN/Inf']

for (const target of ['safetensors', 'validators']) {
  t.test(`the ${target} corpus`, async (t) => {
    const dir = path.join(__dirname, 'fuzz', 'corpus', target)
    const files = fs.readdirSync(dir).sort()
    t.ok(files.length >= 8, `${files.length} inputs`)
    const bad: string[] = []
    for (const f of files) {
      const r = testingAddon().fuzzReplay(target, new Uint8Array(fs.readFileSync(path.join(dir, f))))
      if (r !== 0) bad.push(`${f}: ${FINDINGS[r] ?? r}`)
    }
    t.same(bad, [], `every ${target} input is refused with a code or accepted coherently`)
  })
}
