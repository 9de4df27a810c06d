/**
 * Seeded randomness for everything that must be reproducible (data splits, training order, editor
 * initialisation): the mulberry32 generator, Fisher–Yates and Box–Muller. No Math.random anywhere.
 */

/** mulberry32: a deterministic stream of uint32 values. */
export function mulberry32U32(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** A deterministic PRNG returning floats in [0, 1) (mulberry32). */
export function mulberry32(seed: number): () => number {
  const next = mulberry32U32(seed)
  return () => next() / 4294967296
}

/** A shuffled copy of `xs` (Fisher–Yates from the end, j = ⌊rng()·(i + 1)⌋). */
export function shuffle<T>(rng: () => number, xs: readonly T[]): T[] {
  const a = xs.slice()
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    const tmp = a[i]
    a[i] = a[j]
    a[j] = tmp
  }
  return a
}

/** Fills `out` with standard normals (Box–Muller on mulberry32 uniforms in (0, 1)). */
export function fillNormal(out: Float32Array, seed: number): void {
  const next = mulberry32U32(seed)
  const uniform = () => (next() + 0.5) / 4294967296
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())), th = 2 * Math.PI * uniform()
    out[i] = r * Math.cos(th)
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(th)
  }
}
