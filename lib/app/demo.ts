/**
 * `node-mend demo`: a few MEND edits of held-out WorldFacts facts, end to end. For each edit it
 * shows the request, the greedy completions before and after the edit of the edit prompt, of a
 * held-out phrasing and of an unrelated prompt, EasyEdit's metrics (BaseEditor.edit), the edit time,
 * and the edit undone (`FunctionalGPT2LMHeadModel.without`), checked to give back exactly the
 * pre-edit completions. Uses the bundled model and editor unless others are given.
 *
 * Cost per edit: three batched greedy generations (before, after, undone; 3 prompts each) plus
 * BaseEditor.edit (one edit and four teacher-forced forwards).
 */
import { buildWorldFacts, editRequests, portabilityPrompts } from '../data/worldfacts'
import { EditRequest } from '../data/editdata'
import { BaseEditor, editorRequest, greedyCompletions, Metrics, RequestMetrics } from '../easyedit/base-editor'
import { mendError } from '../core/errors'
import { FunctionalGPT2LMHeadModel } from '../model/functional'
import { GPT2Inference } from '../model/gpt2'
import { setNumThreads } from '../core/native'
import { checkInt, invalidArg } from '../core/check'

export interface DemoOptions {
  /** Hugging Face GPT-2 directory; default the bundled WorldFacts model. */
  model?: string
  /** MEND editor file; default the bundled editor (with the bundled model). */
  editor?: string
  /** Number of edits. Default 3. */
  n?: number
  /** Seed of the request sample (targets, prompts, locality facts). Default 0. */
  seed?: number
  /** Seed of the WorldFacts subject split (must match the one the editor was trained with). Default 0. */
  worldFactsSeed?: number
  /** Greedy tokens per completion. Default 6. */
  maxNewTokens?: number
  /** Native threads (default: unchanged). */
  threads?: number
  /** ANSI colors in the output. Default false. */
  color?: boolean
  /** Progress notes (loading); default stderr. */
  log?: (s: string) => void
}

export interface DemoRow {
  kind: 'edit' | 'held-out' | 'unrelated'
  prompt: string
  before: string
  after: string
}

export interface DemoEdit {
  request: EditRequest
  rows: DemoRow[]
  metrics: RequestMetrics
  /** Milliseconds of the edit (BaseEditor.edit's `time`). */
  editMs: number
  /** The edit prompt's completion after the edit was removed (equals rows[0].before). */
  undone: string
}

export interface DemoResult {
  edits: DemoEdit[]
  loadMs: number
  totalMs: number
}


const ANSI = { bold: [1, 22], dim: [2, 22], green: [32, 39], red: [31, 39], cyan: [36, 39] } as const
type Style = keyof typeof ANSI

const fmt = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(2))

function metricsLine(pre: Metrics, post: Metrics): string {
  const parts: string[] = []
  for (const k of ['rewrite_acc', 'rephrase_acc', 'locality', 'portability'] as const) {
    if (post[k] === undefined && pre[k] === undefined) continue
    parts.push(k === 'locality' ? `${k} ${fmt(post[k])}` : `${k} ${fmt(pre[k])} -> ${fmt(post[k])}`)
  }
  return parts.join(' | ')
}

