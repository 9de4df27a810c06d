/**
 * Loads the native addon once. The addon is built by `npm install` (scripts/build-native.js);
 * NODE_MEND_ADDON overrides the path (for development builds).
 */
import * as path from 'path'
import { mendError } from './errors'

export interface NativeModel {
  paramInfo(): { name: string; shape: number[] }[]
  param(name: string): Float32Array
  paramBytes(): number
  forward(ids: Int32Array, B: number, T: number, mask: Int32Array | null, labels: Int32Array | null,
          lastOnly: boolean): Promise<{ logits: Float32Array; loss?: number; nTargets?: number }>
  lossAndGrad(ids: Int32Array, B: number, T: number, mask: Int32Array | null, labels: Int32Array,
              params: string[] | null, capture: string[], wantLogits: boolean): Promise<{
    loss: number; nTargets: number; grads: Record<string, Float32Array>
    captures: Record<string, { x: Float32Array; d: Float32Array }>; logits?: Float32Array
  }>
  generate(ids: Int32Array, B: number, T: number, mask: Int32Array | null, maxNewTokens: number,
           temperature: number, topK: number, eosTokenId: number, seed: number, useCache: boolean):
    Promise<{ tokens: Int32Array; n: number }>
  save(path: string, metadata: Record<string, string>): Promise<void>
  dispose(): void
}

export interface NativeConfig {
  nLayer: number; nHead: number; nEmbd: number; nInner: number; vocabSize: number
  nPositions: number; layerNormEpsilon: number
}

export interface NativeAddon {
  numThreads(): number
  setNumThreads(n: number): void
  gemmBackend(): string
  loadModel(path: string, config: NativeConfig): Promise<NativeModel>
  randomModel(config: NativeConfig, seed: number): Promise<NativeModel>
  safetensorsRead(path: string): Promise<{
    metadata: Record<string, string>
    tensors: Record<string, { dtype: string; shape: number[]; data: Float32Array | null }>
  }>
  safetensorsWrite(path: string, tensors: { name: string; shape: number[]; data: Float32Array }[],
                   metadata: Record<string, string>): Promise<void>
  testing: any
}

let addon: NativeAddon | undefined

export function native(): NativeAddon {
  if (addon) return addon
  const file = process.env.NODE_MEND_ADDON || path.join(__dirname, '..', 'build', 'Release', 'node_mend.node')
  try {
    addon = require(file) as NativeAddon
  } catch (e) {
    throw mendError('ERR_NATIVE_MISSING',
      `node-mend's native addon could not be loaded from ${file} (${(e as Error).message}). ` +
      'Rebuild it with `npm rebuild node-mend` (needs cmake >= 3.15 and a C++17 compiler).')
  }
  return addon
}
