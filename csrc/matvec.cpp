#include "matvec.h"

#include <cmath>
#include <cstring>
#include <type_traits>

#include "simd.h"
#include "vec16.h"

namespace gptfast {

bool simd_enabled() { return GPTFAST_SIMD; }

const char* simd_kernels() { return GPTFAST_AVX512 ? "avx512" : GPTFAST_SIMD ? "avx2" : "portable"; }

namespace {

// Element index of (panel p, column c, lane 0).
inline size_t panel_index(int p, int cols, int c) {
  return (static_cast<size_t>(p) * cols + c) * kPanelRows;
}

template <class E>
void pack(const E* src, int rows, int cols, E* dst) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dst[panel_index(r / kPanelRows, cols, c) + r % kPanelRows] = src[static_cast<size_t>(r) * cols + c];
}

}  // namespace

size_t Matrix::packed_bytes(WeightType type, int rows, int cols) {
  const size_t panels = (static_cast<size_t>(rows) + kPanelRows - 1) / kPanelRows;
  return (panels * kPanelRows * cols * weight_type_bytes(type) + 63) / 64 * 64;
}

Matrix::Matrix(WeightType type, int rows, int cols, const void* src, void* storage)
    : type_(type), rows_(rows), cols_(cols), data_(storage) {
  std::memset(storage, 0, packed_bytes(type, rows, cols));  // the padding rows of the last panel are zeros
  if (type == WeightType::F32) {
    pack(static_cast<const float*>(src), rows, cols, static_cast<float*>(storage));
  } else {
    pack(static_cast<const uint16_t*>(src), rows, cols, static_cast<uint16_t*>(storage));
  }
}

void Matrix::row_to_float(int r, float* out) const {
  const size_t first = panel_index(r / kPanelRows, cols_, 0) + r % kPanelRows;
  with_storage_type(type_, [&](auto type) {
    constexpr WeightType T = decltype(type)::value;
    const Elem<T>* row = static_cast<const Elem<T>*>(data()) + first;
    for (int c = 0; c < cols_; ++c) out[c] = to_float<T>(row[static_cast<size_t>(c) * kPanelRows]);
  });
}

