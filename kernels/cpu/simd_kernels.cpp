// SPDX-License-Identifier: MIT
// Vectorised tile kernels: the element math of kernels/common written once more in
// Highway vector ops, compiled for every SIMD target Highway knows (foreach_target)
// and dispatched at run time to the best one the CPU has. The results must equal
// reference_kernels() bit for bit, so each vector function below is the lane-wise
// image of an elem:: function: the same IEEE operations in the same order (separate
// Mul and Add, never MulAdd, which fuses on AVX2/AVX-512), data-dependent branches
// turned into masks. Per-tile scalars (LogFMT tile parameters and the first level)
// come from the elem:: functions themselves.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <epcomm/formats.hpp>

#include "common/bf16.hpp"
#include "common/fp8_e4m3.hpp"
#include "common/logfmt_math.hpp"
#include "cpu/simd_kernels.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd_kernels.cpp"
#include <hwy/foreach_target.h>  // re-includes this file once per target

#include <hwy/highway.h>

// LogFMT codes of 16 bits and BF16 values are stored as native uint16 lanes; the
// formats are little-endian.
static_assert(std::endian::native == std::endian::little, "epcomm's SIMD kernels assume a little-endian host");

HWY_BEFORE_NAMESPACE();
namespace epcomm::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;
using DU8 = hn::Rebind<uint8_t, DF>;
using DU16 = hn::Rebind<uint16_t, DF>;
using VF = hn::Vec<DF>;
using VU = hn::Vec<DU>;
using VI = hn::Vec<DI>;
using MF = hn::Mask<DF>;

// ---------------------------------------------------------------- loads and stores
// A tile is rarely a multiple of the vector length: the last, partial vector goes
// through a zero-padded stack copy, so it runs the very same vector code and nothing
// reads or writes past the caller's n elements.

template <class D>
HWY_INLINE hn::Vec<D> LoadPart(D d, const void* p, size_t count) {
  using T = hn::TFromD<D>;
  if (HWY_LIKELY(count == hn::Lanes(d))) return hn::LoadU(d, static_cast<const T*>(p));
  HWY_ALIGN T buf[hn::MaxLanes(D())] = {};
  std::memcpy(buf, p, count * sizeof(T));
  return hn::Load(d, buf);
}

template <class D>
HWY_INLINE void StorePart(hn::Vec<D> v, D d, void* p, size_t count) {
  using T = hn::TFromD<D>;
  if (HWY_LIKELY(count == hn::Lanes(d))) return hn::StoreU(v, d, static_cast<T*>(p));
  HWY_ALIGN T buf[hn::MaxLanes(D())];
  hn::Store(v, d, buf);
  std::memcpy(p, buf, count * sizeof(T));
}

// Calls body(i, count) for each vector's worth of [0, n): count is the lane count
// except for a last, partial vector.
template <class Body>
HWY_INLINE void ForEachVector(int n, Body body) {
  const size_t lanes = hn::Lanes(DF());
  const size_t total = static_cast<size_t>(n);
  for (size_t i = 0; i < total; i += lanes) body(i, std::min(lanes, total - i));
}

// ---------------------------------------------------------------- host_device.hpp

HWY_INLINE VU Bits(VF v) { return hn::BitCast(DU(), v); }
HWY_INLINE VF FromBits(VU u) { return hn::BitCast(DF(), u); }
HWY_INLINE VU AbsBits(VF v) { return hn::And(Bits(v), hn::Set(DU(), 0x7fffffffu)); }

// elem::is_nan: |bits| above the infinity pattern (both fit int32, so a signed
// compare is exact).
HWY_INLINE MF NanLanes(VF v) {
  const DI di;
  return hn::RebindMask(DF(), hn::Gt(hn::BitCast(di, AbsBits(v)), hn::Set(di, 0x7f800000)));
}

// elem::is_finite: the exponent field is not all ones.
HWY_INLINE MF FiniteLanes(VF v) {
  const DU du;
  const VU exp = hn::And(Bits(v), hn::Set(du, 0x7f800000u));
  return hn::RebindMask(DF(), hn::Ne(exp, hn::Set(du, 0x7f800000u)));
}

