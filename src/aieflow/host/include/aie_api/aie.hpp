// aieflow host model of the AIE API (UG1529, "AI Engine API User Guide"): the operations aieflow's emitted
// kernels use, scalar and simple, with the arithmetic UG1529 and UG1583 give them on AIE-ML and that
// aieflow.numerics implements (round_shift, saturate, srs). Written for aieflow; no AMD code.
//
// Deviations from the device, on purpose:
// - accumulator lanes are int64 whatever the tag (acc32 or acc64): a 32-bit lane that would wrap on the
//   device does not wrap here. aieflow sizes accumulators so that sums fit (numerics.accumulator_bound).
// - to_vector's shift must be in [0, 63]; the device's behaviour for negative SRS shifts is not modelled
//   (aieflow's kernels do left shifts with from_vector instead).
// - where AIE-ML's implementation is narrower than the API's signature, the model refuses (asserts) rather
//   than compute something the device would not: an acc32 accumulator moves to and from 32-bit vectors
//   only unshifted (the AIE API's AIE-ML implementation casts there and drops the shift).
// - the rounding and saturation modes are process-wide (one core), not per-core control registers.
// - vectors of any size are accepted; with AIEFLOW_HOST_CHECK_SIZES defined, only the sizes AIE-ML has
//   (UG1529 "Supported vector types and sizes": 128 to 1024 bits and more, a power of two of lanes; an
//   accumulator at least 256 bits) compile, so a kernel built that way uses no vector the device lacks.
//   The check also covers the sub-vectors of insert / extract, which the AIE API requires to be 128 bits
//   or more.
#pragma once
#include <adf.h>
#include <array>
#include <cassert>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

