/**
 * GPT-2 parameter names: Hugging Face checkpoints use `h.0.…` (GPT2Model) or `transformer.h.0.…`
 * (GPT2LMHeadModel), and `lm_head.weight` is tied to `transformer.wte.weight`. Everything inside
 * node-mend uses the canonical `transformer.…` name.
 */

/** The Conv1D weights MEND can edit and lossAndGrad can capture: attention and MLP projections. */
export const CONV1D_WEIGHT = /\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/

/** Either name style (and the tied lm_head) to the canonical `transformer.…` name. */
export function canonicalParamName(n: string): string {
  return n === 'lm_head.weight' ? 'transformer.wte.weight' : n.startsWith('transformer.') ? n : `transformer.${n}`
}

export function isConv1DWeight(canonical: string): boolean {
  return CONV1D_WEIGHT.test(canonical)
}
