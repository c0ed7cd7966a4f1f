// CPU kernels for gzone.projection_kernels, as XLA FFI handlers (see gzone/native.py).
//
//   gzone_fwht         y = H pad_L(x) along the last axis (H the unnormalised Walsh-Hadamard
//                      transform, float32 or float64; leading axes are a batch), in cache-sized
//                      passes: up to L = 2^20, two passes over y instead of XLA's one pass per
//                      radix-4 stage, with the padding done in the first;
//   gzone_gather_fwht  y = H u, u[t] = w[perm[t] mod m] gauss[t] (Fastfood's P z), u made block
//                      by block in the first pass;
//   gzone_sell_sum     y[r] = sum of +-x[i] over the entries of output r in a sliced-ELL layout
//                      (groups of 8 outputs, slot-major within a group, gzone/sell.py): a sparse
//                      product with a shared magnitude per column, P z or P^T v.
//
// Work is split into fixed chunks run on XLA's intra-op thread pool; a chunk's result does not
// depend on which thread runs it, so results are deterministic.

#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__x86_64__) && defined(__linux__)
#define GZ_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))  // v3: AVX2 + FMA
#else
#define GZ_CLONES
#endif
#define GZ_INLINE __attribute__((always_inline)) inline

namespace {

// Runs f(0) .. f(n - 1) on the calling thread and the pool. The caller claims chunks like the
// helpers do and waits only for chunks already claimed, so a helper that starts late (or never)
// cannot block it.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, F&& f) {
  if (n <= 0) return;
  struct State {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto state = std::make_shared<State>();
  auto* fn = &f;
  auto work = [state, fn, n]() {
    for (int64_t c; (c = state->next.fetch_add(1)) < n;) {
      (*fn)(c);
      state->done.fetch_add(1);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    auto w = work;
    pool.Schedule(std::move(w));
  }
  work();
  while (state->done.load() < n) std::this_thread::yield();
}

// ------------------------------------------------------------------------------------ fwht

typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));
typedef long long v4l __attribute__((vector_size(32)));

constexpr int kBlockBits = 12;  // pass 1: contiguous blocks of 2^12 entries (16 KB of float32)
constexpr int kTileBits = 8;    // later passes: at most 2^8 rows of a tile ...
constexpr int kTileW = 16;      // ... 16 entries wide (16 KB of float32)

// The butterflies of index bits log2(h), log2(2h), ... of R rows x[r * w + c] (c < w): two
// stages per sweep (radix 4), which rounds like two radix-2 stages.
template <typename T>
GZ_INLINE void RowStages(T* __restrict x, int64_t R, int64_t w, int64_t h) {
  while (h < R) {
    if (2 * h < R) {
      for (int64_t i = 0; i < R; i += 4 * h)
        for (int64_t r = i; r < i + h; ++r) {
          T* __restrict u0 = x + r * w;
          T* __restrict u1 = u0 + h * w;
          T* __restrict u2 = u1 + h * w;
          T* __restrict u3 = u2 + h * w;
          for (int64_t c = 0; c < w; ++c) {
            T a = u0[c] + u1[c], b = u0[c] - u1[c], e = u2[c] + u3[c], f = u2[c] - u3[c];
            u0[c] = a + e;
            u1[c] = b + f;
            u2[c] = a - e;
            u3[c] = b - f;
          }
        }
      h *= 4;
    } else {
      for (int64_t i = 0; i < R; i += 2 * h)
        for (int64_t r = i; r < i + h; ++r) {
          T* __restrict u = x + r * w;
          T* __restrict v = u + h * w;
          for (int64_t c = 0; c < w; ++c) {
            T a = u[c], b = v[c];
            u[c] = a + b;
            v[c] = a - b;
          }
        }
      h *= 2;
    }
  }
}

// y_i = s_i x_i + x_{i^h} with s_i = -1 where bit h of i is set: the butterfly of bit h inside a
// register (exact: s_i x_i is exact, so this is a + b or a - b rounded once).
template <typename V, typename I>
GZ_INLINE V Butterfly(V v, V s, I p) {
  return v * s + __builtin_shuffle(v, p);
}

