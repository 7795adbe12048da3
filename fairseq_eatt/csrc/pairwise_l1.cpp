// E-ATT's CPU kernels. L1 scores: out[n, i, j] = sum_c |q[n, i, c] - k[n, j, c]| and its backward. Binarized
// selection (select_rows): out[t] = bias + sum of rows[c] over the features c where bits[t, c] = 1, reading only
// the selected rows of the transposed weight (Q and K from binary inputs, Eqs. 6-9, as additions).
//
// Plain loops that the compiler vectorizes; target_clones builds an AVX-512, an AVX2 and a generic version and
// picks one at load time, so the library runs on any x86-64 CPU. Work is split over n (batch x heads). No
// temporary of size T x S x D exists: forward keeps one accumulator per (i, j), backward one gradient row.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EATT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EATT_CLONES
#endif

namespace {

constexpr int64_t kKeyBlock = 4;  // keys per inner step: q's row is loaded once for four keys

// out (T, S) of one n: every query row against every key row.
EATT_CLONES void forward_block(const float* q, const float* k, float* out, int64_t T, int64_t S, int64_t D) {
  for (int64_t i = 0; i < T; ++i) {
    const float* qi = q + i * D;
    float* oi = out + i * S;
    int64_t j = 0;
    for (; j + kKeyBlock <= S; j += kKeyBlock) {
      const float* k0 = k + j * D;
      const float* k1 = k0 + D;
      const float* k2 = k1 + D;
      const float* k3 = k2 + D;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int64_t c = 0; c < D; ++c) {
        const float x = qi[c];
        a0 += std::fabs(x - k0[c]);
        a1 += std::fabs(x - k1[c]);
        a2 += std::fabs(x - k2[c]);
        a3 += std::fabs(x - k3[c]);
      }
      oi[j] = a0;
      oi[j + 1] = a1;
      oi[j + 2] = a2;
      oi[j + 3] = a3;
    }
    for (; j < S; ++j) {
      const float* kj = k + j * D;
      float a = 0.f;
#pragma omp simd reduction(+ : a)
      for (int64_t c = 0; c < D; ++c) a += std::fabs(qi[c] - kj[c]);
      oi[j] = a;
    }
  }
}

// grad_a[r, :] = sum_m g[r, m] * sign(a[r, :] - b[m, :]) for every row r of a: the gradient of the L1 scores
// with respect to the queries (a = q, b = k, g = grad_out) or the keys (a = k, b = q, g = grad_out^T, since
// d|q - k|/dk = sign(k - q)). sign(0) = 0, as torch.sign. The gradient row stays in registers over the m loop.
EATT_CLONES void grad_block(const float* a, const float* b, const float* g, float* grad_a, int64_t rows_a,
                            int64_t rows_b, int64_t D) {
  for (int64_t r = 0; r < rows_a; ++r) {
    const float* ar = a + r * D;
    const float* gr = g + r * rows_b;
    float* out = grad_a + r * D;
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) out[c] = 0.f;
    for (int64_t m = 0; m < rows_b; ++m) {
      const float w = gr[m];
      if (w == 0.f) continue;  // masked scores (padding, the future) carry no gradient
      const float* bm = b + m * D;
#pragma omp simd
      for (int64_t c = 0; c < D; ++c) {
        const float d = ar[c] - bm[c];
        out[c] += w * (static_cast<float>(d > 0.f) - static_cast<float>(d < 0.f));
      }
    }
  }
}

void check_inputs(const torch::Tensor& q, const torch::Tensor& k) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu(), "pairwise_l1 (C++): CPU tensors expected");
  TORCH_CHECK(q.scalar_type() == torch::kFloat && k.scalar_type() == torch::kFloat,
              "pairwise_l1 (C++): float32 tensors expected");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.size(0) == k.size(0) && q.size(2) == k.size(2),
              "pairwise_l1 (C++): q (N, T, D) and k (N, S, D) expected");
}

}  // namespace

