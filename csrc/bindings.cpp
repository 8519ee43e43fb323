// PYBIND11_MODULE only: converts between Python objects and the C++ core and
// releases the GIL around the scans, so several Python threads can encode
// at once and the scanner's own threads run free.
#include <Python.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <type_traits>

#include "cpu_attention.h"
#include "cross_entropy.h"
#include "dropout.h"
#include "id_buffer.h"
#include "tokenizer.h"
#include "utf8.h"

namespace py = pybind11;
using namespace gptfast;

namespace {

// The UTF-8 bytes of a str; CPython caches them in the object, so for an
// ASCII string this is free and the pointer lives as long as `text`.
std::pair<const uint8_t*, size_t> utf8_of(const py::str& text) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (!data) throw py::error_already_set();  // lone surrogates: UnicodeEncodeError
  return {reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(size)};
}

Branch branch_from_tuple(const py::tuple& t) {
  // (kind, literal_text, (negate, categories, [(lo, hi), ...]), min_repeat, max_repeat)
  Branch b;
  b.literal = t[0].cast<std::string>() == "literal";
  b.text = t[1].cast<std::string>();
  if (b.literal && b.text.empty()) throw py::value_error("empty literal alternative");
  const py::tuple cls = t[2].cast<py::tuple>();
  b.cls.negate = cls[0].cast<bool>();
  b.cls.categories = cls[1].cast<uint32_t>();
  b.cls.ranges = cls[2].cast<std::vector<std::pair<uint32_t, uint32_t>>>();
  b.min_repeat = t[3].cast<int>();
  b.max_repeat = t[4].cast<int>();
  return b;
}

// Encode into a block numpy adopts: ids of type Id, as many as there are tokens.
template <class Id>
py::tuple encode_to_numpy(const Scanner& sc, const py::str& text, int threads) {
  auto [s, n] = utf8_of(text);
  const size_t capacity = n * sizeof(Id);  // a token is at least one byte
  Id* ids = static_cast<Id*>(allocate_ids(capacity));
  py::capsule owner(ids, [](void* p) { free_ids(p); });
  EncodeResult r;
  {
    py::gil_scoped_release release;
    r = sc.encode(s, n, threads, ids);
    release_tail(ids, r.count * sizeof(Id), capacity);
  }
  // Where the first unknown token is, in characters, as Python counts them.
  py::object where = py::none();
  if (r.unknown_at >= 0) {
    const size_t at = static_cast<size_t>(r.unknown_at);
    const auto spans = sc.split(s + at, n - at);
    const size_t len = spans.empty() ? 1 : spans[0].second;
    where = py::make_tuple(count_codepoints(s, at), py::str(reinterpret_cast<const char*>(s + at), len));
  }
  py::array_t<Id> array({static_cast<py::ssize_t>(r.count)}, ids, owner);
  return py::make_tuple(array, where);
}

// A C-contiguous float32 array of the given shape (and writeable when asked):
// array_t conversions would quietly copy a strided output and lose the writes.
const float* f32(const py::array& a, std::initializer_list<py::ssize_t> shape, const char* name) {
  if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be a C-contiguous float32 array");
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()) || !std::equal(shape.begin(), shape.end(), a.shape()))
    throw py::value_error(std::string(name) + " has the wrong shape");
  return static_cast<const float*>(a.data());
}

float* f32_out(py::array& a, std::initializer_list<py::ssize_t> shape, const char* name) {
  f32(a, shape, name);
  if (!a.writeable()) throw py::value_error(std::string(name) + " is read-only");
  return static_cast<float*>(a.mutable_data());
}

// (N,) int64 targets, each in [0, V) or `ignore`.
const int64_t* targets_of(const py::array& t, py::ssize_t N, py::ssize_t V, int64_t ignore) {
  if (!t.dtype().is(py::dtype::of<int64_t>()) || !(t.flags() & py::array::c_style) || t.ndim() != 1 || t.shape(0) != N)
    throw py::value_error("targets must be a C-contiguous int64 array with one entry per row of logits");
  const int64_t* p = static_cast<const int64_t*>(t.data());
  for (py::ssize_t i = 0; i < N; ++i)
    if (p[i] != ignore && (p[i] < 0 || p[i] >= V))
      throw py::value_error("target " + std::to_string(p[i]) + " of row " + std::to_string(i) + " is outside [0, " +
                            std::to_string(V) + ")");
  return p;
}

