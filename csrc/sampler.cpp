#include "sampler.h"

#include "attention.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>

namespace gptfast {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

const char* finish_name(Finish f) {
  switch (f) {
    case Finish::Running: return "running";
    case Finish::Length: return "length";
    case Finish::StopToken: return "stop";
    case Finish::Callback: return "callback";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Loading the weights
// ---------------------------------------------------------------------------

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// Reads the tensors the engine keeps, packing its matrices one after the
// other into one block on huge pages (huge_pages.h), which the engine then
// owns.
class WeightReader {
 public:
  WeightReader(const TensorMap& tensors, WeightType type) : tensors_(tensors), type_(type) {
    size_t bytes = 0;  // every matrix of the map: at least what the engine keeps
    for (const auto& [name, t] : tensors)
      if (t.shape.size() == 2)
        bytes += Matrix::packed_bytes(type_of(t), static_cast<int>(t.shape[0]), static_cast<int>(t.shape[1]));
    storage_ = allocate_huge_buffer(bytes);
    free_ = storage_.get();
  }

  bool has(const std::string& name) const { return tensors_.count(name) > 0; }

  Matrix matrix(const std::string& name, int rows, int cols) {
    const TensorView& t = get(name, {rows, cols});
    Matrix m(type_of(t), rows, cols, t.data, free_);
    free_ += Matrix::packed_bytes(m.type(), rows, cols);
    return m;
  }

  // The block that the matrices read so far live in.
  HugeBuffer take_storage() { return std::move(storage_); }

  // A float32 vector of n, or empty when `optional` and absent.
  std::vector<float> vector(const std::string& name, int n, bool optional) const {
    if (optional && !has(name)) return {};
    const TensorView& t = get(name, {n});
    if (!t.is_float32) throw std::invalid_argument(name + ": vectors must be float32");
    const float* p = static_cast<const float*>(t.data);
    return std::vector<float>(p, p + n);
  }

 private:
  const TensorView& get(const std::string& name, const std::vector<int64_t>& shape) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw std::invalid_argument("missing weight " + name);
    if (it->second.shape != shape)
      throw std::invalid_argument(name + " has shape " + shape_str(it->second.shape) + ", expected " +
                                  shape_str(shape));
    return it->second;
  }

  WeightType type_of(const TensorView& t) const { return t.is_float32 ? WeightType::F32 : type_; }

  const TensorMap& tensors_;
  WeightType type_;
  HugeBuffer storage_;
  uint8_t* free_ = nullptr;  // where the next matrix goes
};

}  // namespace

Engine::Engine(const ModelShape& shape, const TensorMap& tensors, WeightType weight_type, int threads,
               WeightType kv_type)
    : shape_(shape), weight_type_(weight_type), kv_type_(kv_type), pool_(threads) {
  const ModelShape& s = shape_;
  if (s.vocab_size <= 0 || s.block_size <= 0 || s.n_layer <= 0 || s.n_head <= 0 || s.n_embd < s.n_head)
    throw std::invalid_argument("invalid model shape");
  const int C = s.n_embd, I = s.inner(), V = s.vocab_size;
  WeightReader w(tensors, weight_type);
  tok_emb_ = w.matrix("tok_emb.weight", V, C);
  pos_emb_ = w.has("pos_emb.weight") ? w.matrix("pos_emb.weight", s.block_size, C)
                                     : w.matrix("pos_table", s.block_size, C);
  for (int i = 0; i < s.n_layer; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Layer L;
    L.ln1_w = w.vector(p + "ln1.weight", C, false);
    L.ln1_b = w.vector(p + "ln1.bias", C, true);
    L.qkv = w.matrix(p + "attn.qkv.weight", 3 * I, C);
    L.qkv_b = w.vector(p + "attn.qkv.bias", 3 * I, true);
    L.proj = w.matrix(p + "attn.proj.weight", C, I);
    L.proj_b = w.vector(p + "attn.proj.bias", C, true);
    L.ln2_w = w.vector(p + "ln2.weight", C, false);
    L.ln2_b = w.vector(p + "ln2.bias", C, true);
    L.fc = w.matrix(p + "mlp.fc.weight", 4 * C, C);
    L.fc_b = w.vector(p + "mlp.fc.bias", 4 * C, true);
    L.fc_proj = w.matrix(p + "mlp.proj.weight", C, 4 * C);
    L.fc_proj_b = w.vector(p + "mlp.proj.bias", C, true);
    layers_.push_back(std::move(L));
  }
  lnf_w_ = w.vector("ln_f.weight", C, false);
  lnf_b_ = w.vector("ln_f.bias", C, true);
  if (w.has("lm_head.weight")) lm_head_ = w.matrix("lm_head.weight", V, C);  // absent = tied to tok_emb
  lm_head_b_ = w.vector("lm_head.bias", V, true);
  weight_storage_ = w.take_storage();
  scores_.assign(pool_.size(), std::vector<float>(s.block_size));
}

size_t Engine::weight_bytes_per_step() const {
  size_t n = head_matrix().bytes();
  for (const Layer& L : layers_) n += L.qkv.bytes() + L.proj.bytes() + L.fc.bytes() + L.fc_proj.bytes();
  return n;
}

Engine::BusyGuard::BusyGuard(Engine& e) : e_(e) {
  if (e.busy_owner_.load() == std::this_thread::get_id())
    throw std::logic_error("the engine is busy generating: it cannot be called from its own stream callback");
  e.busy_.lock();
  e.busy_owner_.store(std::this_thread::get_id());
}

Engine::BusyGuard::~BusyGuard() {
  e_.busy_owner_.store(std::thread::id());
  e_.busy_.unlock();
}

// ---------------------------------------------------------------------------
// The forward pass over a set of rows
// ---------------------------------------------------------------------------

void Engine::ensure_cache(int sequences) {
  if (sequences <= cache_sequences_) return;
  const size_t n = static_cast<size_t>(shape_.n_layer) * sequences * shape_.n_head * shape_.block_size *
                   shape_.head_size() * weight_type_bytes(kv_type_);
  for (HugeBuffer* c : {&kcache_, &vcache_}) {
    *c = allocate_huge_buffer(n);
    std::memset(c->get(), 0, n);
  }
  cache_sequences_ = sequences;
}

uint8_t* Engine::cache_at(const HugeBuffer& c, int layer, int seq, int head) {
  const size_t slot = (static_cast<size_t>(layer) * cache_sequences_ + seq) * shape_.n_head + head;
  return c.get() + slot * shape_.block_size * shape_.head_size() * weight_type_bytes(kv_type_);
}

// sum_c x[c] (Squares = false) or sum_c (x[c] - mean)^2 (true) in double, as
// 8 interleaved partial sums: eight independent add chains that the compiler
// turns into vector code.  One running sum is one long chain of dependent
// double adds, ~1 us per 384-wide row: at batch 8 that was most of a
// decoding step's time outside the linear layers.
template <bool Squares>
static double sum8(const float* x, int C, double mean = 0.0) {
  auto term = [mean](float v) { return Squares ? (v - mean) * (v - mean) : static_cast<double>(v); };
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int C8 = C & ~7;
  for (int c = 0; c < C8; c += 8)
    for (int j = 0; j < 8; ++j) acc[j] += term(x[c + j]);
  for (int c = C8; c < C; ++c) acc[c - C8] += term(x[c]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// y = (x - mean) / sqrt(var + eps) * w + b per row, like nn.LayerNorm (biased
// variance); the statistics in double, so the float32 result is what PyTorch's
// gets up to the last bit or two.
void Engine::layer_norm(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* y,
                        int N) const {
  const int C = shape_.n_embd;
  for (int n = 0; n < N; ++n) {
    const float* xr = x + static_cast<size_t>(n) * C;
    float* yr = y + static_cast<size_t>(n) * C;
    const double mean = sum8<false>(xr, C) / C;
    const double var = sum8<true>(xr, C, mean);
    const float rstd = static_cast<float>(1.0 / std::sqrt(var / C + shape_.ln_eps));
    const float m = static_cast<float>(mean);
    for (int c = 0; c < C; ++c) yr[c] = (xr[c] - m) * rstd * w[c] + (b.empty() ? 0.0f : b[c]);
  }
}

// Y (N, W.rows) = epilogue(X (N, W.cols) W^T + bias), the weight panels shared
// out to the threads in chunks of 64 rows: contiguous, so the
// kernels' prefetches of the next panel mostly land in their own chunk.
void Engine::linear(const Matrix& W, const std::vector<float>& bias, const float* X, float* Y, int N, Epilogue e) {
  const auto t0 = Clock::now();
  const float* b = bias.empty() ? nullptr : bias.data();
  pool_.parallel_for(W.panels(), 64 / kPanelRows,
                     [&](int p0, int p1, int) { linear_panels(W, b, X, W.cols(), Y, W.rows(), N, p0, p1, e); });
  times_.linear += seconds_since(t0);
}

// Causal attention of every (row, head) over its sequence's cached keys and
// values at positions 0..pos (those of this pass already written).
void Engine::attention(const std::vector<Row>& rows, int layer, const float* qkv, float* out) {
  const int H = shape_.n_head, hs = shape_.head_size(), I = shape_.inner();
  const auto t0 = Clock::now();
  const int tasks = static_cast<int>(rows.size()) * H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  pool_.parallel_for(tasks, 1, [&](int begin, int end, int worker) {
    float* s = scores_[worker].data();  // (pos + 1) scores
    for (int t = begin; t < end; ++t) {
      const Row& row = rows[t / H];
      const int h = t % H, T = row.pos + 1;
      const float* q = qkv + static_cast<size_t>(t / H) * 3 * I + h * hs;   // (hs)
      CachedKV kv{kv_type_, k_cache(layer, row.seq, h), v_cache(layer, row.seq, h), T};  // (T, hs) each
      if (row.shared_from >= 0) {
        kv.shared_K = k_cache(layer, row.shared_from, h);
        kv.shared_V = v_cache(layer, row.shared_from, h);
        kv.shared = row.shared_len;
      }
      kv.cold = !row.prefill;
      attend(kv, q, hs, scale, s, out + static_cast<size_t>(t / H) * I + h * hs);
    }
  });
  times_.attention += seconds_since(t0);
}

// Runs `rows` through the model, appending their keys/values to the cache,
// and writes the logits of rows[logit_rows[i]] to logits + i * V.
void Engine::forward(const std::vector<Row>& rows, const std::vector<int>& logit_rows, float* logits) {
  const auto t0 = Clock::now();
  const int N = static_cast<int>(rows.size()), C = shape_.n_embd, I = shape_.inner(), hs = shape_.head_size();
  x_.resize(static_cast<size_t>(N) * C);
  h_.resize(static_cast<size_t>(N) * C);
  qkv_.resize(static_cast<size_t>(N) * 3 * I);
  att_.resize(static_cast<size_t>(N) * I);
  ff_.resize(static_cast<size_t>(N) * 4 * C);

  std::vector<float> pos_row(C);
  for (int n = 0; n < N; ++n) {  // x = tok_emb[token] + pos_emb[pos]       (N, C)
    float* xr = x_.data() + static_cast<size_t>(n) * C;
    tok_emb_.row_to_float(rows[n].token, xr);
    pos_emb_.row_to_float(rows[n].pos, pos_row.data());
    for (int c = 0; c < C; ++c) xr[c] += pos_row[c];
  }
  for (int l = 0; l < shape_.n_layer; ++l) {
    const Layer& L = layers_[l];
    layer_norm(x_.data(), L.ln1_w, L.ln1_b, h_.data(), N);
    linear(L.qkv, L.qkv_b, h_.data(), qkv_.data(), N, Epilogue::Store);  // (N, 3I): q | k | v
    const size_t row_bytes = static_cast<size_t>(hs) * weight_type_bytes(kv_type_);
    for (int n = 0; n < N; ++n) {  // append k and v to the cache
      const float* r = qkv_.data() + static_cast<size_t>(n) * 3 * I;
      const size_t at = rows[n].pos * row_bytes;
      for (int h = 0; h < shape_.n_head; ++h) {
        store_floats(kv_type_, r + I + h * hs, k_cache(l, rows[n].seq, h) + at, hs);
        store_floats(kv_type_, r + 2 * I + h * hs, v_cache(l, rows[n].seq, h) + at, hs);
      }
    }
    attention(rows, l, qkv_.data(), att_.data());                            // (N, I)
    linear(L.proj, L.proj_b, att_.data(), x_.data(), N, Epilogue::AddTo);    // x += proj(att)
    layer_norm(x_.data(), L.ln2_w, L.ln2_b, h_.data(), N);
    linear(L.fc, L.fc_b, h_.data(), ff_.data(), N, Epilogue::StoreRelu);     // (N, 4C)
    linear(L.fc_proj, L.fc_proj_b, ff_.data(), x_.data(), N, Epilogue::AddTo);  // x += mlp
  }
  const int M = static_cast<int>(logit_rows.size());
  head_in_.resize(static_cast<size_t>(M) * C);
  for (int i = 0; i < M; ++i)
    layer_norm(x_.data() + static_cast<size_t>(logit_rows[i]) * C, lnf_w_, lnf_b_, head_in_.data() + i * C, 1);
  linear(head_matrix(), lm_head_b_, head_in_.data(), logits, M, Epilogue::Store);  // (M, V)
  times_.total += seconds_since(t0);
}

void Engine::forward_logits(const std::vector<int>& tokens, std::vector<float>& out) {
  BusyGuard busy(*this);
  const int T = static_cast<int>(tokens.size());
  if (T == 0 || T > shape_.block_size)
    throw std::invalid_argument("forward_logits needs 1.." + std::to_string(shape_.block_size) + " tokens, got " +
                                std::to_string(T));
  std::vector<Row> rows;
  std::vector<int> all(T);
  for (int t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= shape_.vocab_size)
      throw std::invalid_argument("token id " + std::to_string(tokens[t]) + " is outside the vocabulary");
    rows.push_back({0, t, tokens[t], true});
    all[t] = t;
  }
  ensure_cache(1);
  out.resize(static_cast<size_t>(T) * shape_.vocab_size);
  forward(rows, all, out.data());
}

// ---------------------------------------------------------------------------
// The decoding loop
// ---------------------------------------------------------------------------

namespace {

void check_request(const GenerateRequest& r, const ModelShape& s) {
  if (r.prompts.empty()) throw std::invalid_argument("generate needs at least one prompt");
  for (size_t b = 0; b < r.prompts.size(); ++b) {
    if (r.prompts[b].empty()) throw std::invalid_argument("prompt " + std::to_string(b) + " is empty");
    for (int t : r.prompts[b])
      if (t < 0 || t >= s.vocab_size)
        throw std::invalid_argument("prompt " + std::to_string(b) + ": token id " + std::to_string(t) +
                                    " is outside the vocabulary 0.." + std::to_string(s.vocab_size - 1));
  }
  if (r.max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  if (!r.seq_ids.empty() && r.seq_ids.size() != r.prompts.size())
    throw std::invalid_argument("seq_ids must have one entry per prompt");
  for (int t : r.stop_ids)
    if (t < 0 || t >= s.vocab_size) throw std::invalid_argument("stop id " + std::to_string(t) + " is outside the vocabulary");
  if (r.window_keep < 0 || r.window_keep > s.block_size)
    throw std::invalid_argument("window_keep must be in 1..block_size (" + std::to_string(s.block_size) + ")");
  if (r.callback_every < 1) throw std::invalid_argument("callback_every must be >= 1");
  r.params.validate(s.vocab_size);
}

}  // namespace

GenerateResult Engine::generate(const GenerateRequest& req, const StreamCallback& callback) {
  BusyGuard busy(*this);
  check_request(req, shape_);
  const auto t0 = Clock::now();
  times_ = ForwardTimes();
  const int B = static_cast<int>(req.prompts.size()), V = shape_.vocab_size, bs = shape_.block_size;
  const int keep = req.window_keep ? req.window_keep : std::max(1, bs / 2);
  std::vector<uint8_t> is_stop(V, 0);
  for (int t : req.stop_ids) is_stop[t] = 1;

  struct Seq {
    std::vector<int> tokens;    // prompt + generated
    int start = 0;              // the window is tokens[start:]
    bool fresh_window = true;   // needs a prefill of its whole window
    std::vector<uint8_t> seen;  // ids in tokens (repetition penalty)
    std::vector<int> fresh;     // generated since the last callback
    // When >= 0: the slot whose cache holds this sequence's first share_len
    // keys and values (since a prefill shared with it).
    int share_from = -1, share_len = 0;
  };
  std::vector<Seq> seqs(B);
  GenerateResult result;
  result.tokens.resize(B);
  result.finish.assign(B, req.max_new_tokens == 0 ? Finish::Length : Finish::Running);
  for (int b = 0; b < B; ++b) {
    Seq& q = seqs[b];
    q.tokens = req.prompts[b];
    q.start = std::max(0, static_cast<int>(q.tokens.size()) - bs);
    q.seen.assign(V, 0);
    for (int t : q.tokens) q.seen[t] = 1;
  }
  ensure_cache(B);

  std::vector<Row> rows;
  std::vector<int> logit_rows, active;
  struct Prefill {
    int seq, logit_row;  // a sequence prefilled in this step, and the row of its logits
  };
  std::vector<Prefill> prefilled;
  std::vector<float> logits;
  std::vector<uint8_t> stop(B);
  std::vector<std::vector<int>> fresh(B);
  std::vector<int> chosen;                                   // (active rows) this step's draws
  std::vector<SamplerWorkspace> workspaces(pool_.size());   // one per pool thread
  int since_callback = 0;
  for (int step = 0;; ++step) {
    active.clear();
    for (int b = 0; b < B; ++b)
      if (result.finish[b] == Finish::Running) active.push_back(b);
    if (active.empty()) break;

    // Rows of this step: a whole window for new or sliding sequences, else
    // the last token.  Sequences whose fresh windows hold the same tokens
    // (--num-samples copies of one prompt) share one prefill: the first
    // computes it, the others take its logits, and until they slide they
    // all read the window's keys and values from its cache (their own
    // slots hold only the positions after it).  The same bits as a prefill
    // of their own, since a row's keys, values and logits depend only on
    // its token, its position and the rows before it (matvec.h,
    // attention.h); and a step reads the prompt's keys and values once,
    // not once per sequence.
    rows.clear();
    logit_rows.clear();
    prefilled.clear();
    for (int b : active) {
      Seq& q = seqs[b];
      const int L = static_cast<int>(q.tokens.size());
      if (L - q.start > bs) {  // the cache is full: slide the window
        q.start = L - keep;
        q.fresh_window = true;
      }
      if (q.fresh_window) {
        // Copies that share a prefill advance one token per step together,
        // so they also slide together: none reads a cache after its rewrite.
        q.fresh_window = false;
        q.share_from = -1;
        auto same_window = [&](const Prefill& p) {
          const Seq& o = seqs[p.seq];
          return std::equal(q.tokens.begin() + q.start, q.tokens.end(), o.tokens.begin() + o.start, o.tokens.end());
        };
        const auto twin = std::find_if(prefilled.begin(), prefilled.end(), same_window);
        if (twin != prefilled.end()) {
          logit_rows.push_back(twin->logit_row);
          for (Seq* s : {&q, &seqs[twin->seq]}) s->share_from = twin->seq, s->share_len = L - q.start;
          continue;
        }
        for (int i = q.start; i < L; ++i) rows.push_back({b, i - q.start, q.tokens[i], true});
        result.prefill_rows += L - q.start;
        prefilled.push_back({b, static_cast<int>(rows.size()) - 1});
      } else {
        rows.push_back({b, L - 1 - q.start, q.tokens[L - 1], false, q.share_from, q.share_len});
      }
      logit_rows.push_back(static_cast<int>(rows.size()) - 1);
    }
    logits.resize(active.size() * static_cast<size_t>(V));
    forward(rows, logit_rows, logits.data());

    // Each row's draw depends only on its own logits, history and counter, so
    // the rows are sampled in parallel (batch 8: 8 sorts of the vocabulary)
    // and applied in order afterwards.
    const auto t_sample = Clock::now();
    const int n_active = static_cast<int>(active.size());
    chosen.resize(n_active);
    std::exception_ptr failure;  // choose_token throws when nothing can be sampled
    std::mutex failure_mutex;
    pool_.parallel_for(n_active, 1, [&](int begin, int end, int worker) {
      for (int i = begin; i < end; ++i) {
        const int b = active[i];
        const uint64_t seq_id = req.seq_ids.empty() ? static_cast<uint64_t>(b) : req.seq_ids[b];
        try {
          chosen[i] = choose_token(logits.data() + static_cast<size_t>(i) * V, V, req.params, seqs[b].seen.data(),
                                   req.seed, seq_id, result.tokens[b].size(), workspaces[worker]);
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
        }
      }
    });
    if (failure) std::rethrow_exception(failure);
    for (int i = 0; i < n_active; ++i) {
      const int b = active[i], t = chosen[i];
      Seq& q = seqs[b];
      if (is_stop[t]) {
        result.finish[b] = Finish::StopToken;
        continue;
      }
      q.tokens.push_back(t);
      q.seen[t] = 1;
      result.tokens[b].push_back(t);
      q.fresh.push_back(t);
      if (static_cast<int>(result.tokens[b].size()) == req.max_new_tokens) result.finish[b] = Finish::Length;
    }
    result.sampling_s += seconds_since(t_sample);
    if (step == 0) result.first_token_s = seconds_since(t0);

    bool all_done = true;
    for (int b = 0; b < B; ++b) all_done = all_done && result.finish[b] != Finish::Running;
    if (callback && (++since_callback >= req.callback_every || all_done)) {
      since_callback = 0;
      for (int b = 0; b < B; ++b) fresh[b].swap(seqs[b].fresh), seqs[b].fresh.clear();
      std::fill(stop.begin(), stop.end(), 0);
      const auto t_callback = Clock::now();
      const bool go_on = callback(fresh, stop);
      result.callback_s += seconds_since(t_callback);
      for (int b = 0; b < B; ++b)
        if (result.finish[b] == Finish::Running && (stop[b] || !go_on)) result.finish[b] = Finish::Callback;
    }
  }
  result.linear_s = times_.linear;
  result.attention_s = times_.attention;
  result.other_forward_s = times_.total - times_.linear - times_.attention;
  return result;
}

}  // namespace gptfast
