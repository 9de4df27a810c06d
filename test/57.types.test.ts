// 57.types — the public types, as a TypeScript user meets them: every JavaScript block of the README
// and examples/quickstart.js, with `require('node-mend')` turned into a typed import, compiles under
// `tsc --strict --noEmit`; and test/types/misuse.ts, whose `@ts-expect-error` lines must each still
// be an error (edited controllers have a FunctionalGPT2LMHeadModel, options and requests are typed).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as ts from 'typescript'

const root = path.resolve(__dirname, '..')
const lib = path.join(root, 'lib', 'index')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-types-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

// Names the README's snippets take from earlier sections (declared with their types).
const CONTEXT = `declare const model: GPT2LMHeadModel
declare const tok: GPT2Tokenizer
declare const batch2: Batch
declare const manyRequests: BaseEditorRequest
`

/** A snippet as a typed module: its require('node-mend') / require('..') lines become one import. */
function asModule(code: string): string {
  const names = new Set(['GPT2LMHeadModel', 'GPT2Tokenizer', 'BaseEditorRequest', 'Batch'])
  const body = code.replace(/^const \{([^}]*)\} = require\('(?:node-mend|\.\.)'\)\s*$/gm, (_, list: string) => {
    for (const n of list.split(',')) if (n.trim()) names.add(n.trim())
    return ''
  })
  const types = ['BaseEditorRequest', 'Batch']
  return `import { ${[...names].filter((n) => !types.includes(n)).join(', ')} } from ${JSON.stringify(lib)}\n` +
    `import type { ${types.join(', ')} } from ${JSON.stringify(lib)}\n${CONTEXT}\nexport async function snippet(): Promise<void> {\n${body}\n}\n`
}

t.test('the README and examples compile under --strict; misuse is a type error', async (t) => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
  const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])
  t.ok(blocks.length >= 4, `${blocks.length} JavaScript blocks in the README`)
  const files: string[] = []
  blocks.forEach((b, i) => { const f = path.join(tmp, `readme-${i}.ts`); fs.writeFileSync(f, asModule(b)); files.push(f) })
  const ex = path.join(tmp, 'quickstart.ts')
  fs.writeFileSync(ex, asModule(fs.readFileSync(path.join(root, 'examples', 'quickstart.js'), 'utf8')))
  files.push(ex)
  const misuse = path.join(root, 'test', 'types', 'misuse.ts')
  const options: ts.CompilerOptions = {
    strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10, types: ['node'], skipLibCheck: true, esModuleInterop: true,
  }
  // The snippets are JavaScript: their callback parameters carry no annotations (noImplicitAny off
  // for them only); everything else is --strict. misuse.ts is fully strict.
  const diagnostics = (fs_: string[], o: ts.CompilerOptions) =>
    ts.getPreEmitDiagnostics(ts.createProgram(fs_, o)).filter((d) => d.file && fs_.includes(path.resolve(d.file.fileName)))
  const diags = [...diagnostics(files, { ...options, noImplicitAny: false }), ...diagnostics([misuse], options)]
  files.push(misuse)
  for (const d of diags) {
    const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0)
    const src = d.file!.text.split('\n')[line]
    t.comment(`${path.basename(d.file!.fileName)}:${line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}\n    ${src.trim()}`)
  }
  t.equal(diags.length, 0, `no type errors in ${files.length} files (README blocks, examples/quickstart.js, test/types/misuse.ts)`)
})