// elem::pow2i (e <= -127 written as e < -126: Highway's integer compares are < and >).
HWY_INLINE VF Pow2i(VI e) {
  const DI di;
  const VI biased = hn::ShiftLeft<23>(hn::Add(e, hn::Set(di, 127)));
  const VI r = hn::IfThenElse(hn::Lt(e, hn::Set(di, -126)), hn::Set(di, 0x00400000), biased);
  return hn::BitCast(DF(), r);
}

// rintf for 0 <= v < 2^23 in the default rounding mode: adding 2^23 leaves no
// fraction bits, so the FPU rounds half to even exactly as rintf does, on every
// target alike (Highway's Round is emulated in software on SSSE3 and SCALAR).
HWY_INLINE VF RintSmallNonNegative(VF v) {
  const VF big = hn::Set(DF(), 0x1p23f);
  return hn::Sub(hn::Add(v, big), big);
}

// ---------------------------------------------------------------- fp8_e4m3.hpp

// elem::f32_to_e4m3, the code in the low byte of each lane.
HWY_INLINE VU E4m3FromF32(VF f) {
  const DF df;
  const DU du;
  const VU sign = hn::And(hn::ShiftRight<24>(Bits(f)), hn::Set(du, 0x80u));
  const VU abs_bits = AbsBits(f);
  const VF a = FromBits(abs_bits);
  const MF sub = hn::Lt(a, hn::Set(df, 0x1p-6f));
  // Subnormal range, in units of 2^-9 (a * 512 is exact). Other lanes are zeroed
  // first so that no out-of-range value reaches the integer conversion.
  const VF units = RintSmallNonNegative(hn::IfThenElseZero(sub, hn::Mul(a, hn::Set(df, 512.0f))));
  const VU sub_code = hn::BitCast(du, hn::ConvertTo(DI(), units));
  // Normal range: round half to even on the 3 kept mantissa bits, rebias 127 -> 7,
  // saturate at 0x7e (unsigned, so the wrapped values of other lanes are harmless).
  VU r = hn::Add(abs_bits, hn::Add(hn::Set(du, 0x7ffffu), hn::And(hn::ShiftRight<20>(abs_bits), hn::Set(du, 1u))));
  VU code = hn::Min(hn::Sub(hn::ShiftRight<20>(r), hn::Set(du, 120u << 3)), hn::Set(du, 0x7eu));
  // The reference's branches, lowest priority first: subnormal, saturate, NaN.
  code = hn::IfThenElse(hn::RebindMask(du, sub), sub_code, code);
  code = hn::IfThenElse(hn::RebindMask(du, hn::Ge(a, hn::Set(df, elem::kE4M3Max))), hn::Set(du, 0x7eu), code);
  code = hn::IfThenElse(hn::RebindMask(du, NanLanes(f)), hn::Set(du, 0x7fu), code);
  return hn::Or(sign, code);
}

// elem::e4m3_to_f32 of the byte in each lane. The 7 magnitude bits moved to FP32's
// exponent and mantissa fields, exponent rebiased by +120, are the value of every
// normal code. A subnormal code (exponent field 0) is built as the normal number
// 2^-6 * (1 + man/8), from which 2^-6 is subtracted: both lie in [2^-6, 2^-5), so the
// difference man * 2^-9 is exact, and no FP32 subnormal is involved (nothing depends
// on a denormals-are-zero mode).
HWY_INLINE VF F32FromE4m3(VU q) {
  const DU du;
  const VU mag = hn::And(q, hn::Set(du, 0x7fu));
  const VU sign = hn::ShiftLeft<24>(hn::And(q, hn::Set(du, 0x80u)));
  const VU normal = hn::Add(hn::ShiftLeft<20>(mag), hn::Set(du, 120u << 23));
  const VF subnormal = hn::Sub(FromBits(hn::Add(normal, hn::Set(du, 1u << 23))), hn::Set(DF(), 0x1p-6f));
  VU r = hn::IfThenElse(hn::Eq(hn::And(mag, hn::Set(du, 0x78u)), hn::Zero(du)), Bits(subnormal), normal);
  // S.1111.111: NaN.
  r = hn::IfThenElse(hn::Eq(mag, hn::Set(du, 0x7fu)), hn::Set(du, 0x7fc00000u), r);
  return FromBits(hn::Or(r, sign));
}