gptfast::AttentionProblem attention_problem(const py::array& q, double scale, double p, uint64_t seed) {
  if (q.ndim() != 4) throw py::value_error("q must be (batch, heads, T, head_size)");
  if (!(p >= 0.0 && p < 1.0)) throw py::value_error("dropout p must be in [0, 1)");
  gptfast::AttentionProblem a;
  a.B = q.shape(0);
  a.H = q.shape(1);
  a.T = static_cast<int>(q.shape(2));
  a.D = static_cast<int>(q.shape(3));
  a.scale = static_cast<float>(scale);
  a.threshold = gptfast::dropout_threshold(p);
  a.keep_scale = static_cast<float>(1.0 / (1.0 - p));
  a.seed = seed;
  return a;
}

// A (B, H, T, D) float32 array of the problem's shape with any strides but a
// contiguous last axis, as the kernel's strided view.
template <class Heads>
Heads heads(const py::array& x, const gptfast::AttentionProblem& a, const char* name) {
  if (!x.dtype().is(py::dtype::of<float>())) throw py::value_error(std::string(name) + " must be float32");
  const py::ssize_t shape[4] = {a.B, a.H, a.T, a.D};
  if (x.ndim() != 4 || !std::equal(shape, shape + 4, x.shape()))
    throw py::value_error(std::string(name) + " has the wrong shape");
  constexpr py::ssize_t f = sizeof(float);
  if ((x.strides(3) != f && a.D > 1) || x.strides(0) % f || x.strides(1) % f || x.strides(2) % f)
    throw py::value_error(std::string(name) + " needs a contiguous last axis");
  Heads h;
  if constexpr (std::is_same_v<decltype(h.data), float*>) {
    if (!x.writeable()) throw py::value_error(std::string(name) + " is read-only");
    h.data = static_cast<float*>(const_cast<py::array&>(x).mutable_data());
  } else {
    h.data = static_cast<const float*>(x.data());
  }
  h.sb = x.strides(0) / f;
  h.sh = x.strides(1) / f;
  h.st = x.strides(2) / f;
  return h;
}

}  // namespace

void bind_sampler(py::module_& m);  // the decoding engine: see the section at the end of this file

PYBIND11_MODULE(_C, m) {
  m.doc() = "gptfast native core: tokenizer scanner (see csrc/)";
  bind_sampler(m);

  py::class_<Scanner>(m, "Scanner")
      .def(py::init([](const py::list& branches, const std::string& separators) {
             std::vector<Branch> bs;
             for (const auto& t : branches) bs.push_back(branch_from_tuple(t.cast<py::tuple>()));
             if (bs.empty()) throw py::value_error("a tokenizer program needs at least one alternative");
             return new Scanner(std::move(bs), separators);
           }),
           py::arg("branches"), py::arg("separators"))
      .def("set_vocab", &Scanner::set_vocab, py::arg("tokens"), py::arg("unk_id"))
      .def(
          "encode",
          [](const Scanner& sc, const py::str& text, int threads, bool small_ids) {
            return small_ids ? encode_to_numpy<uint16_t>(sc, text, threads)
                             : encode_to_numpy<int32_t>(sc, text, threads);
          },
          py::arg("text"), py::arg("threads") = 1, py::arg("uint16") = false,
          "(ids, None) or (ids so far, (char_position, token)) at the first unknown token; "
          "ids are uint16 when uint16=True (vocabularies up to 65536), else int32.")
      .def(
          "count",
          [](const Scanner& sc, const py::str& text, int threads) {
            auto [s, n] = utf8_of(text);
            TokenTable counts;
            {
              py::gil_scoped_release release;
              counts = sc.count(s, n, threads);
            }
            py::dict out;
            counts.for_each([&](std::string_view key, uint32_t c) {
              out[py::str(key.data(), key.size())] = c;
            });
            return out;
          },
          py::arg("text"), py::arg("threads") = 1)
      .def(
          "split",
          [](const Scanner& sc, const py::str& text) {
            auto [s, n] = utf8_of(text);
            py::list out;
            for (const auto& [a, b] : sc.split(s, n))
              out.append(py::str(reinterpret_cast<const char*>(s + a), b - a));
            return out;
          },
          py::arg("text"));

  m.def(
      "unicode_flags_table",
      []() {
        // One byte per code point (bit 0 \w, bit 1 \d, bit 2 \s): lets the
        // tests compare the generated tables with this Python's `re`.
        std::string table(0x110000, '\0');
        for (uint32_t cp = 0; cp < 0x110000; ++cp) table[cp] = static_cast<char>(unicode_flags(cp));
        return py::bytes(table);
      },
      "The \\w/\\d/\\s flags the scanner uses, for every code point.");
}