// In place: the transform of a contiguous block of n = 2^b entries, n >= 8.
GZ_CLONES void BlockF32(float* __restrict x, int64_t n) {
  const v8i p1 = {1, 0, 3, 2, 5, 4, 7, 6}, p2 = {2, 3, 0, 1, 6, 7, 4, 5}, p4 = {4, 5, 6, 7, 0, 1, 2, 3};
  const v8f s1 = {1, -1, 1, -1, 1, -1, 1, -1}, s2 = {1, 1, -1, -1, 1, 1, -1, -1},
            s4 = {1, 1, 1, 1, -1, -1, -1, -1};
  for (int64_t i = 0; i < n; i += 8) {
    v8f v;
    std::memcpy(&v, x + i, sizeof v);
    v = Butterfly(Butterfly(Butterfly(v, s1, p1), s2, p2), s4, p4);
    std::memcpy(x + i, &v, sizeof v);
  }
  RowStages(x, n / 8, 8, 1);
}

GZ_CLONES void BlockF64(double* __restrict x, int64_t n) {
  const v4l p1 = {1, 0, 3, 2}, p2 = {2, 3, 0, 1};
  const v4d s1 = {1, -1, 1, -1}, s2 = {1, 1, -1, -1};
  for (int64_t i = 0; i < n; i += 4) {
    v4d v;
    std::memcpy(&v, x + i, sizeof v);
    v = Butterfly(Butterfly(v, s1, p1), s2, p2);
    std::memcpy(x + i, &v, sizeof v);
  }
  RowStages(x, n / 4, 4, 1);
}

template <typename T>
GZ_INLINE void SmallBlock(T* x, int64_t n) {  // n < 8
  RowStages(x, n, 1, 1);
}

// In place: the butterflies of R = 2^bits rows at stride `stride` (a multiple of kTileW) for
// kTileW consecutive columns, through an L1-sized tile.
template <typename T>
GZ_INLINE void TileT(T* base, int64_t R, int64_t stride) {
  alignas(64) T t[(1 << kTileBits) * kTileW];
  for (int64_t r = 0; r < R; ++r) std::memcpy(t + r * kTileW, base + r * stride, sizeof(T) * kTileW);
  RowStages(t, R, kTileW, 1);
  for (int64_t r = 0; r < R; ++r) std::memcpy(base + r * stride, t + r * kTileW, sizeof(T) * kTileW);
}
GZ_CLONES void TileF32(float* base, int64_t R, int64_t stride) { TileT(base, R, stride); }
GZ_CLONES void TileF64(double* base, int64_t R, int64_t stride) { TileT(base, R, stride); }

void Block(float* x, int64_t n) { n >= 8 ? BlockF32(x, n) : SmallBlock(x, n); }
void Block(double* x, int64_t n) { n >= 8 ? BlockF64(x, n) : SmallBlock(x, n); }
void Tile(float* b, int64_t R, int64_t s) { TileF32(b, R, s); }
void Tile(double* b, int64_t R, int64_t s) { TileF64(b, R, s); }

// x = H (the input), x: [batch, L], with H_L = H_2 (x) ... (x) H_2 applied as index bits
// [0, kBlockBits) in contiguous blocks, then the higher bits in as few groups of at most kTileBits
// as there can be, in tiles: for L <= 2^20 two passes over x. fill(c, dst, block) writes entries
// [c*block, (c+1)*block) of the flattened input into dst (that part of x) just before pass 1
// transforms them in cache.
template <typename T, typename Fill>
void Wht(ffi::ThreadPool& pool, T* x, int64_t batch, int64_t L, Fill&& fill) {
  int p = 0;
  while ((int64_t{1} << p) < L) ++p;
  const int low = std::min(p, kBlockBits);
  const int64_t block = int64_t{1} << low;
  ParallelFor(pool, batch * (L / block), [&](int64_t c) {
    fill(c, x + c * block, block);
    Block(x + c * block, block);
  });
  const int passes = (p - low + kTileBits - 1) / kTileBits;
  for (int lo = low, pass = 0; pass < passes; ++pass) {
    const int bits = (p - lo + (passes - pass) - 1) / (passes - pass);
    const int64_t R = int64_t{1} << bits, stride = int64_t{1} << lo, span = stride * R;
    const int64_t tiles = stride / kTileW;  // stride >= 2^kBlockBits, a multiple of kTileW
    ParallelFor(pool, batch * (L / span) * tiles, [&](int64_t c) {
      Tile(x + (c / tiles) * span + (c % tiles) * kTileW, R, stride);
    });
    lo += bits;
  }
}

