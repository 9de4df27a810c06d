// 41.hparams — EasyEdit's MEND hyper-parameter YAML (test/fixtures/easyedit-mend-gpt2-xl.yaml is
// EasyEdit's hparams/MEND/gpt2-xl.yaml, verbatim): loadMENDHparams maps what node-mend uses, refuses
// MEND variants it does not implement and unknown keys; `node-mend train --hparams` trains with it
// (flags override) and records the settings and the validation result in the editor file.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GPT2LMHeadModel, loadMENDHparams, MEND } from '../lib/index'
import { safetensorsRead } from '../lib/core/native'
import { writeTinyModelDir } from './helpers/tiny'
import { runMain } from './helpers/cli'

const fixture = path.join(__dirname, 'fixtures', 'easyedit-mend-gpt2-xl.yaml')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-hparams-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

t.test("EasyEdit's gpt2-xl.yaml", async (t) => {
  const hp = loadMENDHparams(fixture)
  t.same(hp.mend, {
    innerParams: [45, 46, 47].flatMap((b) => [`transformer.h.${b}.mlp.c_proj.weight`, `transformer.h.${b}.mlp.c_fc.weight`]),
    editLr: 1e-4, seed: 42, nHidden: 1, rank: 1920,
  }, 'MEND config: inner_params, edit_lr, seed, n_hidden, rank')
  t.same(hp.trainer, { lr: 1e-6, lrLr: 1e-4, cedit: 0.1, cloc: 1, maxIters: 100000, valInterval: 1000, earlyStopPatience: 20000, valSteps: 500, accumulateBs: 10, gradClip: 100 },
    'trainer config: lr, lr_lr, cedit, cloc, max_iters, val_interval, early_stop_patience, val_steps, accumulate_bs, grad_clip')
  const variant = path.join(tmp, 'one-sided.yaml')
  fs.writeFileSync(variant, fs.readFileSync(fixture, 'utf8').replace('one_sided: False', 'one_sided: True'))
  t.throws(() => loadMENDHparams(variant), { code: 'ERR_CONFIG', message: /one_sided: true is a MEND variant node-mend does not implement/ })
  const unknown = path.join(tmp, 'unknown.yaml')
  fs.writeFileSync(unknown, 'rank: 8\nranks: 9\n')
  t.throws(() => loadMENDHparams(unknown), { code: 'ERR_CONFIG', message: /unknown hyper-parameter "ranks"/ })
  const bad = path.join(tmp, 'bad.yaml')
  fs.writeFileSync(bad, 'rank: [1\n')
  t.throws(() => loadMENDHparams(bad), { code: 'ERR_CONFIG', message: /not valid YAML/ })
  t.throws(() => loadMENDHparams(path.join(tmp, 'missing.yaml')), { code: 'ERR_IO' })
})

t.test('node-mend train --hparams: the YAML gives the settings, flags override, the editor records them', async (t) => {
  const modelDir = path.join(tmp, 'model')
  await writeTinyModelDir(modelDir)
  const recs = ['France', 'Italy', 'Spain'].map((c, i) => ({ subject: c, src: `What is the capital of ${c}?`, alt: 'Lyon city', answers: ['x'],
    rephrase: `Which city is the capital of ${c}?`, loc: `nq question: who wrote book ${i}`, loc_ans: 'an author' }))
  fs.writeFileSync(path.join(tmp, 'train.json'), JSON.stringify(recs))
  // EasyEdit's file with the tiny model's inner params (the rest verbatim).
  const yaml = fs.readFileSync(fixture, 'utf8').replace(/inner_params:\n(- .*\n)+/, 'inner_params:\n- transformer.h.1.mlp.c_proj.weight\n- transformer.h.1.mlp.c_fc.weight\n')
  const hpFile = path.join(tmp, 'tiny.yaml')
  fs.writeFileSync(hpFile, yaml)
  const out = path.join(tmp, 'editor.safetensors')
  const { stderr } = await runMain(['train', '--model', modelDir, '--data', path.join(tmp, 'train.json'), '--val', path.join(tmp, 'train.json'),
    '--out', out, '--hparams', hpFile, '--max-iters', '4', '--val-interval', '2', '--rank', '4', '--no-progress'])
  t.match(stderr, /hyper-parameters from .*tiny\.yaml/)
  t.match(stderr, /done: 4 steps/, 'max_iters 100000 from the YAML is overridden by --max-iters 4')
  const meta = (await safetensorsRead(out)).metadata
  const trainer = JSON.parse(meta.trainer)
  t.same([trainer.lr, trainer.lrLr, trainer.cedit, trainer.accumulateBs, trainer.gradClip, trainer.seed], [1e-6, 1e-4, 0.1, 10, 100, 42], 'the YAML\'s lr, lr_lr, cedit, accumulate_bs, grad_clip, seed were used')
  t.equal(JSON.parse(meta.hparams).alg_name, 'MEND', 'the YAML is recorded in the editor file')
  const val = JSON.parse(meta.validation)
  t.ok(val && val.step > 0 && Number.isFinite(val.val.edit), `the validation result that chose the editor is recorded (step ${val.step})`)
  const mend = await MEND.fromPretrained(await GPT2LMHeadModel.fromPretrained(modelDir), out)
  t.same(mend.config.innerParams, ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight'], 'inner params from the YAML')
  t.equal(mend.config.rank, 4, '--rank overrides the YAML\'s 1920')
  t.equal(mend.config.editLr, 1e-4, 'edit_lr from the YAML')
})
