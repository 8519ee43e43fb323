// Weight storage and the SIMD kernels of the decoding engine.
//
// Decoding is bound by reading the weights: every new token reads every
// weight once.  So the kernels (1) keep weights in float32, float16 or
// bfloat16 (16-bit halves the bytes read; the arithmetic stays float32) and
// (2) read each weight once for all the rows of activations in flight, which
// is what makes batched decoding and the prompt's prefill cheap.
//
// Layout: a matrix (rows, cols) is stored in panels of 16 rows, each panel
// column-major: element (r, c) at ((r / 16) * cols + c) * 16 + r % 16, the
// last panel padded with zero rows.  A panel is one contiguous stream, and
// at every column c its 16 weights are two AVX2 vectors (one AVX-512 vector)
// multiplied by one broadcast activation: a register-blocked kernel with no
// horizontal sums and no column tails whatever cols is (head size 42, ...).
//
// Bit-exactness contract (the tests rely on it): every output is computed
// as acc = fma(W[r, c], x[c], acc) for c = 0, 1, ..., cols - 1 from acc = 0,
// then + bias, then the epilogue - the same operations whatever the number
// of activation rows, the tile, the vector width and the thread.  So a
// batched step gives bitwise the same result as each sequence alone, and a
// prefill row the same as the incremental step at that position.
//
// AVX-512F or AVX2 + FMA + F16C intrinsics, or a plain C++ fallback (simd.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "storage.h"

namespace gptfast {

bool simd_enabled();         // compiled with the AVX2/FMA/F16C kernels
const char* simd_kernels();  // "avx512", "avx2" or "portable"

constexpr int kPanelRows = 16;

// A (rows, cols) weight matrix in panels of 16 rows (see above), 64-byte aligned.
class Matrix {
 public:
  Matrix() = default;
  // Bytes of a packed (rows, cols) matrix of `type`: whole panels, rounded up to 64.
  static size_t packed_bytes(WeightType type, int rows, int cols);
  // Packs rows*cols row-major elements of `type` from `src` (float for F32,
  // uint16 bits otherwise) into `storage`: packed_bytes() long, 64-byte
  // aligned, owned by the caller and outliving the Matrix (the engine keeps
  // all its matrices in one block on huge pages).
  Matrix(WeightType type, int rows, int cols, const void* src, void* storage);

  WeightType type() const { return type_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  int panels() const { return (rows_ + kPanelRows - 1) / kPanelRows; }
  size_t bytes() const { return static_cast<size_t>(rows_) * cols_ * weight_type_bytes(type_); }  // unpadded
  bool empty() const { return rows_ == 0; }
  const void* data() const { return data_; }

  void row_to_float(int r, float* out) const;  // row r as float, out (cols): embedding lookups

 private:
  WeightType type_ = WeightType::F32;
  int rows_ = 0, cols_ = 0;
  const void* data_ = nullptr;
};

// What a linear layer does with its result y = W x + b.
enum class Epilogue {
  Store,      // Y  = y
  StoreRelu,  // Y  = max(y, 0)
  AddTo,      // Y += y        (the residual connection)
};

// For n < N and output rows j of panels [p0, p1):
//   Y[n*ldy + j] <- epilogue(sum_c W[j, c] * X[n*ldx + c] + bias[j])
// bias may be null.  Threads call this on disjoint panel ranges.
void linear_panels(const Matrix& W, const float* bias, const float* X, int ldx, float* Y, int ldy, int N, int p0,
                   int p1, Epilogue epilogue);

}  // namespace gptfast