// Batch axes of an operand against the output's: the same rank, each axis of the output's size or
// 1 (vmap_method="expand_dims"). Offset(b): the element offset of the output's flat batch element
// b in the operand, whose last axis has `core` entries.
class Batch {
 public:
  Batch(ffi::AnyBuffer::Dimensions out, ffi::AnyBuffer::Dimensions x, int64_t core) {
    rank_ = std::min<int64_t>(kMaxRank, static_cast<int64_t>(out.size()) - 1);
    const int64_t shift = static_cast<int64_t>(x.size()) - static_cast<int64_t>(out.size());
    int64_t stride = core;
    for (int64_t a = rank_ - 1; a >= 0; --a) {
      const int64_t n = a + shift >= 0 ? x[a + shift] : 1;
      size_[a] = out[a];
      stride_[a] = n == 1 ? 0 : stride;
      stride *= n;
    }
  }
  int64_t Offset(int64_t b) const {
    int64_t off = 0;
    for (int64_t a = rank_ - 1; a >= 0; --a) {
      off += (b % size_[a]) * stride_[a];
      b /= size_[a];
    }
    return off;
  }

  static constexpr int64_t kMaxRank = 8;  // batch axes (nested vmaps) at most

 private:
  int64_t rank_ = 0, size_[kMaxRank] = {}, stride_[kMaxRank] = {};
};

bool PowerOfTwo(int64_t L) { return L > 0 && (L & (L - 1)) == 0; }

// y = H pad_L(x): x [..., n] with n <= L = y's last axis, zeros beyond n.
template <typename T>
ffi::Error FwhtTyped(ffi::ThreadPool& pool, ffi::AnyBuffer x, ffi::AnyBuffer y) {
  const int64_t L = y.dimensions().back(), n = x.dimensions().back(), batch = y.element_count() / L;
  const T* src = x.typed_data<T>();
  Wht(pool, y.typed_data<T>(), batch, L, [&](int64_t c, T* dst, int64_t block) {
    const int64_t row = (c * block) / L, off = (c * block) % L;
    const int64_t m = std::max<int64_t>(0, std::min(block, n - off));
    std::memcpy(dst, src + row * n + off, sizeof(T) * m);
    std::fill(dst + m, dst + block, T(0));
  });
  return ffi::Error::Success();
}

ffi::Error FwhtImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y) {
  const auto xd = x.dimensions(), yd = y->dimensions();
  if (xd.size() == 0 || xd.size() != yd.size() || !PowerOfTwo(yd.back()) || xd.back() > yd.back())
    return ffi::Error::InvalidArgument("gzone_fwht: x [..., n], y [..., L], L a power of two >= n");
  if (x.element_type() != y->element_type()) return ffi::Error::InvalidArgument("gzone_fwht: dtypes differ");
  if (x.element_type() == ffi::F32) return FwhtTyped<float>(pool, x, *y);
  if (x.element_type() == ffi::F64) return FwhtTyped<double>(pool, x, *y);
  return ffi::Error::InvalidArgument("gzone_fwht: float32 or float64 only");
}

