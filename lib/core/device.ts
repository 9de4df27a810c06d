/**
 * Devices: where a model's tensors live and its compute runs. 'cpu' is the default and the only one
 * that runs today; 'cuda' is accepted as a name but refused with a coded error that says why
 * (ERR_NO_DEVICE: this addon has no CUDA backend, or the CUDA runtime finds no GPU), never run on
 * the CPU instead. Where a GPU is present the CUDA kernels exist (native/kernels/cuda) but a
 * device-resident model does not yet, so 'cuda' is refused there too (ERR_NOT_IMPLEMENTED).
 */
import { mendError } from './errors'
import { invalidArg } from './check'
import { native } from './native'

export type Device = 'cpu' | 'cuda'
export const DEVICES: readonly Device[] = ['cpu', 'cuda']

/** What the addon says about CUDA: built with the backend, a GPU found (else why not), which one. */
export interface CudaInfo { built: boolean; available: boolean; reason: string; device: string }

export function cudaInfo(): CudaInfo {
  return native().cudaInfo()
}

/** The `device` option of `what`: 'cpu' when absent; 'cuda' throws unless it can run (see above). */
export function checkDevice(v: unknown, what: string): Device {
  if (v === undefined) return 'cpu'
  if (typeof v !== 'string' || !DEVICES.includes(v as Device)) throw invalidArg(DEVICES.map((d) => `"${d}"`).join(' or '), `${what} device`, v)
  if (v === 'cuda') {
    const info = cudaInfo()
    if (!info.built || !info.available) {
      throw mendError('ERR_NO_DEVICE', `${what}: device "cuda" is not available: ${info.reason}. Use device: "cpu" (the default).`)
    }
    throw mendError('ERR_NOT_IMPLEMENTED', `${what}: device "cuda" found ${info.device}, but this node-mend has the CUDA kernels only, ` +
      'not yet a model that lives on the GPU; it is refused rather than run on the CPU. Use device: "cpu".')
  }
  return v as Device
}
