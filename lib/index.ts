/**
 * node-mend: knowledge editing for GPT-2 language models with MEND.
 */
import { native } from './native'

export { GPT2LMHeadModel } from './model'
export type { Batch, ForwardOptions, ForwardOutput, LossAndGradOptions, LossAndGradOutput, GenerateOptions, ParamInfo } from './model'
export type { GPT2Config } from './config'
export type { Tensor, IdsInput } from './tensor'
export { GPT2Tokenizer } from './tokenizer'
export { trainByteLevelBPE, writeVocabAndMerges } from './bpe'
export type { BPETrainOptions, BPEVocabulary } from './bpe'
export { FunctionalGPT2LMHeadModel } from './functional'
export type { EditRecord } from './functional'
export { MEND, defaultInnerParams } from './mend'
export type { MENDConfig, EditOptions, EditInfo, LayerActivation } from './mend'
export { EditTrainer, trainBatches } from './trainer'
export type { EditTrainerConfig, TrainBatch, StepResult } from './trainer'
export { MendError } from './errors'

/** Threads the native kernels use (default: NODE_MEND_THREADS or the number of cores). */
export function numThreads(): number {
  return native().numThreads()
}
export function setNumThreads(n: number): void {
  native().setNumThreads(n)
}
/** The GEMM code path chosen for this CPU: "avx2-fma" or "portable". */
export function gemmBackend(): string {
  return native().gemmBackend()
}
export * from './data/editdata'
export * from './data/worldfacts'
export { Editor, editorRequest, greedyCompletions, teacherForcedPredictions } from './editor'
export type { EditorEditRequest, Metrics, RequestMetrics, EditorOptions } from './editor'
export { evaluate, markdownReport, svgPlot } from './eval'
export type { EvalResult, MetricRow } from './eval'
export { Pretrainer } from './pretrain'
export type { PretrainConfig } from './pretrain'
export { factVocabulary, corpusRows, pretrainFactModel, factAccuracy, editorTrainingRequests, trainFactEditor, worldFactsEvalRequests } from './factmodel'
export type { FactPretrainOptions, FactAccuracy, FactEditorOptions } from './factmodel'
export { BUNDLED_MODEL_DIR, BUNDLED_EDITOR_FILE, bundledAssetsPresent } from './assets'
export { runDemo } from './demo'
export type { DemoOptions, DemoResult, DemoEdit, DemoRow } from './demo'