// y = H u with u[t] = w[perm[t] mod m] gauss[t]: w [..., m] (m a power of two), perm (int32) and
// gauss [..., L].
template <typename T>
ffi::Error GatherFwhtTyped(ffi::ThreadPool& pool, ffi::AnyBuffer w, ffi::AnyBuffer perm, ffi::AnyBuffer gauss,
                           ffi::AnyBuffer y) {
  const int64_t L = y.dimensions().back(), m = w.dimensions().back(), batch = y.element_count() / L;
  const Batch bw(y.dimensions(), w.dimensions(), m), bp(y.dimensions(), perm.dimensions(), L),
      bg(y.dimensions(), gauss.dimensions(), L);
  const T* wv = w.typed_data<T>();
  const int32_t* pv = perm.typed_data<int32_t>();
  const T* gv = gauss.typed_data<T>();
  const uint32_t mask = static_cast<uint32_t>(m - 1);
  Wht(pool, y.typed_data<T>(), batch, L, [&](int64_t c, T* dst, int64_t block) {
    const int64_t row = (c * block) / L, off = (c * block) % L;
    const T* wr = wv + bw.Offset(row);
    const int32_t* pr = pv + bp.Offset(row) + off;
    const T* gr = gv + bg.Offset(row) + off;
    for (int64_t t = 0; t < block; ++t) dst[t] = wr[static_cast<uint32_t>(pr[t]) & mask] * gr[t];
  });
  return ffi::Error::Success();
}

ffi::Error GatherFwhtImpl(ffi::ThreadPool pool, ffi::AnyBuffer w, ffi::AnyBuffer perm, ffi::AnyBuffer gauss,
                          ffi::Result<ffi::AnyBuffer> y) {
  const int64_t L = y->dimensions().back();
  if (!PowerOfTwo(L) || !PowerOfTwo(w.dimensions().back()) || w.dimensions().back() > L ||
      perm.dimensions().back() != L || gauss.dimensions().back() != L || perm.element_type() != ffi::S32)
    return ffi::Error::InvalidArgument(
        "gzone_gather_fwht: w [..., m], perm int32 and gauss [..., L], powers of two");
  if (w.element_type() != y->element_type() || gauss.element_type() != y->element_type())
    return ffi::Error::InvalidArgument("gzone_gather_fwht: dtypes differ");
  if (static_cast<int64_t>(y->dimensions().size()) - 1 > Batch::kMaxRank)
    return ffi::Error::InvalidArgument("gzone_gather_fwht: more than 8 batch axes");
  if (w.element_type() == ffi::F32) return GatherFwhtTyped<float>(pool, w, perm, gauss, *y);
  if (w.element_type() == ffi::F64) return GatherFwhtTyped<double>(pool, w, perm, gauss, *y);
  return ffi::Error::InvalidArgument("gzone_gather_fwht: float32 or float64 only");
}

// ------------------------------------------------------------------------------------ sell

constexpr int kSellC = 8;           // outputs a group
constexpr int64_t kSellChunk = 256;  // groups a chunk

// Groups [g0, g1) of one block: x holds the block's m table entries and a 0 at x[m]; an entry is a
// uint16, bit 15 the sign, bits 0-14 the index in the block (m or more: padding, adds x[m] = 0).
// The sums run slot by slot from 0, in the layout's order.
template <typename T>
GZ_CLONES void SellGroups(const T* __restrict x, int64_t m, const uint16_t* __restrict idx,
                          const int32_t* __restrict off, const int32_t* __restrict perm, T* __restrict out,
                          int64_t R, int64_t g0, int64_t g1) {
  typedef typename std::conditional<sizeof(T) == 8, uint64_t, uint32_t>::type Bits;
  constexpr int shift = 8 * sizeof(T) - 16;
  const uint32_t pad = static_cast<uint32_t>(m);
  for (int64_t g = g0; g < g1; ++g) {
    T acc[kSellC] = {};
    const uint16_t* p = idx + off[g];
    const int64_t w = (off[g + 1] - off[g]) / kSellC;
    for (int64_t k = 0; k < w; ++k, p += kSellC) {
      for (int c = 0; c < kSellC; ++c) {
        const uint32_t u = p[c];
        T t = x[std::min(u & 0x7fffu, pad)];
        Bits b;
        std::memcpy(&b, &t, sizeof(T));
        b ^= static_cast<Bits>(u & 0x8000u) << shift;
        std::memcpy(&t, &b, sizeof(T));
        acc[c] += t;
      }
    }
    for (int c = 0; c < kSellC; ++c) {
      const int32_t r = perm[g * kSellC + c];
      if (r < R) out[r] = acc[c];
    }
  }
}

