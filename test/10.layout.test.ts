// 10.layout — the shape of lib/: imports point down the layers (core < tokenizer < model < data <
// mend < easyedit < app < index), no import cycle, only lib/core/ touches the native addon.
import t from 'tap'
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { check, LAYERS } = require('../scripts/check-layers.js') as { check: () => string[]; LAYERS: string[] }

t.test('lib/ layering', async (t) => {
  const problems = check()
  for (const p of problems) t.comment(p)
  t.same(problems, [], `no layering problems (${LAYERS.join(' < ')})`)
})