// ===========================================================================
// Decoding engine (csrc/sampler.h, csrc/sampling.h): bind_sampler.
// gptfast/engine.py is the Python API on top of this; it prepares the weights
// (rounding to 16 bits with PyTorch, so the engine's weights are exactly the
// rounded model's) and owns the policy (stop strings, defaults).
// ===========================================================================

#include <cstring>

#include "rng.h"
#include "sampler.h"

namespace {

gptfast::TensorMap tensor_map(const py::dict& tensors, std::vector<py::array>& keep_alive) {
  gptfast::TensorMap out;
  for (const auto& item : tensors) {
    const std::string name = item.first.cast<std::string>();
    py::array a = py::reinterpret_borrow<py::array>(item.second);
    if (py::isinstance<py::array_t<float>>(a)) {
      a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    } else if (a.dtype().kind() == 'u' && a.itemsize() == 2) {
      a = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>::ensure(a);
    } else {
      throw py::type_error(name + ": expected a float32 or uint16 (16-bit weight bits) array");
    }
    keep_alive.push_back(a);
    gptfast::TensorView v;
    v.data = a.data();
    v.is_float32 = a.itemsize() == 4;
    for (py::ssize_t d = 0; d < a.ndim(); ++d) v.shape.push_back(a.shape(d));
    out[name] = std::move(v);
  }
  return out;
}

gptfast::WeightType weight_type_from(const std::string& name) {
  if (name == "float32") return gptfast::WeightType::F32;
  if (name == "float16") return gptfast::WeightType::F16;
  if (name == "bfloat16") return gptfast::WeightType::BF16;
  throw py::value_error("dtype must be float32, float16 or bfloat16, got " + name);
}

// The 16-bit type `name` names, for the conversions between float32 and it.
gptfast::WeightType sixteen_bit_type_from(const std::string& name, const char* function) {
  const gptfast::WeightType type = weight_type_from(name);
  if (type == gptfast::WeightType::F32)
    throw py::value_error(std::string(function) + " converts to and from float16 or bfloat16");
  return type;
}

}  // namespace