// fp8_decode's value of `count` codes: elem::e4m3_to_f32, times the tile's scale.
HWY_INLINE VF Fp8Value(const uint8_t* codes, size_t count, VF scale) {
  return hn::Mul(F32FromE4m3(hn::PromoteTo(DU(), LoadPart(DU8(), codes, count))), scale);
}

// ---------------------------------------------------------------- bf16.hpp

// elem::bf16_to_f32 of `count` values.
HWY_INLINE VF Bf16Value(const uint16_t* x, size_t count) {
  return FromBits(hn::ShiftLeft<16>(hn::PromoteTo(DU(), LoadPart(DU16(), x, count))));
}

// ---------------------------------------------------------------- logfmt_math.hpp

// elem::log2_poly (x positive; other lanes compute garbage that callers discard).
HWY_INLINE VF Log2Poly(VF x) {
  const DF df;
  const DU du;
  const DI di;
  const VU u = Bits(x);
  const VF e = hn::ConvertTo(df, hn::Sub(hn::BitCast(di, hn::ShiftRight<23>(u)), hn::Set(di, 127)));
  const VF f = hn::Sub(FromBits(hn::Or(hn::And(u, hn::Set(du, 0x7fffffu)), hn::Set(du, 0x3f800000u))), hn::Set(df, 1.0f));
  VF p = hn::Set(df, 0.020236155f);
  p = hn::Add(hn::Mul(p, f), hn::Set(df, -0.094884835f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 0.21367069f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, -0.33783957f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 0.47722548f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, -0.7210956f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 1.4426907f));
  return hn::Add(e, hn::Mul(f, p));
}

// elem::exp2_poly.
HWY_INLINE VF Exp2Poly(VF y) {
  const DF df;
  y = hn::IfThenElse(hn::Lt(y, hn::Set(df, -126.0f)), hn::Set(df, -126.0f), y);
  y = hn::IfThenElse(hn::Gt(y, hn::Set(df, 127.99998f)), hn::Set(df, 127.99998f), y);
  const VF i = hn::Floor(y);
  const VF f = hn::Sub(y, i);
  VF p = hn::Set(df, 0.00021871246f);
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 0.0012382413f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 0.009686188f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 0.05547891f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 0.2402311f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 0.6931468f));
  p = hn::Add(hn::Mul(p, f), hn::Set(df, 1.0f));
  p = hn::IfThenElse(hn::Lt(p, hn::Set(df, 1.9999999f)), p, hn::Set(df, 1.9999999f));
  return hn::Mul(p, Pow2i(hn::ConvertTo(DI(), i)));
}

// elem::log_level for per-lane k.
HWY_INLINE VF LogLevel(elem::LogTile t, VI k) {
  const DF df;
  const VF km1 = hn::ConvertTo(df, hn::Sub(k, hn::Set(DI(), 1)));
  return Exp2Poly(hn::Add(hn::Mul(km1, hn::Set(df, t.step)), hn::Set(df, t.min)));
}

