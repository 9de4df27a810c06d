// The testing addon, build/Release/node_mend_testing.node (CMake option NODE_MEND_TESTING, on for
// `npm install` builds): every CPU kernel as a synchronous function, the GEMM check and the
// process-global GEMM backend switch, none of which the product addon carries.
// NODE_MEND_TESTING_ADDON overrides the path (for a scratch build).
import path from 'node:path'

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function testingAddon(): any {
  const file = process.env.NODE_MEND_TESTING_ADDON
    ? path.resolve(process.env.NODE_MEND_TESTING_ADDON)
    : path.join(__dirname, '../../build/Release/node_mend_testing.node')
  return require(file)
}
