// The CPU decoding engine: the GPT of gptfast/model.py with a KV cache, and
// the autoregressive loop (prefill, one token at a time, sampling, stopping)
// entirely in C++.  Python is called back only to stream tokens out.
//
// Model: pre-LN blocks  x += proj(attn(LN1(x)));  x += fc2(relu(fc1(LN2(x))))
// then LN_f and lm_head; learned or sinusoidal positions; biases optional;
// head size hs = n_embd // n_head, so the attention width I = H * hs may be
// smaller than n_embd.  Weights: the state-dict names of gptfast/model.py.
//
// Batching: a forward pass takes any list of rows (sequence slot, position,
// token) - a new or sliding sequence contributes its whole window (a
// prefill), a decoding sequence its last token - so sequences of different
// lengths advance together and every weight is read once per step for all.
//
// Context window policy (gptfast/reference/generate.py implements the same
// rule in Python, with and without a cache):
//   start = max(0, len(prompt) - block_size)      the window is tokens[start:]
//   before computing the logits of the next token, if len(tokens) - start
//   exceeds block_size, start = len(tokens) - window_keep and the cache is
//   rebuilt by a prefill of tokens[start:] at positions 0..window_keep-1.
// window_keep = block_size reproduces the seeds' crop-every-step loop exactly
// (every step past the window is then a full prefill); smaller values trade
// that for a prefill only every block_size - window_keep + 1 tokens.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "huge_pages.h"
#include "matvec.h"
#include "sampling.h"
#include "thread_pool.h"

namespace gptfast {

struct ModelShape {
  int vocab_size = 0, block_size = 0, n_layer = 0, n_head = 0, n_embd = 0;
  float ln_eps = 1e-5f;
  int head_size() const { return n_embd / n_head; }
  int inner() const { return n_head * head_size(); }  // attention width I
};

// A borrowed tensor: float32 data, or 16-bit words for matrices stored in 16 bits.
struct TensorView {
  const void* data = nullptr;
  bool is_float32 = true;
  std::vector<int64_t> shape;
};
using TensorMap = std::map<std::string, TensorView>;

// Why a sequence stopped.
enum class Finish { Running = 0, Length, StopToken, Callback };
const char* finish_name(Finish f);

struct GenerateRequest {
  std::vector<std::vector<int>> prompts;  // B prompts, each non-empty
  int max_new_tokens = 0;
  SamplingParams params;
  uint64_t seed = 0;
  std::vector<uint64_t> seq_ids;  // RNG sequence index per prompt (default 0..B-1)
  std::vector<int> stop_ids;      // a sampled stop id ends its sequence and is not emitted
  int window_keep = 0;            // 0 = block_size / 2 (at least 1)
  int callback_every = 1;         // steps between callbacks
};

struct GenerateResult {
  std::vector<std::vector<int>> tokens;  // new tokens per sequence (stop ids excluded)
  std::vector<Finish> finish;
  int64_t prefill_rows = 0;  // rows run through prefills (prompt + window slides; a shared one once)
  double first_token_s = 0;  // seconds until every sequence had its first token
  // Where the time went (seconds of wall clock, all steps).
  double linear_s = 0, attention_s = 0, other_forward_s = 0, sampling_s = 0, callback_s = 0;
};

// Streaming: called with the tokens each sequence produced since the last
// call (empty for finished ones); may set stop[i] = 1 to finish sequence i,
// and returns false to finish them all.
using StreamCallback = std::function<bool(const std::vector<std::vector<int>>& fresh, std::vector<uint8_t>& stop)>;

class Engine {
 public:
  // Copies the weights.  Matrices come as float32, or as 16-bit words of
  // `weight_type`; vectors (LayerNorm, biases) always as float32.  Sinusoidal
  // models pass their table as "pos_table" (block_size, n_embd) float32.
  // Keys and values are cached as `kv_type`: 16 bits halve the bytes that
  // attention reads (a third of a step's memory traffic at batch 8 on the
  // quijote preset, more at long contexts).
  Engine(const ModelShape& shape, const TensorMap& tensors, WeightType weight_type, int threads,
         WeightType kv_type = WeightType::F32);