namespace {

// The epilogue of one output (used for partial panels and by the fallback).
inline void emit(float* y, float acc, float bias, Epilogue e) {
  const float v = acc + bias;
  switch (e) {
    case Epilogue::Store: *y = v; break;
    case Epilogue::StoreRelu: *y = v > 0.0f ? v : 0.0f; break;
    case Epilogue::AddTo: *y += v; break;
  }
}

// Register blocking: MR activation rows x NP panels (16 * NP outputs) per
// kernel call.  Batch-1 decoding streams 4 panels at once (8 accumulators:
// enough independent FMA chains, 4 memory streams); a few rows (batched
// decoding) use 4 x 1 (8 accumulators, each weight vector converted once and
// used 4 times); long prefills 6 x 1 (12 accumulators, ~10% faster there,
// slower on 8 rows, which it would split 6 + 2).  Measured and not kept:
// blocking the columns so that all row tiles share a block from L1 (no
// faster); 8-row panels with 8 x 1 tiles, a single pass for batch 8 (batch 8
// +8-13%, batch 1 -11-18%: batch 1 wants few wide streams).
#if GPTFAST_AVX512
// AVX-512 (32 registers): batch 1 as above; several rows take 8 x 2
// tiles (16 of the 32 registers accumulate): batch 8 in one pass.
constexpr int kWidePanels = 4, kRowsPerTile = 8, kRowsPerLongTile = 8, kRowTilePanels = 2;
#else
constexpr int kWidePanels = 4, kRowsPerTile = 4, kRowsPerLongTile = 6, kRowTilePanels = 1;
#endif
// Activation rows per pass over a thread's panels: a long prefill keeps this
// many rows of X hot in L2 while the panels stream past.
constexpr int kRowChunk = 64;

#if GPTFAST_SIMD

// How far ahead of the kernel each panel stream is prefetched: ~100 ns of
// DRAM latency at the kernel's pace, more misses in flight than the hardware
// prefetcher keeps on its own.  (Harmless past the end of the matrix.)
constexpr size_t kPrefetchBytes = 2048;

// The prefetches at column c (one per cache line) of a tile over NP panels.
// Each panel stream is fetched kPrefetchBytes ahead into L1.  A tile of
// several rows computes for longer per byte, long enough to also bring the
// next tile's NP panels into L2 meanwhile, where a core can have many more
// misses in flight than into L1.  The linear layers at batch 8 then run at
// the FMA peak: 1.2-1.3 -> 0.91-0.95 ms per step of the quijote model on an
// AVX-512 EPYC in a benchmark of the layers alone (1.5 -> 1.1-1.25 ms inside
// the engine), batch 4 -20%, a 64-row prefill -4%, batch 1 unchanged.  The
// scheme before it, the next panel fetched into L1, reached 75% of the peak.
template <class E, int MR, int NP>
inline void prefetch_column(const E* const (&panel)[NP], int cols, int c) {
  constexpr int kLineStep = 64 / (kPanelRows * sizeof(E));  // columns per cache line of a panel
  if (c % kLineStep != 0) return;
  const size_t next_tile = static_cast<size_t>(NP) * cols * kPanelRows * sizeof(E);
  for (int p = 0; p < NP; ++p) {
    const char* at = reinterpret_cast<const char*>(panel[p] + static_cast<size_t>(c) * kPanelRows);
    _mm_prefetch(at + kPrefetchBytes, _MM_HINT_T0);
    if constexpr (MR > 1) _mm_prefetch(at + next_tile, _MM_HINT_T1);
  }
}

// The kernels run on V16 (vec16.h): one panel column, 16 weights, is one
// AVX-512 register or two AVX2 registers.  Each output is fma(W[r, c], x[c],
// acc) over c in order from 0 either way, so the two builds give bitwise the
// same results.

// The 16 weights of a panel column as float32 lanes.
template <WeightType T>
inline V16 load_column(const Elem<T>* p) {
#if GPTFAST_AVX512
  if constexpr (T == WeightType::F32) {
    return {_mm512_loadu_ps(p)};
  } else if constexpr (T == WeightType::F16) {
    return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  } else {  // bfloat16 is the top half of a float32: widen and shift
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
  }
#else
  return {load8<T>(p), load8<T>(p + 8)};
#endif
}

// A column loaded once and used by MR rows: without this, GCC re-loads it
// as a memory operand of every FMA.
inline void keep_in_registers(V16& w) {
#if GPTFAST_AVX512
  asm volatile("" : "+v"(w.v));
#else
  asm volatile("" : "+x"(w.lo), "+x"(w.hi));
#endif
}

// acc[m][p] = sum_c (column c of panel p0 + p) * X[m0 + m, c], c in order.
template <WeightType T, int MR, int NP>
inline void kernel(const void* W, int cols, int p0, const float* X, int ldx, int m0, V16 (&out)[MR][NP]) {
  // Local accumulators: written to `out` only at the end, so the compiler
  // keeps them in registers (through the reference it would store them to
  // memory after every FMA).
  V16 acc[MR][NP];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < NP; ++p) acc[m][p] = zero16();
  const Elem<T>* panel[NP];
  for (int p = 0; p < NP; ++p) panel[p] = static_cast<const Elem<T>*>(W) + panel_index(p0 + p, cols, 0);
  const float* x[MR];
  for (int m = 0; m < MR; ++m) x[m] = X + static_cast<size_t>(m0 + m) * ldx;
  for (int c = 0; c < cols; ++c) {
    prefetch_column<Elem<T>, MR, NP>(panel, cols, c);
    V16 w[NP];
    for (int p = 0; p < NP; ++p) w[p] = load_column<T>(panel[p] + static_cast<size_t>(c) * kPanelRows);
    if constexpr (MR > 1)
      for (int p = 0; p < NP; ++p) keep_in_registers(w[p]);
    for (int m = 0; m < MR; ++m)
      for (int p = 0; p < NP; ++p) acc[m][p] = fma16(x[m][c], w[p], acc[m][p]);
  }
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < NP; ++p) out[m][p] = acc[m][p];
}

// Writes the 16 * NP outputs of one activation row (`valid` of them are real
// rows of W) at y, through the epilogue.
template <int NP>
inline void store(const V16 (&acc)[NP], float* y, const float* bias, int valid, Epilogue e) {
  for (int p = 0; p < NP; ++p) {
    const int j = kPanelRows * p;
    if (j + kPanelRows <= valid) {
      V16 v = add16(acc[p], bias ? load16(bias + j) : zero16());
      if (e == Epilogue::StoreRelu) v = max16(v, zero16());
      if (e == Epilogue::AddTo) v = add16(load16(y + j), v);
      store16(y + j, v);
    } else if (j < valid) {  // the partial last panel
      alignas(64) float lanes[kPanelRows];
      store16(lanes, acc[p]);
      for (int l = 0; j + l < valid; ++l) emit(y + j + l, lanes[l], bias ? bias[j + l] : 0.0f, e);
    }
  }
}