// elem::log_encode_magnitude for a >= 0 finite; v1 = elem::log_level(t, 1), a
// per-tile constant. The reference's early returns become selects, lowest priority
// first.
HWY_INLINE VI LogEncodeMagnitude(VF a, elem::LogTile t, float v1, int levels) {
  const DF df;
  const DI di;
  const VI one = hn::Set(di, 1);
  VI mag = one;  // what `t.step <= 0` returns
  if (!(t.step <= 0.0f)) {
    VF pos = hn::Floor(hn::Div(hn::Sub(Log2Poly(a), hn::Set(df, t.min)), hn::Set(df, t.step)));
    pos = hn::IfThenElse(hn::Lt(pos, hn::Zero(df)), hn::Zero(df), pos);
    const VF top = hn::Set(df, static_cast<float>(levels - 2));
    pos = hn::IfThenElse(hn::Gt(pos, top), top, pos);
    const VI k = hn::Add(hn::ConvertTo(di, pos), one);
    const VI k1 = hn::Add(k, one);
    const VF lo = LogLevel(t, k), hi = LogLevel(t, k1);
    mag = hn::IfThenElse(hn::RebindMask(di, hn::Gt(hn::Sub(a, lo), hn::Sub(hi, a))), k1, k);
  }
  // Between zero and level 1 (the reference's `a - 0.0f` is `a` for every finite a).
  const VF vv1 = hn::Set(df, v1);
  const VI below_v1 = hn::IfThenElseZero(hn::RebindMask(di, hn::Gt(a, hn::Sub(vv1, a))), one);
  mag = hn::IfThenElse(hn::RebindMask(di, hn::Le(a, vv1)), below_v1, mag);
  return hn::IfThenZeroElse(hn::RebindMask(di, hn::Lt(a, hn::Set(df, elem::kLogZeroBelow))), mag);
}

// The full code of each lane of x: magnitude, and the sign bit at `bits - 1` when the
// magnitude is not zero.
HWY_INLINE VU LogEncode(VF x, elem::LogTile t, float v1, int levels, int bits) {
  const DU du;
  const VU mag = hn::BitCast(du, LogEncodeMagnitude(hn::Abs(x), t, v1, levels));
  const VU sign = hn::IfThenZeroElse(hn::Eq(mag, hn::Zero(du)), hn::ShiftRight<31>(Bits(x)));
  return hn::Or(mag, hn::ShiftLeftSame(sign, bits - 1));
}

// elem::log_decode.
HWY_INLINE VF LogDecode(VU code, elem::LogTile t, int bits) {
  const DU du;
  const VU mag = hn::And(code, hn::Set(du, (1u << (bits - 1)) - 1u));
  const VU sign = hn::And(hn::ShiftRightSame(code, bits - 1), hn::Set(du, 1u));
  const VF v = hn::IfThenZeroElse(hn::RebindMask(DF(), hn::Eq(mag, hn::Zero(du))), LogLevel(t, hn::BitCast(DI(), mag)));
  return FromBits(hn::Or(Bits(v), hn::ShiftLeft<31>(sign)));
}

// ---------------------------------------------------------------- bit streams
// Codes are a little-endian bit stream, code i at bits [i*bits, (i+1)*bits). Widths
// 8 and 16 are plain byte/uint16 arrays and stay in vectors; the others go through
// these scalar loops over a uint32 code array.

void PackCodes(const uint32_t* codes, int n, int bits, uint8_t* out) {
  uint64_t acc = 0;
  int filled = 0;
  for (int i = 0; i < n; ++i) {
    acc |= static_cast<uint64_t>(codes[i]) << filled;
    filled += bits;
    if (filled >= 32) {
      const uint32_t word = static_cast<uint32_t>(acc);
      std::memcpy(out, &word, 4);
      out += 4;
      acc >>= 32;
      filled -= 32;
    }
  }
  for (; filled > 0; filled -= 8, acc >>= 8) *out++ = static_cast<uint8_t>(acc);
}

// Each code is read from the 4 bytes at its first byte (a code spans at most 3), so
// the loop carries no dependency; the last codes, whose 4 bytes would run past the
// stream, are read byte by byte.
void UnpackCodes(const uint8_t* in, int n, int bits, uint32_t* codes) {
  const size_t total = (static_cast<size_t>(n) * static_cast<size_t>(bits) + 7) / 8;
  const uint32_t mask = (1u << bits) - 1u;
  for (int i = 0; i < n; ++i) {
    const size_t bit = static_cast<size_t>(i) * static_cast<size_t>(bits);
    const size_t byte = bit / 8;
    uint32_t word = 0;
    if (HWY_LIKELY(byte + 4 <= total)) {
      std::memcpy(&word, in + byte, 4);
    } else {
      for (size_t b = byte; b < total; ++b) word |= static_cast<uint32_t>(in[b]) << (8 * (b - byte));
    }
    codes[i] = (word >> (bit % 8)) & mask;
  }
}