  const ModelShape& shape() const { return shape_; }
  WeightType weight_type() const { return weight_type_; }
  WeightType kv_type() const { return kv_type_; }
  int threads() const { return pool_.size(); }
  // Weight bytes one decoding step reads (every matrix once, embeddings aside).
  size_t weight_bytes_per_step() const;

  // Logits (T, V) of tokens at positions 0..T-1 (T <= block_size), row-major in `out`.
  void forward_logits(const std::vector<int>& tokens, std::vector<float>& out);

  GenerateResult generate(const GenerateRequest& request, const StreamCallback& callback);

 private:
  struct Layer {
    std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // b empty without biases
    Matrix qkv, proj, fc, fc_proj;
    std::vector<float> qkv_b, proj_b, fc_b, fc_proj_b;
  };
  // One activation row of a forward pass: token `token` of sequence slot
  // `seq` at `pos`.  `prefill`: a row of a window computed in one pass, whose
  // keys and values this pass has just written.  Keys and values at
  // positions 0..shared_len-1 are read from slot `shared_from` when it is
  // >= 0 (a prefill shared with other sequences: see generate()).
  struct Row {
    int seq, pos, token;
    bool prefill = false;
    int shared_from = -1, shared_len = 0;
  };

  // Wall-clock seconds spent in the parts of forward(), accumulated.
  struct ForwardTimes {
    double linear = 0, attention = 0, total = 0;
  };
  void forward(const std::vector<Row>& rows, const std::vector<int>& logit_rows, float* logits);
  void ensure_cache(int sequences);
  void layer_norm(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* y, int N) const;
  void linear(const Matrix& W, const std::vector<float>& bias, const float* X, float* Y, int N, Epilogue e);
  void attention(const std::vector<Row>& rows, int layer, const float* qkv, float* out);
  // The (block_size, hs) keys or values of one head, elements of kv_type_.
  uint8_t* k_cache(int layer, int seq, int head) { return cache_at(kcache_, layer, seq, head); }
  uint8_t* v_cache(int layer, int seq, int head) { return cache_at(vcache_, layer, seq, head); }
  uint8_t* cache_at(const HugeBuffer& c, int layer, int seq, int head);

  ModelShape shape_;
  WeightType weight_type_, kv_type_;
  HugeBuffer weight_storage_;  // the packed data of every Matrix below
  Matrix tok_emb_, pos_emb_;  // pos_emb_: learned weights, or the sinusoidal table (float32)
  std::vector<Layer> layers_;
  std::vector<float> lnf_w_, lnf_b_, lm_head_b_;
  Matrix lm_head_;  // empty when tied: tok_emb_ is used
  const Matrix& head_matrix() const { return lm_head_.empty() ? tok_emb_ : lm_head_; }

  ThreadPool pool_;
  // One forward_logits / generate at a time per engine: other threads wait;
  // a call from the engine's own stream callback (same thread) is an error
  // instead of a deadlock.
  class BusyGuard {
   public:
    explicit BusyGuard(Engine& e);
    ~BusyGuard();

   private:
    Engine& e_;
  };
  std::mutex busy_;
  std::atomic<std::thread::id> busy_owner_{};

  // KV cache: (n_layer, sequences, H, block_size, hs) each, as kv_type_; on
  // huge pages, since batched decoding streams it every step.
  int cache_sequences_ = 0;
  HugeBuffer kcache_, vcache_;
  // Activations of the current forward, (N, width) row-major.
  std::vector<float> x_, h_, qkv_, att_, ff_, head_in_;
  std::vector<std::vector<float>> scores_;  // per worker, block_size
  ForwardTimes times_;
};

}  // namespace gptfast