/** Runs the demo, writing human-readable lines through `write`; returns what it showed. */
export async function runDemo(opts: DemoOptions = {}, write: (s: string) => void = (s) => { process.stdout.write(s) }): Promise<DemoResult> {
  if (!opts || typeof opts !== 'object') throw invalidArg('an options object', 'runDemo', opts)
  const t0 = Date.now()
  const n = checkInt(opts.n ?? 3, 'n', 1)
  const seed = checkInt(opts.seed ?? 0, 'seed', 0)
  const wfSeed = checkInt(opts.worldFactsSeed ?? 0, 'worldFactsSeed', 0)
  const maxNewTokens = checkInt(opts.maxNewTokens ?? 6, 'maxNewTokens', 1)
  if (opts.threads !== undefined) setNumThreads(checkInt(opts.threads, 'threads', 1))
  const log = opts.log ?? ((s: string) => { process.stderr.write(s) })
  const paint = (s: string, st: Style): string => (opts.color ? `\x1b[${ANSI[st][0]}m${s}\x1b[${ANSI[st][1]}m` : s)

  const wf = buildWorldFacts({ seed: wfSeed })
  const requests = editRequests(wf, { subjects: 'heldOut', n, seed })
  if (requests.length === 0) throw mendError('ERR_DATA', 'demo: WorldFacts gave no held-out edit requests')
  if (requests.length < n) throw invalidArg(`at most ${requests.length} (the held-out WorldFacts requests)`, 'the number of demo edits n', n)
  log(`node-mend demo: loading ${opts.model ?? 'the bundled model'} and ${opts.editor ?? 'the bundled editor'}…\n`)
  const editor = await BaseEditor.fromPretrained({ model: opts.model, editor: opts.editor })
  const tok = editor.tokenizer
  const loadMs = Date.now() - t0

  const complete = (m: GPT2Inference, prompts: string[]) => greedyCompletions(m, tok, prompts, maxNewTokens, { skipSpecialTokens: true })

  write(`${paint(`MEND demo: ${requests.length} edit${requests.length === 1 ? '' : 's'} of held-out WorldFacts facts`, 'bold')} ` +
    `(seed ${seed}; greedy, ${maxNewTokens} new tokens; loaded in ${(loadMs / 1000).toFixed(1)} s)\n`)
  const edits: DemoEdit[] = []
  for (const [i, req] of requests.entries()) {
    const shown: { kind: DemoRow['kind']; prompt: string }[] = [{ kind: 'edit', prompt: req.prompt }]
    if (req.rephrasePrompts.length > 0) shown.push({ kind: 'held-out', prompt: req.rephrasePrompts[0] })
    if (req.localityPrompts.length > 0) shown.push({ kind: 'unrelated', prompt: req.localityPrompts[0].prompt })
    const prompts = shown.map((s) => s.prompt)

    const before = await complete(editor.model, prompts)
    const { metrics, edited } = await editor.edit(editorRequest([{ ...req, portabilityPrompts: portabilityPrompts(wf, req) }]))
    const after = await complete(edited.model, prompts)
    const fm = edited.model
    if (!(fm instanceof FunctionalGPT2LMHeadModel)) throw mendError('ERR_DATA', 'demo: the edited model is not a functional model')
    const undoneModel = await fm.without(fm.edits.length - 1)
    const undone = await complete(undoneModel, prompts)
    undone.ids.forEach((ids, k) => {
      if (ids.length !== before.ids[k].length || ids.some((v, j) => v !== before.ids[k][j])) {
        throw mendError('ERR_UNDO_MISMATCH', `demo: after undoing edit ${i + 1}, ${JSON.stringify(prompts[k])} completes as ${JSON.stringify(undone.text[k])}, not as before the edit (${JSON.stringify(before.text[k])})`)
      }
    })
    const m = metrics[0]
    const rows: DemoRow[] = shown.map((s, k) => ({ ...s, before: before.text[k], after: after.text[k] }))
    edits.push({ request: req, rows, metrics: m, editMs: m.time, undone: undone.text[0] })

    // ---- print the edit
    const q = (s: string) => JSON.stringify(s)
    write(`\n${paint(`[${i + 1}/${requests.length}]`, 'bold')} ${q(req.prompt)} -> ${paint(q(req.targetNew), 'cyan')}` +
      `${req.groundTruth !== undefined ? `  (was ${q(req.groundTruth)})` : ''}\n`)
    const wKind = Math.max(...rows.map((r) => r.kind.length), 4)
    const wPrompt = Math.max(...rows.map((r) => q(r.prompt).length), 6)
    const wBefore = Math.max(...rows.map((r) => q(r.before).length), 6)
    write(paint(`  ${''.padEnd(wKind)}  ${'prompt'.padEnd(wPrompt)}  ${'before'.padEnd(wBefore)}  after`, 'dim') + '\n')
    for (const r of rows) {
      const changed = r.after !== r.before
      write(`  ${r.kind.padEnd(wKind)}  ${q(r.prompt).padEnd(wPrompt)}  ${paint(q(r.before).padEnd(wBefore), 'dim')}  ${paint(q(r.after), changed ? 'green' : 'dim')}\n`)
    }
    write(`  metrics  ${metricsLine(m.pre, m.post)}\n`)
    write(`  edit     ${m.time.toFixed(1)} ms\n`)
    write(`  undone   ${q(req.prompt)} -> ${q(undone.text[0])}  (${paint('= before', 'green')}: edit removed with without(${fm.edits.length - 1}))\n`)
  }
  const totalMs = Date.now() - t0
  write(`\n${paint('total', 'bold')} ${(totalMs / 1000).toFixed(2)} s for ${edits.length} edit${edits.length === 1 ? '' : 's'} (loading ${(loadMs / 1000).toFixed(2)} s)\n`)
  return { edits, loadMs, totalMs }
}
