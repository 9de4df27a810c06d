// 53.cli-errors — the CLI's checks (issue 13, finding 10): a user error prints one line and exits
// non-zero (no help dump, no stack): numbers are decimal ('' is not 0, '0x10' is not 16), --format
// is one of its choices, counts are at least 1, demo -n beyond the held-out requests is refused,
// output and log paths that cannot be written are ERR_IO at once, and a closed stdout (EPIPE) ends
// the command quietly instead of "Unhandled 'error' event".
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { spawn, spawnSync } from 'node:child_process'
import { writeTinyModelDir } from './helpers/tiny'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-cli-errors-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const cli = path.join(__dirname, '..', 'dist', 'app', 'cli.js')
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: tmp, timeout: 60_000 })

t.test('user errors: one line, non-zero exit', async (t) => {
  t.ok(fs.existsSync(cli), 'dist/app/cli.js is built')
  const modelDir = path.join(tmp, 'model')
  await writeTinyModelDir(modelDir)
  const data = path.join(tmp, 'train.json')
  fs.writeFileSync(data, JSON.stringify([{ src: 'What is the capital of France?', alt: 'Lyon', answers: ['Paris'], rephrase: 'Capital of France?', loc: 'nq question: who', loc_ans: 'me' }]))
  const train = ['train', '--model', modelDir, '--data', data, '--out', path.join(tmp, 'e.safetensors'), '--max-iters', '1', '--rank', '4',
    '--inner-params', 'transformer.h.1.mlp.c_fc.weight', '--no-progress']
  const cases: [string[], RegExp, string][] = [
    [[...train, '--lr', ''], /--lr .*received ""/, "--lr ''"],
    [[...train, '--lr', '0x10'], /--lr .*received "0x10"/, '--lr 0x10'],
    [['eval', '--format', 'bogus'], /one of auto, zsre, counterfact for --format/, '--format bogus'],
    [['eval', '--threads', '0'], /--threads \(at least 1\)/, '--threads 0'],
    [['eval', '-n', '0'], /--n \(at least 1\)/, 'eval -n 0'],
    [['eval', '-n', '-3'], /--n \(at least 1\)/, 'eval -n -3'],
    [['demo', '-n', '100000'], /at most \d+ \(the held-out WorldFacts requests\).*\[ERR_INVALID_ARG\]/, 'demo -n 100000'],
    [['demo', '--threads', '2.5'], /--threads/, 'demo --threads 2.5'],
    [['eval', '--out-dir', '/proc/node-mend/out'], /cannot create \/proc\/node-mend\/out.*\[ERR_IO\]/, 'eval --out-dir under /proc'],
    [[...train, '--log', '/proc/node-mend.log'], /cannot write the log \/proc\/node-mend\.log.*\[ERR_IO\]/, 'train --log under /proc'],
  ]
  for (const [args, pattern, what] of cases) {
    const r = run(args)
    t.not(r.status, 0, `${what}: non-zero exit (${r.status})`)
    const lines = r.stderr.trim().split('\n').filter((l) => !/^node-mend (train|demo|eval): /.test(l))
    t.equal(lines.length, 1, `${what}: one line (${JSON.stringify(r.stderr.slice(0, 400))})`)
    t.match(r.stderr, pattern, `${what}: names the problem`)
    t.notMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`)
  }
})

t.test('a closed stdout ends the command quietly (EPIPE)', async (t) => {
  const child = spawn(process.execPath, [cli, 'demo', '-n', '2'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr.on('data', (d) => { err += d })
  child.stdout.once('data', () => child.stdout.destroy())
  const [code, signal] = await new Promise<[number | null, string | null]>((res) => child.on('exit', (c, s) => res([c, s])))
  t.equal(signal, null, 'no signal')
  t.equal(code, 0, 'exit 0')
  t.notMatch(err, /Unhandled 'error' event|EPIPE|\n\s+at /, `no unhandled error or stack on stderr: ${JSON.stringify(err.slice(-300))}`)
})