// ---------------------------------------------------------------- the kernels

float AmaxFinite(const float* x, int n) {
  const DF df;
  VF m = hn::Zero(df);
  ForEachVector(n, [&](size_t i, size_t count) {
    const VF a = hn::Abs(LoadPart(df, x + i, count));
    m = hn::Max(m, hn::IfThenElseZero(FiniteLanes(a), a));
  });
  return hn::GetLane(hn::MaxOfLanes(df, m));
}

void Fp8Encode(const float* x, int n, float scale, uint8_t* codes) {
  const DF df;
  const VF s = hn::Set(df, scale);
  ForEachVector(n, [&](size_t i, size_t count) {
    const VU code = E4m3FromF32(hn::Div(LoadPart(df, x + i, count), s));
    StorePart(hn::TruncateTo(DU8(), code), DU8(), codes + i, count);
  });
}

void Fp8Decode(const uint8_t* codes, int n, float scale, float* out) {
  const VF s = hn::Set(DF(), scale);
  ForEachVector(n, [&](size_t i, size_t count) { StorePart(Fp8Value(codes + i, count, s), DF(), out + i, count); });
}

int LogfmtEncode(const float* x, int n, int bits, uint8_t* codes, int16_t* min_q, int16_t* max_q) {
  const DF df;
  // Pass 1: the first non-finite element, and min/max of the |x| that count as
  // non-zero (min and max are exact whatever the order).
  VF vmin = hn::Set(df, HUGE_VALF), vmax = hn::Zero(df);
  const size_t lanes = hn::Lanes(df);
  for (size_t i = 0; i < static_cast<size_t>(n); i += lanes) {
    const size_t count = std::min(lanes, static_cast<size_t>(n) - i);
    const VF v = LoadPart(df, x + i, count);
    const MF bad = hn::Not(FiniteLanes(v));
    if (!hn::AllFalse(df, bad)) return static_cast<int>(i) + static_cast<int>(hn::FindFirstTrue(df, bad));
    const VF a = hn::Abs(v);
    const MF counted = hn::Ge(a, hn::Set(df, elem::kLogZeroBelow));
    vmin = hn::Min(vmin, hn::IfThenElse(counted, a, hn::Set(df, HUGE_VALF)));
    vmax = hn::Max(vmax, hn::IfThenElseZero(counted, a));
  }
  const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
  if (amax == 0.0f) {  // every code is 0
    *min_q = *max_q = 0;
    std::memset(codes, 0, (static_cast<size_t>(n) * static_cast<size_t>(bits) + 7) / 8);
    return -1;
  }
  const float amin = hn::GetLane(hn::MinOfLanes(df, vmin));
  const elem::LogTile t = elem::log_tile_params(amin, amax, bits, min_q, max_q);
  const int levels = (1 << (bits - 1)) - 1;
  const float v1 = elem::log_level(t, 1);
  // Pass 2: the codes.
  auto code_at = [&](size_t i, size_t count) { return LogEncode(LoadPart(df, x + i, count), t, v1, levels, bits); };
  if (bits == 8) {
    ForEachVector(n, [&](size_t i, size_t count) { StorePart(hn::TruncateTo(DU8(), code_at(i, count)), DU8(), codes + i, count); });
  } else if (bits == 16) {
    ForEachVector(n, [&](size_t i, size_t count) {
      StorePart(hn::TruncateTo(DU16(), code_at(i, count)), DU16(), codes + 2 * i, count);
    });
  } else {
    HWY_ALIGN uint32_t buf[kTileElems];
    ForEachVector(n, [&](size_t i, size_t count) { hn::Store(code_at(i, count), DU(), buf + i); });
    PackCodes(buf, n, bits, codes);
  }
  return -1;
}