namespace aie {
// UG1529 aie::rounding_mode / aie::saturation_mode; codes as UG1583 (see aieflow.numerics.Rounding).
enum class rounding_mode { floor, ceil, symmetric_floor, symmetric_ceil, negative_inf, positive_inf,
                           symmetric_zero, symmetric_inf, conv_even, conv_odd };
enum class saturation_mode { none, saturate, symmetric };
// UG1529 aie::set_rounding / aie::set_saturation (and get_*): the modes every later SRS uses. The defaults,
// as after reset, are floor (truncation) and none (wrap).
inline rounding_mode& current_rounding() { static rounding_mode m = rounding_mode::floor; return m; }
inline saturation_mode& current_saturation() { static saturation_mode m = saturation_mode::none; return m; }
inline void set_rounding(rounding_mode m) { current_rounding() = m; }
inline void set_saturation(saturation_mode m) { current_saturation() = m; }
inline rounding_mode get_rounding() { return current_rounding(); }
inline saturation_mode get_saturation() { return current_saturation(); }

// UG1529 aie::vector<T, N>: N lanes of T. insert(idx, v) (UG1529 vector::insert) writes the idx-th
// subvector of v's size; get/set read and write one lane.
namespace detail {
constexpr bool power_of_two(unsigned n) { return n != 0 && (n & (n - 1)) == 0; }
#ifdef AIEFLOW_HOST_CHECK_SIZES
inline constexpr bool check_sizes = true;
#else
inline constexpr bool check_sizes = false;
#endif
} // namespace detail

template <typename T, unsigned N>
struct vector {
    static_assert(!detail::check_sizes || (detail::power_of_two(N) && N * sizeof(T) * 8 >= 128),
                  "AIE-ML vectors are a power of two of lanes and at least 128 bits (UG1529)");
    std::array<T, N> e{};
    static constexpr unsigned size() { return N; }
    T get(unsigned i) const { return e[i]; }
    vector& set(T v, unsigned i) { e[i] = v; return *this; }
    T operator[](unsigned i) const { return e[i]; }
    template <unsigned M> vector& insert(unsigned idx, const vector<T, M>& v)
    {
        for (unsigned i = 0; i < M; ++i) e[idx * M + i] = v.e[i];
        return *this;
    }
    template <unsigned M> vector<T, M> extract(unsigned idx) const
    {
        vector<T, M> r;
        for (unsigned i = 0; i < M; ++i) r.e[i] = e[idx * M + i];
        return r;
    }
};

#ifdef AIEFLOW_HOST_COUNT_LOADS
// Vector loads so far. Instrumentation only, not in the AIE API: tests check kernels' register blocking with it.
inline unsigned long long& load_count() { static unsigned long long n = 0; return n; }
#endif

// UG1529 aie::load_v<N>(ptr): N consecutive elements from memory as a vector.
template <unsigned N, typename T> vector<std::remove_const_t<T>, N> load_v(const T* p)
{
#ifdef AIEFLOW_HOST_COUNT_LOADS
    ++load_count();
#endif
    vector<std::remove_const_t<T>, N> v;
    for (unsigned i = 0; i < N; ++i) v.e[i] = p[i];
    return v;
}
// UG1529 aie::store_v(ptr, v): the vector's lanes to consecutive memory.
template <typename T, unsigned N> void store_v(T* p, const vector<T, N>& v)
{
    for (unsigned i = 0; i < N; ++i) p[i] = v.e[i];
}
// UG1529 aie::load_unaligned_v<N>(ptr, aligned_elems = 1) / aie::store_unaligned_v(ptr, v, aligned_elems = 1):
// as load_v / store_v for a pointer only aligned to `aligned_elems` elements (a power of two), which the AIE
// API asserts; the device merges the partial words (store_unaligned_v writes exactly the vector's lanes).
template <unsigned N, typename T> vector<std::remove_const_t<T>, N> load_unaligned_v(const T* p, unsigned aligned_elems = 1)
{
    assert(detail::power_of_two(aligned_elems) && "aligned_elems must be a power of two");
    assert(reinterpret_cast<std::uintptr_t>(p) % (aligned_elems * sizeof(T)) == 0 && "Insufficient alignment");
    return load_v<N>(p);
}
template <typename T, unsigned N> void store_unaligned_v(T* p, const vector<T, N>& v, unsigned aligned_elems = 1)
{
    assert(detail::power_of_two(aligned_elems) && "aligned_elems must be a power of two");
    assert(reinterpret_cast<std::uintptr_t>(p) % (aligned_elems * sizeof(T)) == 0 && "Insufficient alignment");
    store_v(p, v);
}
// UG1529 aie::zeros<T, N>(): a vector of zeros (the accumulator form is below accum).
template <typename T, unsigned N>
    requires std::is_arithmetic_v<T>
vector<T, N> zeros()
{
    return vector<T, N>();
}
// UG1529 aie::concat(a, b): a's lanes then b's.
template <typename T, unsigned N> vector<T, 2 * N> concat(const vector<T, N>& a, const vector<T, N>& b)
{
    vector<T, 2 * N> r;
    for (unsigned i = 0; i < N; ++i) { r.e[i] = a.e[i]; r.e[N + i] = b.e[i]; }
    return r;
}
// UG1529 aie::filter_even(v, step = 1) / filter_odd(v, step = 1): the even (odd) groups of `step` lanes.
template <typename T, unsigned N> vector<T, N / 2> filter_even(const vector<T, N>& v, unsigned step = 1)
{
    vector<T, N / 2> r;
    for (unsigned i = 0; i < N / 2; ++i) r.e[i] = v.e[(i / step) * 2 * step + i % step];
    return r;
}
template <typename T, unsigned N> vector<T, N / 2> filter_odd(const vector<T, N>& v, unsigned step = 1)
{
    vector<T, N / 2> r;
    for (unsigned i = 0; i < N / 2; ++i) r.e[i] = v.e[(i / step) * 2 * step + step + i % step];
    return r;
}
// UG1529 aie::interleave_zip(v, w, chunk): chunks of `chunk` lanes taken from v and w in turn,
// { v[0:c], w[0:c], v[c:2c], w[c:2c], ... }, the first N lanes of that in .first and the rest in .second.
template <typename T, unsigned N>
std::pair<vector<T, N>, vector<T, N>> interleave_zip(const vector<T, N>& v, const vector<T, N>& w, unsigned chunk)
{
    assert(detail::power_of_two(chunk) && chunk <= N && "chunk_size is a power of two, at most the vector's size");
    std::pair<vector<T, N>, vector<T, N>> r;
    for (unsigned i = 0; i < 2 * N; ++i) {
        const unsigned c = i / chunk, from = (c / 2) * chunk + i % chunk;
        const T x = (c % 2 == 0) ? v.e[from] : w.e[from];
        if (i < N) r.first.e[i] = x;
        else r.second.e[i - N] = x;
    }
    return r;
}
// UG1529 aie::max / aie::min, lane by lane, of two vectors or of a vector and a scalar.
template <typename T, unsigned N> vector<T, N> max(const vector<T, N>& v, T a)
{
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = v.e[i] > a ? v.e[i] : a;
    return r;
}
template <typename T, unsigned N> vector<T, N> max(const vector<T, N>& v, const vector<T, N>& w)
{
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = v.e[i] > w.e[i] ? v.e[i] : w.e[i];
    return r;
}
template <typename T, unsigned N> vector<T, N> min(const vector<T, N>& v, T a)
{
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = v.e[i] < a ? v.e[i] : a;
    return r;
}
template <typename T, unsigned N> vector<T, N> min(const vector<T, N>& v, const vector<T, N>& w)
{
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = v.e[i] < w.e[i] ? v.e[i] : w.e[i];
    return r;
}

namespace detail {
// a / 2**s rounded by the current rounding mode (UG1583 rounding codes; aieflow.numerics.round_shift).
inline std::int64_t round_shift(std::int64_t a, int s)
{
    assert(s >= 0 && s < 64 && "the host model's SRS shifts right by 0 to 63 bits");
    if (s == 0) return a;
    const std::int64_t fl = a >> s, rem = a - (fl << s), half = std::int64_t(1) << (s - 1);
    const bool exact = rem == 0, neg = a < 0, odd = (fl & 1) != 0;
    switch (current_rounding()) {
    case rounding_mode::floor: return fl;
    case rounding_mode::ceil: return exact ? fl : fl + 1;
    case rounding_mode::symmetric_floor: return (exact || !neg) ? fl : fl + 1;
    case rounding_mode::symmetric_ceil: return (exact || neg) ? fl : fl + 1;
    default: break;
    }
    if (rem != half) return rem > half ? fl + 1 : fl;
    switch (current_rounding()) {
    case rounding_mode::negative_inf: return fl;
    case rounding_mode::positive_inf: return fl + 1;
    case rounding_mode::symmetric_zero: return neg ? fl + 1 : fl;
    case rounding_mode::symmetric_inf: return neg ? fl : fl + 1;
    case rounding_mode::conv_even: return odd ? fl + 1 : fl;
    default: return odd ? fl : fl + 1;  // conv_odd
    }
}
// v brought into T by the current saturation mode (aieflow.numerics.saturate): wrap, clamp, or clamp
// symmetrically ([-(2^(n-1)-1), 2^(n-1)-1] for signed T).
template <typename T> T saturate(std::int64_t v)
{
    constexpr std::int64_t hi = std::numeric_limits<T>::max();
    constexpr std::int64_t lo = std::numeric_limits<T>::min();
    switch (current_saturation()) {
    case saturation_mode::none: return T(v);  // two's-complement wrap: the low bits
    case saturation_mode::saturate: return T(v > hi ? hi : v < lo ? lo : v);
    default: {
        const std::int64_t slo = std::is_signed_v<T> ? lo + 1 : lo;
        return T(v > hi ? hi : v < slo ? slo : v);
    }
    }
}
} // namespace detail

// UG1529 aie::accum<Tag, N>: N accumulator lanes (int64 on the host, see the top of this file).
template <typename Tag, unsigned N>
struct accum {
    static_assert(!detail::check_sizes || (detail::power_of_two(N) && N * Tag::bits >= 256),
                  "AIE-ML accumulators are a power of two of lanes and at least 256 bits (UG1529)");
    std::array<std::int64_t, N> lane{};
    static constexpr unsigned size() { return N; }
    accum() = default;
    template <typename T> explicit accum(const vector<T, N>& v, int shift = 0) { from_vector(v, shift); }
    // UG1529 accum::from_vector(v, shift = 0): each lane is v's lane times 2**shift (an upshift, exact).
    template <typename T> void from_vector(const vector<T, N>& v, int shift = 0)
    {
        assert((Tag::bits != 32 || sizeof(T) < 4 || shift == 0) && "acc32 from a 32-bit vector takes no shift");
        for (unsigned i = 0; i < N; ++i) lane[i] = std::int64_t(v.e[i]) * (std::int64_t(1) << shift);
    }
    // UG1529 accum::from_vector_sign(v, sign, shift = 0): as from_vector, with v's lanes read as signed when
    // `sign` is true and as unsigned otherwise.
    template <typename T> void from_vector_sign(const vector<T, N>& v, bool sign, int shift = 0)
    {
        for (unsigned i = 0; i < N; ++i) {
            const std::int64_t x = sign ? std::int64_t(v.e[i]) : std::int64_t(std::make_unsigned_t<T>(v.e[i]));
            lane[i] = x * (std::int64_t(1) << shift);
        }
    }
    // UG1529 accum::extract<M>(idx) / insert(idx, acc): the idx-th group of M lanes.
    template <unsigned M> accum<Tag, M> extract(unsigned idx) const
    {
        accum<Tag, M> r;
        for (unsigned i = 0; i < M; ++i) r.lane[i] = lane[idx * M + i];
        return r;
    }
    template <unsigned M> accum& insert(unsigned idx, const accum<Tag, M>& a)
    {
        for (unsigned i = 0; i < M; ++i) lane[idx * M + i] = a.lane[i];
        return *this;
    }
    // UG1529 accum::to_vector<T>(shift = 0): SRS, each lane shifted right by `shift`, rounded by the current
    // rounding mode and saturated into T by the current saturation mode (aieflow.numerics.srs).
    template <typename T> vector<T, N> to_vector(int shift = 0) const
    {
        assert((Tag::bits != 32 || sizeof(T) < 4 || shift == 0) && "acc32 to a 32-bit vector takes no shift");
        vector<T, N> r;
        for (unsigned i = 0; i < N; ++i) r.e[i] = detail::saturate<T>(detail::round_shift(lane[i], shift));
        return r;
    }
};
// UG1529 aie::zeros<AccumTag, N>(): an accumulator of zeros.
template <typename Tag, unsigned N>
    requires(!std::is_arithmetic_v<Tag>)
accum<Tag, N> zeros()
{
    return accum<Tag, N>();
}
// UG1529 aie::add(acc, acc), add(acc, vector) and add(acc, value): lane-by-lane sums in the accumulator.
template <typename Tag, unsigned N> accum<Tag, N> add(const accum<Tag, N>& a, const accum<Tag, N>& b)
{
    accum<Tag, N> r;
    for (unsigned i = 0; i < N; ++i) r.lane[i] = a.lane[i] + b.lane[i];
    return r;
}
template <typename Tag, typename T, unsigned N> accum<Tag, N> add(const accum<Tag, N>& a, const vector<T, N>& v)
{
    accum<Tag, N> r;
    for (unsigned i = 0; i < N; ++i) r.lane[i] = a.lane[i] + std::int64_t(v.e[i]);
    return r;
}
template <typename Tag, unsigned N, typename E>
    requires std::is_integral_v<E>
accum<Tag, N> add(const accum<Tag, N>& a, E x)
{
    accum<Tag, N> r;
    for (unsigned i = 0; i < N; ++i) r.lane[i] = a.lane[i] + std::int64_t(x);
    return r;
}

// UG1529 aie::add(vector, value) / add(value, vector) / add(vector, vector): lane-by-lane sums in the
// vector's type, which wrap (two's complement) like the vector unit's adds; the value has the lanes' type
// (UG1529 "Arithmetic": Value / Vector operands must have the same type). aie::saturating_add is the
// saturating one, not modelled.
template <typename T, unsigned N> vector<T, N> add(const vector<T, N>& v, const vector<T, N>& w)
{
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = T(std::int64_t(v.e[i]) + std::int64_t(w.e[i]));
    return r;
}
template <typename T, unsigned N> vector<T, N> add(const vector<T, N>& v, T a)
{
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = T(std::int64_t(v.e[i]) + std::int64_t(a));
    return r;
}
template <typename T, unsigned N> vector<T, N> add(T a, const vector<T, N>& v) { return add(v, a); }

// UG1529 aie::upshift(v, shift) / aie::downshift(v, shift) (UG1079 "Bitwise Operations": upshift shifts each
// lane left, filling with zeros; downshift shifts right, arithmetically for signed lanes). On AIE-ML the AIE
// API implements both through an accumulator: upshift is accum(v, shift).to_vector<T>(0) and downshift is
// accum(v).to_vector<T>(shift). So, as modelled here, an upshift that leaves T's range is brought back by the
// current saturation mode (with saturation none: the low bits, the documented shift), and a downshift rounds
// by the current rounding mode (with floor, or when the bits shifted out are zero: the documented shift).
// Unsigned lanes are read as unsigned (a logical downshift).
template <typename T, unsigned N> vector<T, N> upshift(const vector<T, N>& v, unsigned shift)
{
    assert(shift < 8 * sizeof(T) && "upshift by less than the lane width");
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = detail::saturate<T>(std::int64_t(v.e[i]) * (std::int64_t(1) << shift));
    return r;
}
template <typename T, unsigned N> vector<T, N> downshift(const vector<T, N>& v, unsigned shift)
{
    assert(shift < 8 * sizeof(T) && "downshift by less than the lane width");
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.e[i] = detail::saturate<T>(detail::round_shift(std::int64_t(v.e[i]), int(shift)));
    return r;
}

namespace detail {
// UG1529's default accumulator of a product (table "Default accumulator tag for different integral factor
// types"): acc64 when a factor has 32 bits, acc32 otherwise.
template <typename T1, typename T2>
using default_mul_tag = std::conditional_t<(sizeof(T1) >= 4 || sizeof(T2) >= 4), acc64, acc32>;
} // namespace detail

// UG1529 aie::mul(v, a) / mul(a, v) / mul(v, w), and mul<AccTag>(...) with an explicit accumulator: the lane-by-
// lane products, exact, in an accumulator (AIE-ML: int32 x int16 into acc64 is the aie_api's mul_elem_16_2).
template <typename AccTag = void, typename T, unsigned N, typename E>
    requires std::is_integral_v<E>
accum<std::conditional_t<std::is_void_v<AccTag>, detail::default_mul_tag<T, E>, AccTag>, N> mul(const vector<T, N>& v, E a)
{
    using Tag = std::conditional_t<std::is_void_v<AccTag>, detail::default_mul_tag<T, E>, AccTag>;
    accum<Tag, N> r;
    for (unsigned i = 0; i < N; ++i) r.lane[i] = std::int64_t(v.e[i]) * std::int64_t(a);
    return r;
}
template <typename AccTag = void, typename E, typename T, unsigned N>
    requires std::is_integral_v<E>
auto mul(E a, const vector<T, N>& v)
{
    return mul<AccTag>(v, a);
}
template <typename AccTag = void, typename T1, typename T2, unsigned N>
accum<std::conditional_t<std::is_void_v<AccTag>, detail::default_mul_tag<T1, T2>, AccTag>, N>
mul(const vector<T1, N>& v, const vector<T2, N>& w)
{
    using Tag = std::conditional_t<std::is_void_v<AccTag>, detail::default_mul_tag<T1, T2>, AccTag>;
    accum<Tag, N> r;
    for (unsigned i = 0; i < N; ++i) r.lane[i] = std::int64_t(v.e[i]) * std::int64_t(w.e[i]);
    return r;
}

// UG1529 aie::mac(acc, v, w): acc plus the lane-by-lane products of v and w, exact, in acc's accumulator.
template <typename Tag, typename T1, typename T2, unsigned N>
accum<Tag, N> mac(const accum<Tag, N>& acc, const vector<T1, N>& v, const vector<T2, N>& w)
{
    accum<Tag, N> r;
    for (unsigned i = 0; i < N; ++i) r.lane[i] = acc.lane[i] + std::int64_t(v.e[i]) * std::int64_t(w.e[i]);
    return r;
}

// UG1529 aie::mmul<M, K, N, TA, TB, AccTag>: C (M x N) += A (M x K) * B (K x N), the blocks row-major in
// their vectors (size_A = M*K, size_B = K*N, size_C = M*N). mul starts from zero, mac accumulates, the
// constructor from an accumulator starts from it (UG1529 mmul(const accum_type&)).
template <unsigned M, unsigned K, unsigned N, typename TA, typename TB, typename Tag>
struct mmul {
    static constexpr unsigned size_A = M * K, size_B = K * N, size_C = M * N;
    using accum_type = accum<Tag, M * N>;
    accum<Tag, M * N> c;
    mmul() = default;
    explicit mmul(const accum<Tag, M * N>& a) : c(a) {}
    void mac(const vector<TA, size_A>& a, const vector<TB, size_B>& b)
    {
        for (unsigned m = 0; m < M; ++m)
            for (unsigned n = 0; n < N; ++n)
                for (unsigned k = 0; k < K; ++k)
                    c.lane[m * N + n] += std::int64_t(a.e[m * K + k]) * std::int64_t(b.e[k * N + n]);
    }
    void mul(const vector<TA, size_A>& a, const vector<TB, size_B>& b)
    {
        c = accum<Tag, M * N>();
        mac(a, b);
    }
    accum<Tag, M * N> to_accum() const { return c; }
    // UG1529 mmul::to_vector<T>(shift = 0): the result's SRS, as accum::to_vector.
    template <typename T> vector<T, M * N> to_vector(int shift = 0) const { return c.template to_vector<T>(shift); }
};
} // namespace aie
