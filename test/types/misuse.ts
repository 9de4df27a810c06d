// Type-level misuse the compiler must reject (compiled by test/57.types.test.ts with --strict; an
// `@ts-expect-error` that no longer matches an error fails the test).
import { BaseEditor, EditedMEND, FunctionalGPT2LMHeadModel, GPT2LMHeadModel, MEND } from '../../lib/index'

export async function misuse(model: GPT2LMHeadModel, batch: { inputIds: number[][]; labels: number[][] }): Promise<void> {
  const root = new MEND(model)
  // @ts-expect-error the root controller holds the plain model: it has no edit log to undo
  await root.model.without(0)
  const { edited } = await root.edit(batch)
  const fm: FunctionalGPT2LMHeadModel = edited.model // an edited controller's model is functional
  await fm.without(0)
  await edited.model.saveEdits('edits.safetensors')
  const again: EditedMEND = (await edited.edit(batch)).edited
  // @ts-expect-error an edited controller is not a root controller
  const plain: MEND<GPT2LMHeadModel> = again
  // @ts-expect-error MEND.edit options are typed
  await root.edit(batch, { returnFactor: true })
  // @ts-expect-error the MEND config is typed
  new MEND(model, { ranks: 4 })
  const editor = await BaseEditor.fromPretrained()
  const r = await editor.edit({ prompts: ['a'], targetNew: ['b'] })
  await r.edited.model.upTo(0)
  // @ts-expect-error requests are typed
  await editor.edit({ prompt: 'a', targetNew: 'b' })
  void plain
}