void bind_sampler(py::module_& m) {
  using gptfast::Engine;
  using gptfast::SamplingParams;

  // std::invalid_argument (bad requests) reaches Python as ValueError: pybind11's default translation.
  py::class_<SamplingParams>(m, "SamplingParams")
      .def(py::init([](double temperature, int top_k, double top_p, double repetition_penalty,
                       std::vector<int> banned_ids) {
             SamplingParams p;
             p.temperature = temperature;
             p.top_k = top_k;
             p.top_p = top_p;
             p.repetition_penalty = repetition_penalty;
             p.banned_ids = std::move(banned_ids);
             return p;
           }),
           py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
           py::arg("repetition_penalty") = 1.0, py::arg("banned_ids") = std::vector<int>{})
      .def_readonly("temperature", &SamplingParams::temperature)
      .def_readonly("top_k", &SamplingParams::top_k)
      .def_readonly("top_p", &SamplingParams::top_p)
      .def_readonly("repetition_penalty", &SamplingParams::repetition_penalty)
      .def_readonly("banned_ids", &SamplingParams::banned_ids);

  m.def(
      "sample_from_logits",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> logits, const SamplingParams& params,
         uint64_t seed, uint64_t seq, uint64_t step, const std::vector<int>& history) {
        if (logits.ndim() != 1 || logits.shape(0) == 0) throw py::value_error("logits must be a non-empty 1-D array");
        const int V = static_cast<int>(logits.shape(0));
        params.validate(V);
        std::vector<uint8_t> seen(V, 0);
        for (int t : history) {
          if (t < 0 || t >= V) throw py::value_error("history token " + std::to_string(t) + " is outside the vocabulary");
          seen[t] = 1;
        }
        gptfast::SamplerWorkspace ws;
        return gptfast::choose_token(logits.data(), V, params, seen.data(), seed, seq, step, ws);
      },
      py::arg("logits"), py::arg("params"), py::arg("seed"), py::arg("seq") = 0, py::arg("step") = 0,
      py::arg("history") = std::vector<int>{},
      "The engine's token choice for one row of float32 logits (see csrc/sampling.h).");

  m.def("uniform", &gptfast::counter_uniform, py::arg("seed"), py::arg("seq"), py::arg("step"),
        "The sampler's counter-based uniform in [0, 1) (csrc/rng.h).");
  m.def(
      "dropout",
      [](const py::array& x, py::array& y, double p, uint64_t seed) {
        if (!(p >= 0.0 && p < 1.0)) throw py::value_error("dropout p must be in [0, 1)");
        const py::ssize_t n = x.size();
        const float* X = f32(x, {n}, "x");
        float* Y = f32_out(y, {n}, "y");
        const uint32_t threshold = gptfast::dropout_threshold(p);
        const float scale = static_cast<float>(1.0 / (1.0 - p));
        py::gil_scoped_release release;
        gptfast::dropout_apply(X, Y, n, threshold, scale, seed);
      },
      py::arg("x"), py::arg("y"), py::arg("p"), py::arg("seed"),
      "y = x * keep / (1 - p) over flat float32 arrays, the mask hashed from (seed, index): csrc/dropout.h.");
  m.def(
      "attention_forward",
      [](const py::array& q, const py::array& k, const py::array& v, py::array& out, py::array& lse, double scale,
         double p, uint64_t seed) {
        using gptfast::Heads;
        const auto a = attention_problem(q, scale, p, seed);
        const Heads Q = heads<Heads>(q, a, "q"), K = heads<Heads>(k, a, "k"), V = heads<Heads>(v, a, "v");
        const auto O = heads<gptfast::OutHeads>(out, a, "out");
        float* L = f32_out(lse, {a.B * a.H, a.T}, "lse");
        py::gil_scoped_release release;
        gptfast::attention_forward(a, Q, K, V, O, L);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("scale"), py::arg("p"),
      py::arg("seed"), "Causal attention with hashed dropout on (B, H, T, D) float32 views: csrc/cpu_attention.h.");
  m.def(
      "attention_backward",
      [](const py::array& q, const py::array& k, const py::array& v, const py::array& out, const py::array& lse,
         const py::array& dout, py::array& dq, py::array& dk, py::array& dv, double scale, double p, uint64_t seed) {
        using gptfast::Heads;
        using gptfast::OutHeads;
        const auto a = attention_problem(q, scale, p, seed);
        const Heads Q = heads<Heads>(q, a, "q"), K = heads<Heads>(k, a, "k"), V = heads<Heads>(v, a, "v");
        const Heads O = heads<Heads>(out, a, "out"), dO = heads<Heads>(dout, a, "dout");
        const float* L = f32(lse, {a.B * a.H, a.T}, "lse");
        const OutHeads dQ = heads<OutHeads>(dq, a, "dq"), dK = heads<OutHeads>(dk, a, "dk"),
                       dV = heads<OutHeads>(dv, a, "dv");
        py::gil_scoped_release release;
        gptfast::attention_backward(a, Q, K, V, O, L, dO, dQ, dK, dV);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"), py::arg("dq"),
      py::arg("dk"), py::arg("dv"), py::arg("scale"), py::arg("p"), py::arg("seed"),
      "Gradients of attention_forward (the same seed gives the same mask).");
  m.def(
      "cross_entropy_forward",
      [](const py::array& logits, const py::array& targets, int64_t ignore, py::array& lse, py::array& loss) {
        if (logits.ndim() != 2 || logits.shape(1) < 1) throw py::value_error("logits must be (rows, vocab >= 1)");
        const py::ssize_t N = logits.shape(0), V = logits.shape(1);
        const float* X = f32(logits, {N, V}, "logits");
        const int64_t* T = targets_of(targets, N, V, ignore);
        float* L = f32_out(lse, {N}, "lse");
        float* out = f32_out(loss, {N}, "loss");
        py::gil_scoped_release release;
        gptfast::cross_entropy_forward(X, N, V, T, ignore, L, out);
      },
      py::arg("logits"), py::arg("targets"), py::arg("ignore_index"), py::arg("lse"), py::arg("loss"),
      "Per-row log-sum-exp and loss of (N, V) float32 logits: csrc/cross_entropy.h.");
  m.def(
      "cross_entropy_backward",
      [](const py::array& logits, const py::array& targets, int64_t ignore, const py::array& lse, double scale,
         py::array& grad) {
        if (logits.ndim() != 2 || logits.shape(1) < 1) throw py::value_error("logits must be (rows, vocab >= 1)");
        const py::ssize_t N = logits.shape(0), V = logits.shape(1);
        const float* X = f32(logits, {N, V}, "logits");
        const int64_t* T = targets_of(targets, N, V, ignore);
        const float* L = f32(lse, {N}, "lse");
        float* G = f32_out(grad, {N, V}, "grad");
        py::gil_scoped_release release;
        gptfast::cross_entropy_backward(X, N, V, T, ignore, L, static_cast<float>(scale), G);
      },
      py::arg("logits"), py::arg("targets"), py::arg("ignore_index"), py::arg("lse"), py::arg("scale"),
      py::arg("grad"), "grad = scale * (softmax(logits) - one_hot(targets)), ignored rows zero.");
  m.def("simd_enabled", &gptfast::simd_enabled, "Whether the AVX2/FMA/F16C kernels were compiled in.");
  m.def("simd_kernels", &gptfast::simd_kernels, "Which decoding kernels were compiled in: avx512, avx2 or portable.");
  m.def(
      "round_floats",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x, const std::string& dtype) {
        const gptfast::WeightType type = sixteen_bit_type_from(dtype, "round_floats");
        py::array_t<uint16_t> out(x.size());
        gptfast::store_floats(type, x.data(), out.mutable_data(), static_cast<int>(x.size()));
        return out;
      },
      py::arg("x"), py::arg("dtype"),
      "The 16-bit words the engine caches for float32 values x (flattened): how it rounds keys and values.");
  m.def(
      "widen_words",
      [](py::array_t<uint16_t, py::array::c_style | py::array::forcecast> words, const std::string& dtype) {
        const gptfast::WeightType type = sixteen_bit_type_from(dtype, "widen_words");
        py::array_t<float> out(words.size());
        gptfast::load_floats(type, words.data(), out.mutable_data(), static_cast<int>(words.size()));
        return out;
      },
      py::arg("words"), py::arg("dtype"),
      "float32 values of 16-bit words (flattened), as the engine reads its weights and cache.");

  py::class_<Engine>(m, "Engine")
      .def(py::init([](int vocab_size, int block_size, int n_layer, int n_head, int n_embd, double ln_eps,
                       const py::dict& tensors, const std::string& dtype, int threads, const std::string& kv_dtype) {
             gptfast::ModelShape s;
             s.vocab_size = vocab_size;
             s.block_size = block_size;
             s.n_layer = n_layer;
             s.n_head = n_head;
             s.n_embd = n_embd;
             s.ln_eps = static_cast<float>(ln_eps);
             std::vector<py::array> keep_alive;
             const gptfast::TensorMap map = tensor_map(tensors, keep_alive);
             const gptfast::WeightType type = weight_type_from(dtype), kv_type = weight_type_from(kv_dtype);
             py::gil_scoped_release release;
             return new Engine(s, map, type, threads, kv_type);
           }),
           py::arg("vocab_size"), py::arg("block_size"), py::arg("n_layer"), py::arg("n_head"), py::arg("n_embd"),
           py::arg("ln_eps"), py::arg("tensors"), py::arg("dtype") = "float32", py::arg("threads") = 1,
           py::arg("kv_dtype") = "float32")
      .def_property_readonly("threads", &Engine::threads)
      .def_property_readonly("dtype", [](const Engine& e) { return gptfast::weight_type_name(e.weight_type()); })
      .def_property_readonly("kv_dtype", [](const Engine& e) { return gptfast::weight_type_name(e.kv_type()); })
      .def_property_readonly("weight_bytes_per_step", &Engine::weight_bytes_per_step)
      .def(
          "forward_logits",
          [](Engine& e, const std::vector<int>& tokens) {
            std::vector<float> out;
            {
              py::gil_scoped_release release;
              e.forward_logits(tokens, out);
            }
            const py::ssize_t T = static_cast<py::ssize_t>(tokens.size()), V = e.shape().vocab_size;
            py::array_t<float> a({T, V});
            std::memcpy(a.mutable_data(), out.data(), out.size() * sizeof(float));
            return a;
          },
          py::arg("tokens"), "Logits (T, vocab) float32 of tokens at positions 0..T-1.")
      .def(
          "generate",
          [](Engine& e, const std::vector<std::vector<int>>& prompts, int max_new_tokens,
             const SamplingParams& params, uint64_t seed, const std::vector<uint64_t>& seq_ids,
             const std::vector<int>& stop_ids, int window_keep, const py::object& callback, int callback_every) {
            gptfast::GenerateRequest req;
            req.prompts = prompts;
            req.max_new_tokens = max_new_tokens;
            req.params = params;
            req.seed = seed;
            req.seq_ids = seq_ids;
            req.stop_ids = stop_ids;
            req.window_keep = window_keep;
            req.callback_every = callback.is_none() ? 1 : callback_every;
            // Called every step even without a user callback, so Ctrl-C
            // (PyErr_CheckSignals) stops a long generation.  A Python
            // exception is kept, generation stops, and it is re-raised here.
            std::exception_ptr error;
            gptfast::StreamCallback cb = [&](const std::vector<std::vector<int>>& fresh, std::vector<uint8_t>& stop) {
              py::gil_scoped_acquire acquire;
              try {
                if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                if (callback.is_none()) return true;
                py::object r = callback(py::cast(fresh));
                if (r.is_none()) return true;
                if (py::isinstance<py::bool_>(r)) return r.cast<bool>();
                for (const auto& item : r) {
                  const int b = item.cast<int>();
                  if (b < 0 || b >= static_cast<int>(stop.size()))
                    throw py::value_error("callback asked to stop sequence " + std::to_string(b) + " of " +
                                          std::to_string(stop.size()));
                  stop[b] = 1;
                }
                return true;
              } catch (...) {
                error = std::current_exception();
                return false;
              }
            };
            gptfast::GenerateResult r;
            {
              py::gil_scoped_release release;
              r = e.generate(req, cb);
            }
            if (error) std::rethrow_exception(error);
            py::list finish;
            for (auto f : r.finish) finish.append(gptfast::finish_name(f));
            py::dict stats;
            stats["prefill_rows"] = r.prefill_rows;
            stats["first_token_s"] = r.first_token_s;
            stats["linear_s"] = r.linear_s;
            stats["attention_s"] = r.attention_s;
            stats["other_forward_s"] = r.other_forward_s;
            stats["sampling_s"] = r.sampling_s;
            stats["callback_s"] = r.callback_s;
            return py::make_tuple(r.tokens, finish, stats);
          },
          py::arg("prompts"), py::arg("max_new_tokens"), py::arg("params"), py::arg("seed") = 0,
          py::arg("seq_ids") = std::vector<uint64_t>{}, py::arg("stop_ids") = std::vector<int>{},
          py::arg("window_keep") = 0, py::arg("callback") = py::none(), py::arg("callback_every") = 1,
          "(tokens per sequence, finish reason per sequence, stats); see csrc/sampler.h.");
}
