// tensors.h — GPT-2's tensors as structs of named pointers with shape comments (llm.c's
// ParameterTensors / ActivationTensors), and the one table each that names, shapes, numbers and
// sizes them. A table is a visitor: it calls f once per tensor, in layout order, so the size
// formula, the pointer assignment and the parameter numbering all come from the same lines and
// cannot disagree. Nothing else in native/ does index arithmetic on parameters.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/common.h"

namespace mend {

struct GPT2Config {
  int n_layer = 12, n_head = 12, n_embd = 768, n_inner = 0 /* 0 = 4*n_embd */, vocab_size = 50257,
      n_positions = 1024;
  float layer_norm_eps = 1e-5f;
  int inner() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
  Status validate() const;
};

// ---- parameters -------------------------------------------------------------------------------

// Backward walks each block top-down through six ops, numbered bottom-up so that "the lowest op
// anything needs" is a minimum: op k of block l is l * kBlockOps + k. The embeddings come below
// every block (op -1) and ln_f above (op n_layer * kBlockOps).
enum BlockOp { kOpLn1, kOpAttn, kOpAttnProj, kOpLn2, kOpFc, kOpFcProj, kBlockOps };
inline int backward_op(int layer, BlockOp op) { return layer * kBlockOps + op; }
inline int backward_op_layer(int op) { return op / kBlockOps; }  // the block of op >= 0
inline int final_op(int n_layer) { return n_layer * kBlockOps; }  // ln_f, above every block
constexpr int kOpEmbedding = -1;

enum class Dim { None, C, C3, I, V, P };  // 1, n_embd, 3*n_embd, inner, vocab_size, n_positions
int64_t dim_size(const GPT2Config& cfg, Dim d);

// One row of the parameter table.
struct ParamSpec {
  const char* name;  // Hugging Face name without "transformer." (and without "h.<l>." in a block)
  Dim rows, cols;    // shape (rows) or (rows, cols); Conv1D weights are (in, out)
  int op;            // in a block: its BlockOp; outside: kOpEmbedding or kBlockOps (ln_f)
  bool conv1d;       // a Conv1D weight matrix (what MEND may edit and capture)
};

template <class P>
struct BlockParams {
  P ln1w;      // (C)
  P ln1b;      // (C)
  P qkvw;      // (C, 3C)  attn.c_attn
  P qkvb;      // (3C)
  P attprojw;  // (C, C)   attn.c_proj
  P attprojb;  // (C)
  P ln2w;      // (C)
  P ln2b;      // (C)
  P fcw;       // (C, I)   mlp.c_fc
  P fcb;       // (I)
  P fcprojw;   // (I, C)   mlp.c_proj
  P fcprojb;   // (C)
};

// P is what each slot holds: const float* (weights), float* (gradients, null = not wanted), int
// (the parameter's index), Capture* (capture requests, null = none).
template <class P>
struct ParameterTensors {
  P wte;                          // (V, C); lm_head.weight is tied to it
  P wpe;                          // (maxT, C)
  std::vector<BlockParams<P>> h;  // (L)
  P lnfw;                         // (C)
  P lnfb;                         // (C)
};

// THE parameter table: f(slot, spec, layer) for every parameter in index order (layer -1 outside
// the blocks). t.h must already hold n_layer blocks.
template <class P, class F>
void visit_params(ParameterTensors<P>& t, F&& f) {
  f(t.wte, ParamSpec{"wte.weight", Dim::V, Dim::C, kOpEmbedding, false}, -1);
  f(t.wpe, ParamSpec{"wpe.weight", Dim::P, Dim::C, kOpEmbedding, false}, -1);
  for (int l = 0; l < (int)t.h.size(); l++) {
    BlockParams<P>& b = t.h[l];
    f(b.ln1w, ParamSpec{"ln_1.weight", Dim::C, Dim::None, kOpLn1, false}, l);
    f(b.ln1b, ParamSpec{"ln_1.bias", Dim::C, Dim::None, kOpLn1, false}, l);
    f(b.qkvw, ParamSpec{"attn.c_attn.weight", Dim::C, Dim::C3, kOpAttn, true}, l);
    f(b.qkvb, ParamSpec{"attn.c_attn.bias", Dim::C3, Dim::None, kOpAttn, false}, l);
    f(b.attprojw, ParamSpec{"attn.c_proj.weight", Dim::C, Dim::C, kOpAttnProj, true}, l);
    f(b.attprojb, ParamSpec{"attn.c_proj.bias", Dim::C, Dim::None, kOpAttnProj, false}, l);
    f(b.ln2w, ParamSpec{"ln_2.weight", Dim::C, Dim::None, kOpLn2, false}, l);
    f(b.ln2b, ParamSpec{"ln_2.bias", Dim::C, Dim::None, kOpLn2, false}, l);
    f(b.fcw, ParamSpec{"mlp.c_fc.weight", Dim::C, Dim::I, kOpFc, true}, l);
    f(b.fcb, ParamSpec{"mlp.c_fc.bias", Dim::I, Dim::None, kOpFc, false}, l);
    f(b.fcprojw, ParamSpec{"mlp.c_proj.weight", Dim::I, Dim::C, kOpFcProj, true}, l);
    f(b.fcprojb, ParamSpec{"mlp.c_proj.bias", Dim::C, Dim::None, kOpFcProj, false}, l);
  }
  f(t.lnfw, ParamSpec{"ln_f.weight", Dim::C, Dim::None, kBlockOps, false}, -1);
  f(t.lnfb, ParamSpec{"ln_f.bias", Dim::C, Dim::None, kBlockOps, false}, -1);
}

// The named view of a flat per-parameter vector (flat[i] belongs to parameter i).
template <class P>
ParameterTensors<P> point_params(const std::vector<P>& flat, int n_layer) {
  ParameterTensors<P> t;
  t.h.resize(n_layer);
  size_t i = 0;
  visit_params(t, [&](P& slot, const ParamSpec&, int) { slot = flat[i++]; });
  return t;
}

// What the table says about one parameter.
struct ParamInfo {
  std::string name;            // canonical Hugging Face name, "transformer.h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // Conv1D weights are (in, out)
  int layer = -1;              // its block, -1 for wte, wpe, ln_f
  int op = 0;                  // the backward op that produces its gradient (see BlockOp)
  bool conv1d = false;         // a Conv1D weight matrix
  int64_t numel() const;
};
// Every parameter of a model of this config, in index order.
std::vector<ParamInfo> param_table(const GPT2Config& cfg);

// ---- activations ------------------------------------------------------------------------------

// Activations of one block, saved for backward (or scratch shared between blocks in inference).
struct BlockActs {
  float* ln1;       // (N,C)
  float* ln1_mean;  // (N)
  float* ln1_rstd;  // (N)
  float* qkv;       // (N,3C)
  float* att;       // (B,NH,T,T) softmax probabilities, or null when not saved
  float* atty;      // (N,C) attention output, before attn.c_proj
  float* res2;      // (N,C) residual after attention
  float* ln2;       // (N,C)
  float* ln2_mean;  // (N)
  float* ln2_rstd;  // (N)
  float* fch;       // (N,I) before GELU
  float* fch_gelu;  // (N,I)
  float* res3;      // (N,C) block output
};

// One allocation for every activation of a call (N = B*T rows). Blocks >= save_from keep their own
// activations; the blocks below share one scratch set (their activations are not needed backward).
struct ActivationTensors {
  FloatBuf buf;
  float* encoded;            // (N,C)
  std::vector<BlockActs> h;  // (L)
  float* lnf;                // (N,C)
  float* lnf_mean;           // (N)
  float* lnf_rstd;           // (N)
  void allocate(const GPT2Config& cfg, int B, int T, int save_from, bool save_att);
};

}  // namespace mend
