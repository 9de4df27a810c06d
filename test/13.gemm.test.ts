// 13.gemm — the GEMM check (native/testing/gemm_check.cc, also bench/gemm_check.cc) in npm test:
// the AVX2/FMA micro-kernel (where the CPU has it) and the portable path, each against a float64
// triple loop, over edge sizes, random shapes through every driver (dot, skinny, general) with
// strides, the blocking boundaries, alpha = 0, and concurrent calls, with 1 and N threads. The error
// of each element is measured against its float32 rounding bound |alpha| Σ|a·b| + |beta·c|; a
// section fails when any element passes 1e-5 of it, when the padding of C is written or when a NaN
// appears. Each section names its worst case and prints its largest difference.
import t from 'tap'
import { testingAddon } from './helpers/testing-addon'

const K = testingAddon()

t.test('gemm check: backend', async (tt) => {
  const backend = K.gemmBackend()
  tt.ok(['avx512f', 'avx2-fma', 'portable'].includes(backend), `gemm backend is ${backend} (the portable path is checked too)`)
})

const sections: number = K.gemmCheckSections()
for (let s = 0; s < sections; s++) {
  t.test(`gemm check section ${s}`, async (tt) => {
    const r = K.gemmCheck(s)
    tt.ok(r.runs > 0, `${r.section}: ${r.runs} runs`)
    tt.equal(r.failures, 0,
      `${r.section}: ${r.failures} failures; largest |diff| ${r.maxAbs.toExponential(2)}, ` +
      `${r.maxRel.toExponential(2)} of the bound (limit ${r.limit}); worst: ${r.worst}`)
    for (const f of r.failed) tt.comment(`FAIL ${f}`)
  })
}