template <WeightType T, int MR, int NP>
inline void tile(const Matrix& W, const float* bias, const float* X, int ldx, float* Y, int ldy, int p, int m,
                 Epilogue e) {
  V16 acc[MR][NP];
  kernel<T, MR, NP>(W.data(), W.cols(), p, X, ldx, m, acc);
  const int j = p * kPanelRows;
  const int valid = W.rows() - j < kPanelRows * NP ? W.rows() - j : kPanelRows * NP;
  for (int r = 0; r < MR; ++r) store<NP>(acc[r], Y + static_cast<size_t>(m + r) * ldy + j, bias ? bias + j : nullptr, valid, e);
}

#else  // portable fallback: the same loops on scalars

template <WeightType T, int MR, int NP>
inline void tile(const Matrix& W, const float* bias, const float* X, int ldx, float* Y, int ldy, int p, int m,
                 Epilogue e) {
  constexpr int L = kPanelRows * NP;
  float acc[MR][L] = {};
  const int cols = W.cols();
  const Elem<T>* base = static_cast<const Elem<T>*>(W.data()) + panel_index(p, cols, 0);
  for (int c = 0; c < cols; ++c)
    for (int q = 0; q < NP; ++q) {
      const Elem<T>* w = base + panel_index(q, cols, c);
      for (int r = 0; r < MR; ++r) {
        const float x = X[static_cast<size_t>(m + r) * ldx + c];
        for (int l = 0; l < kPanelRows; ++l) acc[r][q * kPanelRows + l] += to_float<T>(w[l]) * x;
      }
    }
  const int j = p * kPanelRows;
  const int valid = W.rows() - j < L ? W.rows() - j : L;
  for (int r = 0; r < MR; ++r)
    for (int l = 0; l < valid; ++l)
      emit(Y + static_cast<size_t>(m + r) * ldy + j + l, acc[r][l], bias ? bias[j + l] : 0.0f, e);
}

#endif

template <int V>
using Int = std::integral_constant<int, V>;

template <WeightType T>
void linear_panels_t(const Matrix& W, const float* bias, const float* X, int ldx, float* Y, int ldy, int N, int p0,
                     int p1, Epilogue e) {
  auto run = [&](auto mr, auto np, int p, int m) {
    tile<T, decltype(mr)::value, decltype(np)::value>(W, bias, X, ldx, Y, ldy, p, m, e);
  };
  if (N == 1) {  // batch-1 decoding: wide tiles
    int p = p0;
    for (; p + kWidePanels <= p1; p += kWidePanels) run(Int<1>(), Int<kWidePanels>(), p, 0);
    for (; p + 2 <= p1; p += 2) run(Int<1>(), Int<2>(), p, 0);
    for (; p < p1; ++p) run(Int<1>(), Int<1>(), p, 0);
    return;
  }
  for (int m0 = 0; m0 < N; m0 += kRowChunk) {
    const int m1 = m0 + kRowChunk < N ? m0 + kRowChunk : N;
    const bool long_chunk = m1 - m0 >= 2 * kRowsPerLongTile;
    auto rows_over = [&](auto np, int p) {  // rows m0..m1 over panels p..p+np
      int m = m0;
      if (long_chunk)
        for (; m + kRowsPerLongTile <= m1; m += kRowsPerLongTile) run(Int<kRowsPerLongTile>(), np, p, m);
      for (; m + kRowsPerTile <= m1; m += kRowsPerTile) run(Int<kRowsPerTile>(), np, p, m);
      switch (m1 - m) {
        case 7: run(Int<7>(), np, p, m); break;
        case 6: run(Int<6>(), np, p, m); break;
        case 5: run(Int<5>(), np, p, m); break;
        case 4: run(Int<4>(), np, p, m); break;
        case 3: run(Int<3>(), np, p, m); break;
        case 2: run(Int<2>(), np, p, m); break;
        case 1: run(Int<1>(), np, p, m); break;
        default: break;
      }
    };
    int p = p0;
    for (; p + kRowTilePanels <= p1; p += kRowTilePanels) rows_over(Int<kRowTilePanels>(), p);
    for (; p < p1; ++p) rows_over(Int<1>(), p);
  }
}

}  // namespace

void linear_panels(const Matrix& W, const float* bias, const float* X, int ldx, float* Y, int ldy, int N, int p0,
                   int p1, Epilogue epilogue) {
  with_storage_type(W.type(), [&](auto type) {
    linear_panels_t<decltype(type)::value>(W, bias, X, ldx, Y, ldy, N, p0, p1, epilogue);
  });
}

}  // namespace gptfast