#if defined(__x86_64__)
// The same for float32 with AVX2 gathers, a group's 8 sums in one register (the same adds in the
// same order, so the same results).
__attribute__((target("avx2"))) void SellGroupsAvx2(const float* __restrict x, int64_t m,
                                                    const uint16_t* __restrict idx, const int32_t* __restrict off,
                                                    const int32_t* __restrict perm, float* __restrict out, int64_t R,
                                                    int64_t g0, int64_t g1) {
  const __m256i low = _mm256_set1_epi32(0x7fff), sign = _mm256_set1_epi32(0x8000),
                pad = _mm256_set1_epi32(static_cast<int>(m));
  for (int64_t g = g0; g < g1; ++g) {
    __m256 acc = _mm256_setzero_ps();
    const uint16_t* p = idx + off[g];
    const int64_t w = (off[g + 1] - off[g]) / kSellC;
    for (int64_t k = 0; k < w; ++k, p += kSellC) {
      const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      const __m256 t = _mm256_i32gather_ps(x, _mm256_min_epu32(_mm256_and_si256(u, low), pad), 4);
      const __m256i s = _mm256_slli_epi32(_mm256_and_si256(u, sign), 16);
      acc = _mm256_add_ps(acc, _mm256_xor_ps(t, _mm256_castsi256_ps(s)));
    }
    alignas(32) float a[kSellC];
    _mm256_store_ps(a, acc);
    for (int c = 0; c < kSellC; ++c) {
      const int32_t r = perm[g * kSellC + c];
      if (r < R) out[r] = a[c];
    }
  }
}
#endif

template <typename T>
void SellBlock(const T* x, int64_t m, const uint16_t* idx, const int32_t* off, const int32_t* perm, T* out,
               int64_t R, int64_t g0, int64_t g1) {
#if defined(__x86_64__)
  if constexpr (std::is_same<T, float>::value) {
    static const bool avx2 = __builtin_cpu_supports("avx2");
    if (avx2) return SellGroupsAvx2(x, m, idx, off, perm, out, R, g0, g1);
  }
#endif
  SellGroups<T>(x, m, idx, off, perm, out, R, g0, g1);
}

// y [R] from x [n] in blocks of B entries: block b's G groups start at off[b * G]; with more than
// one block, each block's sums go to a row of partial sums, added in block order.
template <typename T>
ffi::Error SellTyped(ffi::ThreadPool& pool, ffi::AnyBuffer x, ffi::AnyBuffer idx, ffi::AnyBuffer off,
                     ffi::AnyBuffer perm, int64_t B, ffi::AnyBuffer y) {
  const int64_t n = x.element_count(), R = y.element_count(), nb = (n + B - 1) / B;
  const int64_t G = (static_cast<int64_t>(off.element_count()) - 1) / nb;
  const T* xv = x.typed_data<T>();
  const uint16_t* iv = idx.typed_data<uint16_t>();
  const int32_t* ov = off.typed_data<int32_t>();
  const int32_t* pv = perm.typed_data<int32_t>();
  T* yv = y.typed_data<T>();
  std::unique_ptr<T[]> partial(nb > 1 ? new T[nb * R]() : nullptr);  // outputs in no group: 0
  if (nb == 1) std::fill(yv, yv + R, T(0));
  std::unique_ptr<T[]> table(new T[n + nb]);  // block b at b (B + 1), then a 0
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t m = std::min(B, n - b * B);
    std::memcpy(table.get() + b * (B + 1), xv + b * B, sizeof(T) * m);
    table[b * (B + 1) + m] = T(0);
  }
  const int64_t chunks = (G + kSellChunk - 1) / kSellChunk;
  ParallelFor(pool, nb * chunks, [&](int64_t c) {
    const int64_t b = c / chunks, g0 = (c % chunks) * kSellChunk, g1 = std::min(G, g0 + kSellChunk);
    SellBlock<T>(table.get() + b * (B + 1), std::min(B, n - b * B), iv, ov + b * G, pv + b * G * kSellC,
                 nb > 1 ? partial.get() + b * R : yv, R, g0, g1);
  });
  if (nb > 1) {
    constexpr int64_t kSpan = 4096;
    ParallelFor(pool, (R + kSpan - 1) / kSpan, [&](int64_t c) {
      const int64_t r1 = std::min(R, (c + 1) * kSpan);
      for (int64_t r = c * kSpan; r < r1; ++r) {
        T s = partial[r];
        for (int64_t b = 1; b < nb; ++b) s += partial[b * R + r];
        yv[r] = s;
      }
    });
  }
  return ffi::Error::Success();
}