torch::Tensor l1_forward(torch::Tensor q, torch::Tensor k) {
  check_inputs(q, k);
  q = q.contiguous();
  k = k.contiguous();
  const int64_t N = q.size(0), T = q.size(1), S = k.size(1), D = q.size(2);
  auto out = torch::empty({N, T, S}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) forward_block(qp + n * T * D, kp + n * S * D, op + n * T * S, T, S, D);
  });
  return out;
}

std::vector<torch::Tensor> l1_backward(torch::Tensor grad_out, torch::Tensor q, torch::Tensor k, bool need_q,
                                       bool need_k) {
  check_inputs(q, k);
  q = q.contiguous();
  k = k.contiguous();
  grad_out = grad_out.to(torch::kFloat).contiguous();
  const int64_t N = q.size(0), T = q.size(1), S = k.size(1), D = q.size(2);
  TORCH_CHECK(grad_out.size(0) == N && grad_out.size(1) == T && grad_out.size(2) == S,
              "pairwise_l1 (C++): grad_out of shape (N, T, S) expected");
  torch::Tensor grad_q, grad_k, grad_t;
  if (need_q) grad_q = torch::empty_like(q);
  if (need_k) {
    grad_k = torch::empty_like(k);
    grad_t = grad_out.transpose(1, 2).contiguous();  // rows of keys for the keys' gradient
  }
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* gp = grad_out.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      if (need_q)
        grad_block(qp + n * T * D, kp + n * S * D, gp + n * T * S, grad_q.data_ptr<float>() + n * T * D, T, S, D);
      if (need_k)
        grad_block(kp + n * S * D, qp + n * T * D, grad_t.data_ptr<float>() + n * S * T,
                   grad_k.data_ptr<float>() + n * S * D, S, T, D);
    }
  });
  return {need_q ? grad_q : torch::Tensor(), need_k ? grad_k : torch::Tensor()};
}

namespace {

// one token: the bias, then each selected row added (the rows of unselected features are never read)
EATT_CLONES void select_token(const float* bits, const float* rows, const float* bias, float* out, int64_t D,
                              int64_t O) {
  for (int64_t o = 0; o < O; ++o) out[o] = bias ? bias[o] : 0.f;
  for (int64_t c = 0; c < D; ++c) {
    if (bits[c] == 0.f) continue;
    const float* r = rows + c * O;
#pragma omp simd
    for (int64_t o = 0; o < O; ++o) out[o] += r[o];
  }
}

}  // namespace

torch::Tensor select_rows(torch::Tensor bits, torch::Tensor rows, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(bits.dim() == 2 && rows.dim() == 2 && bits.size(1) == rows.size(0),
              "select_rows (C++): bits (T, D) and rows (D, O) expected");
  TORCH_CHECK(bits.device().is_cpu() && rows.device().is_cpu(), "select_rows (C++): CPU tensors expected");
  TORCH_CHECK(rows.scalar_type() == torch::kFloat && rows.is_contiguous(),
              "select_rows (C++): contiguous float32 rows expected");
  bits = bits.to(torch::kFloat).contiguous();
  const int64_t T = bits.size(0), D = bits.size(1), O = rows.size(1);
  torch::Tensor b;
  if (bias.has_value() && bias->defined()) {
    b = bias->to(torch::kFloat).contiguous();
    TORCH_CHECK(b.numel() == O, "select_rows (C++): bias of O elements expected");
  }
  auto out = torch::empty({T, O}, rows.options());
  const float* bp = bits.data_ptr<float>();
  const float* rp = rows.data_ptr<float>();
  const float* biasp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) select_token(bp + t * D, rp, biasp, op + t * O, D, O);
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("select_rows", &select_rows, "binarized selection: bias + the rows (D, O) selected by bits (T, D)");
  m.def("forward", &l1_forward, "pairwise L1 distances (N, T, D) x (N, S, D) -> (N, T, S)");
  m.def("backward", &l1_backward, "gradients of the pairwise L1 distances");
}
