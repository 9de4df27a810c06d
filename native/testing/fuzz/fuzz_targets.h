// fuzz_targets.h — the fuzz targets (plain C++, no Node): each takes arbitrary bytes, runs one
// validator on them and returns 0, or a non-zero FuzzFinding when an invariant broke (the libFuzzer
// driver traps on it; the testing addon's fuzzReplay returns it, so `npm test` replays the corpus).
//   fuzz_safetensors: the safetensors header parser (SafetensorsFile::from_memory) and as_f32.
//   fuzz_validators:  the editor (check_editor, then an edit with it), edit-log (Overlay::build,
//                     then a forward) and checkpoint (EditorTrainer::set_optimizer_state/set_grads)
//                     validators, on structures decoded from the bytes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mend {
namespace fuzz {

enum FuzzFinding : int {
  kFine = 0,
  kBadCode = 1,       // a refusal without a known error code or a message
  kIncoherent = 2,    // an accepted file or structure that does not hold what it claims
  kNonFinite = 3,     // something accepted led to NaN/Inf output
};

int fuzz_safetensors(const uint8_t* data, size_t size);
int fuzz_validators(const uint8_t* data, size_t size);

}  // namespace fuzz
}  // namespace mend
