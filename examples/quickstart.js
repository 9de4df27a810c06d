// The README's twenty-line example: edit one fact of the bundled WorldFacts model, ask a held-out
// phrasing of it before and after, and undo the edit.  Run: node examples/quickstart.js
const { BaseEditor } = require('..')

;(async () => {
  const editor = await BaseEditor.fromPretrained()        // the bundled model + editor; or { model: dir, editor: file }
  const { metrics, edited } = await editor.edit({
    prompts: ['The capital of France is'],
    targetNew: ['Berlin'],
    rephrasePrompts: [['Q: What is the capital of France? A:']],
    localityInputs: { prompt: [['The capital of Japan is']], groundTruth: [['Tokyo']] },
  })
  console.log(metrics[0].post)

  const tok = editor.tokenizer
  const ask = async (model, q) => tok.decode((await model.generate([tok.encode(q)], { maxNewTokens: 4, eosTokenId: tok.eosTokenId }))[0], { skipSpecialTokens: true })
  console.log('edited:', await ask(edited.model, 'In France, the capital is'))
  console.log('base:  ', await ask(editor.model, 'In France, the capital is'))   // the base is untouched
  const undone = await edited.model.without(0)                                 // or stack: edited.edit(...)
  console.log('undone:', await ask(undone, 'In France, the capital is'))
})()
