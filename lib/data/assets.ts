/**
 * The bundled WorldFacts model and its MEND editor (built by `npm run assets`, shipped in git).
 */
import * as fs from 'fs'
import * as path from 'path'

/** Repository root (dist/data/ and lib/data/ both sit two levels below it). */
const ROOT = path.resolve(__dirname, '..', '..')

/** Hugging Face directory of the bundled fact model (config.json, model.safetensors, vocab.json, merges.txt). */
export const BUNDLED_MODEL_DIR = path.join(ROOT, 'assets', 'worldfacts-gpt2')
/** The default editor of the bundled model: the lifelong (kind 'malmen') editor, DESIGN §5b. */
export const BUNDLED_EDITOR_FILE = path.join(ROOT, 'assets', 'worldfacts-gpt2', 'malmen-editor.safetensors')
/** The classic MEND editor (EasyEdit's MEND) of the bundled model, shipped beside it for comparison. */
export const BUNDLED_MEND_EDITOR_FILE = path.join(ROOT, 'assets', 'worldfacts-gpt2', 'mend-editor.safetensors')

/** True when both bundled files are present. */
export function bundledAssetsPresent(): boolean {
  return fs.existsSync(path.join(BUNDLED_MODEL_DIR, 'model.safetensors')) && fs.existsSync(BUNDLED_EDITOR_FILE)
}