// Calls value(i, count, v) with each vector of logfmt_decode's values of one tile.
template <class Value>
HWY_INLINE void ForEachLogValue(const uint8_t* codes, int n, int bits, int16_t min_q, int16_t max_q, Value value) {
  const elem::LogTile t = elem::log_tile_from_stored(min_q, max_q, bits);
  auto decode_with = [&](auto code_at) {
    ForEachVector(n, [&](size_t i, size_t count) { value(i, count, LogDecode(code_at(i, count), t, bits)); });
  };
  if (bits == 8) {
    decode_with([&](size_t i, size_t count) { return hn::PromoteTo(DU(), LoadPart(DU8(), codes + i, count)); });
  } else if (bits == 16) {
    decode_with([&](size_t i, size_t count) { return hn::PromoteTo(DU(), LoadPart(DU16(), codes + 2 * i, count)); });
  } else {
    HWY_ALIGN uint32_t buf[kTileElems];
    UnpackCodes(codes, n, bits, buf);
    decode_with([&](size_t i, size_t count) { return LoadPart(DU(), buf + i, count); });
  }
}

void LogfmtDecode(const uint8_t* codes, int n, int bits, int16_t min_q, int16_t max_q, float* out) {
  ForEachLogValue(codes, n, bits, min_q, max_q,
                  [&](size_t i, size_t count, VF v) { StorePart(v, DF(), out + i, count); });
}

// acc = acc + w * x on `count` lanes: multiply, then add, as the reference axpy.
HWY_INLINE void AddWeighted(VF vw, VF x, float* acc, size_t count) {
  const DF df;
  StorePart(hn::Add(LoadPart(df, acc, count), hn::Mul(vw, x)), df, acc, count);
}

void Axpy(const float* x, int n, float w, float* acc) {
  const VF vw = hn::Set(DF(), w);
  ForEachVector(n, [&](size_t i, size_t count) { AddWeighted(vw, LoadPart(DF(), x + i, count), acc + i, count); });
}

// ---------------------------------------------------------------- fused accumulate
// Each decoded vector goes straight into the weighted add while it is in registers:
// no decoded tile is stored and reloaded, and one dispatched call covers the row.

// Calls body(tile, i0, len) for each tile of [0, n).
template <class Body>
HWY_INLINE void ForEachTile(int n, Body body) {
  for (int t = 0, i0 = 0; i0 < n; ++t, i0 += kTileElems) body(t, i0, std::min(kTileElems, n - i0));
}

void Bf16Axpy(const uint16_t* x, int n, float w, float* acc) {
  const VF vw = hn::Set(DF(), w);
  ForEachVector(n, [&](size_t i, size_t count) { AddWeighted(vw, Bf16Value(x + i, count), acc + i, count); });
}

void Fp8Axpy(const uint8_t* codes, int n, const float* tile_scales, float w, float* acc) {
  const VF vw = hn::Set(DF(), w);
  ForEachTile(n, [&](int t, int i0, int len) {
    const VF s = hn::Set(DF(), tile_scales[t]);
    ForEachVector(len, [&](size_t i, size_t count) {
      AddWeighted(vw, Fp8Value(codes + i0 + i, count, s), acc + i0 + i, count);
    });
  });
}

void LogfmtAxpy(const uint8_t* codes, int n, int bits, const int16_t* tile_min_max, float w, float* acc) {
  const VF vw = hn::Set(DF(), w);
  ForEachTile(n, [&](int t, int i0, int len) {
    const uint8_t* tile_codes = codes + static_cast<std::ptrdiff_t>(t) * kTileElems * bits / 8;
    ForEachLogValue(tile_codes, len, bits, tile_min_max[2 * t], tile_min_max[2 * t + 1],
                    [&](size_t i, size_t count, VF v) { AddWeighted(vw, v, acc + i0 + i, count); });
  });
}

