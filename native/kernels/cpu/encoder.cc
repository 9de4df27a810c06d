// encoder.cc — GPT-2 input embedding: token embedding (wte) plus position embedding (wpe), and the
// position ids themselves.
// encoder_positions: pos (B,T) =, n_real (B) =
// encoder_forward:   out (B,T,C) =  (encoder_forward_packed: wte kept as its packed transpose)
// encoder_backward:  dwte (V,C) +=, dwpe (maxT,C) +=
// Ids and positions are trusted here (the callers validate them against V and n_positions).
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {

void encoder_positions(int32_t* pos, int32_t* n_real, const int32_t* mask, int B, int T) {
  // pos (B,T), n_real (B) or null, mask (B,T) or null
  for (int b = 0; b < B; b++) {
    int c = 0;
    for (int t = 0; t < T; t++) {
      c += (mask ? mask[b * T + t] : 1) != 0;
      pos[(size_t)b * T + t] = c > 1 ? c - 1 : 0;
    }
    if (n_real) n_real[b] = c;
  }
}

namespace {

// out (B,T,C) = row(ids[b,t]) + wpe[p(b,t)]: row(id, o) writes the token's embedding into o (C floats).
template <class Row>
void encoder_rows(float* out, const int32_t* ids, const int32_t* pos, const float* wpe, int B, int T, int C, int pos0,
                  const Row& row) {
  const int64_t rows = (int64_t)B * T;
  const int64_t grain = C >= 4096 ? 1 : 4096 / (C > 0 ? C : 1);
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int t = (int)(r % T);
      const int p = pos ? pos[r] : pos0 + t;
      float* __restrict o = out + r * C;                  // (C)
      row(ids[r], o);
      const float* __restrict pe = wpe + (int64_t)p * C;  // (C)
      for (int c = 0; c < C; c++) o[c] += pe[c];
    }
  }, grain);
}

}  // namespace

void encoder_forward(float* out, const int32_t* ids, const int32_t* pos, const float* wte, const float* wpe,
                     int B, int T, int C, int pos0) {
  // out (B,T,C), ids (B,T), pos (B,T) or null, wte (V,C), wpe (maxT,C)
  encoder_rows(out, ids, pos, wpe, B, T, C, pos0,
               [&](int32_t id, float* o) { std::memcpy(o, wte + (int64_t)id * C, sizeof(float) * C); });
}

void encoder_forward_packed(float* out, const int32_t* ids, const int32_t* pos, const PackedMatrix& wte_t,
                            const float* wpe, int B, int T, int C, int pos0) {
  // as encoder_forward, with wte given as its packed transpose (C, V): wte[v][c] = wte_t(c, v)
  encoder_rows(out, ids, pos, wpe, B, T, C, pos0, [&](int32_t id, float* o) { packed_column(wte_t, id, o); });
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, const int32_t* pos,
                      int B, int T, int C) {
  // dwte (V,C) or null, dwpe (maxT,C) or null, dout (B,T,C), ids (B,T), pos (B,T) or null
  if (!dwte && !dwpe) return;
  const int64_t rows = (int64_t)B * T;
  // Ids (and positions) may repeat, so rows of dwte are shared between (b,t): split the work over
  // channel chunks instead, each thread owning columns [c0, c1) of every row it touches.
  const int64_t grain = 64;  // 256 bytes of each row per thread at least
  auto body = [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < rows; r++) {
      const float* __restrict d = dout + r * C;  // (C)
      if (dwte) {
        float* __restrict w = dwte + (int64_t)ids[r] * C;  // (C)
        for (int64_t c = c0; c < c1; c++) w[c] += d[c];
      }
      if (dwpe) {
        const int p = pos ? pos[r] : (int)(r % T);
        float* __restrict w = dwpe + (int64_t)p * C;  // (C)
        for (int64_t c = c0; c < c1; c++) w[c] += d[c];
      }
    }
  };
  if (rows * C < (1 << 15)) body(0, C);
  else parallel_for(C, body, grain);
}

}  // namespace mend