ffi::Error SellImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer idx, ffi::AnyBuffer off,
                    ffi::AnyBuffer perm, int64_t block, ffi::Result<ffi::AnyBuffer> y) {
  const int64_t n = x.element_count(), nb = block > 0 ? (n + block - 1) / block : 0;
  if (x.dimensions().size() != 1 || y->dimensions().size() != 1 || idx.dimensions().size() != 1 ||
      off.dimensions().size() != 1 || perm.dimensions().size() != 1 || n == 0 || block <= 0 ||
      block > 0x7fff || idx.element_type() != ffi::U16 || off.element_type() != ffi::S32 ||
      perm.element_type() != ffi::S32 || (static_cast<int64_t>(off.element_count()) - 1) % nb != 0 ||
      static_cast<int64_t>(perm.element_count()) !=
          (static_cast<int64_t>(off.element_count()) - 1) * kSellC)
    return ffi::Error::InvalidArgument(
        "gzone_sell_sum: x [n], idx uint16, off int32 [nb G + 1], perm int32 [8 nb G], "
        "0 < block < 2^15, nb = ceil(n / block)");
  if (x.element_type() != y->element_type()) return ffi::Error::InvalidArgument("gzone_sell_sum: dtypes differ");
  if (x.element_type() == ffi::F32) return SellTyped<float>(pool, x, idx, off, perm, block, *y);
  if (x.element_type() == ffi::F64) return SellTyped<double>(pool, x, idx, off, perm, block, *y);
  return ffi::Error::InvalidArgument("gzone_sell_sum: float32 or float64 only");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(gzone_fwht, FwhtImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(gzone_gather_fwht, GatherFwhtImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(gzone_sell_sum, SellImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<int64_t>("block")
                                  .Ret<ffi::AnyBuffer>());
// ------------------------------------------------------------------------- Python module

static PyObject* Targets(PyObject*, PyObject*) {
  PyObject* out = PyDict_New();
  if (out == nullptr) return nullptr;
  const struct {
    const char* name;
    void* fn;
  } targets[] = {{"gzone_fwht", reinterpret_cast<void*>(gzone_fwht)},
                 {"gzone_gather_fwht", reinterpret_cast<void*>(gzone_gather_fwht)},
                 {"gzone_sell_sum", reinterpret_cast<void*>(gzone_sell_sum)}};
  for (const auto& t : targets) {
    PyObject* capsule = PyCapsule_New(t.fn, nullptr, nullptr);
    if (capsule == nullptr || PyDict_SetItemString(out, t.name, capsule) != 0) {
      Py_XDECREF(capsule);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(capsule);
  }
  return out;
}

static PyMethodDef kMethods[] = {
    {"targets", Targets, METH_NOARGS, "{name: PyCapsule} of the XLA FFI handlers in this module."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_native", "gzone's CPU kernels (XLA FFI).", -1,
                                     kMethods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&kModule); }