// elem::f32_to_bf16.
void F32ToBf16(const float* x, int n, uint16_t* out) {
  const DF df;
  const DU du;
  ForEachVector(n, [&](size_t i, size_t count) {
    const VF v = LoadPart(df, x + i, count);
    const VU u = Bits(v);
    const VU quiet = hn::Or(hn::ShiftRight<16>(u), hn::Set(du, 0x0040u));
    const VU rounded = hn::ShiftRight<16>(hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u)))));
    const VU r = hn::IfThenElse(hn::RebindMask(du, NanLanes(v)), quiet, rounded);
    StorePart(hn::TruncateTo(DU16(), r), DU16(), out + i, count);
  });
}

void Bf16ToF32(const uint16_t* x, int n, float* out) {
  ForEachVector(n, [&](size_t i, size_t count) { StorePart(Bf16Value(x + i, count), DF(), out + i, count); });
}

}  // namespace epcomm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace epcomm::kernels {
namespace {

HWY_EXPORT(AmaxFinite);
HWY_EXPORT(Fp8Encode);
HWY_EXPORT(Fp8Decode);
HWY_EXPORT(LogfmtEncode);
HWY_EXPORT(LogfmtDecode);
HWY_EXPORT(Axpy);
HWY_EXPORT(F32ToBf16);
HWY_EXPORT(Bf16ToF32);
HWY_EXPORT(Bf16Axpy);
HWY_EXPORT(Fp8Axpy);
HWY_EXPORT(LogfmtAxpy);

float amax_finite(const float* x, int n) { return HWY_DYNAMIC_DISPATCH(AmaxFinite)(x, n); }
void fp8_encode(const float* x, int n, float scale, uint8_t* codes) { HWY_DYNAMIC_DISPATCH(Fp8Encode)(x, n, scale, codes); }
void fp8_decode(const uint8_t* codes, int n, float scale, float* out) { HWY_DYNAMIC_DISPATCH(Fp8Decode)(codes, n, scale, out); }
int logfmt_encode(const float* x, int n, int bits, uint8_t* codes, int16_t* min_q, int16_t* max_q) {
  return HWY_DYNAMIC_DISPATCH(LogfmtEncode)(x, n, bits, codes, min_q, max_q);
}
void logfmt_decode(const uint8_t* codes, int n, int bits, int16_t min_q, int16_t max_q, float* out) {
  HWY_DYNAMIC_DISPATCH(LogfmtDecode)(codes, n, bits, min_q, max_q, out);
}
void axpy(const float* x, int n, float w, float* acc) { HWY_DYNAMIC_DISPATCH(Axpy)(x, n, w, acc); }
void f32_to_bf16(const float* x, int n, uint16_t* out) { HWY_DYNAMIC_DISPATCH(F32ToBf16)(x, n, out); }
void bf16_to_f32(const uint16_t* x, int n, float* out) { HWY_DYNAMIC_DISPATCH(Bf16ToF32)(x, n, out); }
void bf16_axpy(const uint16_t* x, int n, float w, float* acc) { HWY_DYNAMIC_DISPATCH(Bf16Axpy)(x, n, w, acc); }
void fp8_axpy(const uint8_t* codes, int n, const float* tile_scales, float w, float* acc) {
  HWY_DYNAMIC_DISPATCH(Fp8Axpy)(codes, n, tile_scales, w, acc);
}
void logfmt_axpy(const uint8_t* codes, int n, int bits, const int16_t* tile_min_max, float w, float* acc) {
  HWY_DYNAMIC_DISPATCH(LogfmtAxpy)(codes, n, bits, tile_min_max, w, acc);
}

// The target HWY_DYNAMIC_DISPATCH picks: the best (lowest bit) of those compiled
// here that the CPU supports.
const char* dispatched_target_name() {
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(targets & -targets);
}

}  // namespace

const TileKernels& simd_kernels() {
  static const TileKernels k{dispatched_target_name(), &amax_finite, &fp8_encode, &fp8_decode, &logfmt_encode,
                             &logfmt_decode,           &axpy,        &f32_to_bf16, &bf16_to_f32,
                             &bf16_axpy,               &fp8_axpy,    &logfmt_axpy};
  return k;
}

}  // namespace epcomm::kernels
#endif  // HWY_ONCE
