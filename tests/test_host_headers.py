"""The packaged host headers (aieflow.host) against aieflow.numerics and numpy, function by function.

One small C++ program, compiled once with g++, exercises the AIE API model: SRS (to_vector with a shift) in
every rounding mode x saturation mode into every output type, ties of both signs, acc32 and acc64 ranges;
the upshift of from_vector / from_vector_sign; aie::add, max and min; vector insert/extract, concat,
filter_even/odd, load_v/store_v; the cascade's writeincr/readincr; and aie::mmul in every shape the catalog
lists for AIE-ML, on random data. It prints its results; Python compares them with the references.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from aieflow.host import include_dir
from aieflow.numerics import FixedType, Rounding, Saturation, saturate, srs

GXX = shutil.which("g++")
LANES = 16
OUT_TYPES = {"int8": (8, True), "uint8": (8, False), "int16": (16, True), "uint16": (16, False),
             "int32": (32, True)}
ACC32_SHIFTS = [0, 1, 2, 3, 5, 8, 15, 31]
ACC64_SHIFTS = [0, 1, 4, 16, 33, 47, 62]
ACC64_OUT = ["int8", "int16", "int32", "uint8"]
UPSHIFTS = [0, 1, 3, 8, 16, 24]
PRECISION_TYPES = {"8x8": ("int8", "int8"), "16x8": ("int16", "int8"), "8x16": ("int8", "int16"),
                   "16x16": ("int16", "int16")}
BITS = {"int8": (8, True), "int16": (16, True)}
ADD_VALUES = [0, 1, -1, 200, -32768, 32767]
SHIFTS16 = [1, 5, 8, 14]
MULTIPLIERS = [1, 3, 12345, 32767, 2147483647]


def _microtiles() -> dict[str, tuple[list[list[int]], int]]:
    text = (resources.files("aieflow.devices") / "catalog.toml").read_text()
    precisions = tomllib.loads(text)["generations"]["aie-ml"]["precisions"]
    return {p: (v["microtiles"], v["accumulator_bits"]) for p, v in precisions.items()}


def _arr(name: str, values) -> str:
    body = ", ".join(f"{int(v)}LL" for v in values)
    return f"static const long long {name}_ll[] = {{{body}}};"


def _acc_inputs(rng, shift: int, top: int) -> np.ndarray:
    """Random accumulator values in [-top, top), ties of both signs at this shift, and the extremes."""
    ties = [] if shift == 0 else [(k << shift) + (1 << (shift - 1)) for k in range(-8, 8)]
    near = [] if shift == 0 else [(k << shift) + (1 << (shift - 1)) + d for k in (-3, 2) for d in (-1, 1)]
    fixed = [0, 1, -1, top - 1, -top, top // 3, -(top // 3)]
    vals = np.array([v for v in ties + near + fixed if -top <= v < top], dtype=np.int64)
    rest = rng.integers(-top, top, 8 * LANES - len(vals) % LANES, dtype=np.int64)
    small = rng.integers(-(1 << min(shift + 9, 62)), 1 << min(shift + 9, 62), 4 * LANES, dtype=np.int64)
    out = np.concatenate([vals, rest, small])
    return out[: len(out) // LANES * LANES]


_PRELUDE = r"""
#include <adf.h>
#include <aie_api/aie.hpp>
#include <aie_api/aie_adf.hpp>
#include <cstdio>
#include <vector>

template <typename V> void print(const char* tag, const V& v)
{
    std::printf("%s", tag);
    for (unsigned i = 0; i < V::size(); ++i) std::printf(" %lld", (long long)v[i]);
    std::printf("\n");
}
template <typename T, unsigned N> aie::vector<T, N> from_ll(const long long* p)
{
    aie::vector<T, N> v;
    for (unsigned i = 0; i < N; ++i) v.set(T(p[i]), i);
    return v;
}
template <typename Tag, unsigned N> aie::vector<int64, N> lanes(const aie::accum<Tag, N>& a)
{
    aie::set_saturation(aie::saturation_mode::none);
    return a.template to_vector<int64>(0);
}
// SRS of `n` accumulator values in every rounding x saturation mode: "srs <acc> <type> <shift> <r> <s> values...".
template <typename T, typename Tag> void srs_all(const char* type, const long long* acc, unsigned n, int shift)
{
    for (int r = 0; r < 10; ++r)
        for (int s = 0; s < 3; ++s) {
            aie::set_rounding(aie::rounding_mode(r));
            aie::set_saturation(aie::saturation_mode(s));
            std::printf("srs %s %d %d %d", type, shift, r, s);
            for (unsigned i = 0; i < n; i += 16) {
                aie::accum<Tag, 16> a;
                a.from_vector(from_ll<int64, 16>(acc + i));
                const auto v = a.template to_vector<T>(shift);
                for (unsigned j = 0; j < 16; ++j) std::printf(" %lld", (long long)v[j]);
            }
            std::printf("\n");
        }
}
"""


def _program(rng) -> tuple[str, dict]:
    """The C++ test program and the inputs it embeds, by name."""
    data: dict[str, np.ndarray] = {}
    decls, body = [], []

    def arr(name, values):
        data[name] = np.asarray(values, dtype=np.int64)
        decls.append(_arr(name, data[name]))

    for shift in ACC32_SHIFTS:
        arr(f"a32_{shift}", _acc_inputs(rng, shift, 1 << 31))
        for t in _acc32_types(shift):
            body.append(f'srs_all<{t}, acc32>("acc32 {t}", a32_{shift}_ll, {len(data[f"a32_{shift}"])}, {shift});')
    for shift in ACC64_SHIFTS:
        arr(f"a64_{shift}", _acc_inputs(rng, shift, 1 << 62))
        for t in ACC64_OUT:
            body.append(f'srs_all<{t}, acc64>("acc64 {t}", a64_{shift}_ll, {len(data[f"a64_{shift}"])}, {shift});')
    # Upshift: from_vector(v, shift) and from_vector_sign(v, false, shift), read back exactly and as int32.
    arr("x8", rng.integers(-128, 128, LANES))
    arr("x16", rng.integers(-(1 << 15), 1 << 15, LANES))
    for shift in UPSHIFTS:
        body += [
            "{",
            f"    aie::accum<acc64, 16> a; a.from_vector(from_ll<int8, 16>(x8_ll), {shift});",
            f'    print("up int8 {shift}", lanes(a));',
            f"    aie::accum<acc64, 16> b(from_ll<int16, 16>(x16_ll), {shift});",
            f'    print("up int16 {shift}", lanes(b));',
            f"    aie::accum<acc32, 16> u; u.from_vector_sign(from_ll<int8, 16>(x8_ll), false, {shift});",
            f'    print("upu int8 {shift}", lanes(u));',
            f"    aie::accum<acc32, 16> s; s.from_vector_sign(from_ll<int8, 16>(x8_ll), true, {shift});",
            f'    print("ups int8 {shift}", lanes(s));',
            "    aie::set_saturation(aie::saturation_mode::saturate);",
            f'    print("upsat int16 {shift}", b.to_vector<int32>(0));',
            "}",
        ]
    # add, max, min; vector insert/extract, concat, filter_even/odd, load_v/store_v; the cascade.
    arr("p", rng.integers(-(1 << 31), 1 << 31, 16))
    arr("q", rng.integers(-(1 << 31), 1 << 31, 16))
    arr("r8", rng.integers(-128, 128, 32))
    body += [
        "{",
        "    aie::accum<acc64, 16> a(from_ll<int32, 16>(p_ll), 3), b(from_ll<int32, 16>(q_ll));",
        '    print("add", lanes(aie::add(a, b)));',
        "    const auto v = from_ll<int8, 32>(r8_ll);",
        '    print("max_s", aie::max(v, int8(-5)));',
        '    print("min_s", aie::min(v, int8(7)));',
        '    print("max_v", aie::max(v, from_ll<int8, 32>(r8_ll + 0).extract<32>(0)));',
        '    print("concat", aie::concat(v.extract<16>(1), v.extract<16>(0)));',
        '    print("even", aie::filter_even(v));',
        '    print("odd", aie::filter_odd(v));',
        '    print("even4", aie::filter_even(v, 4));',
        '    print("odd4", aie::filter_odd(v, 4));',
        "    aie::vector<int8, 32> w; w.insert(1, v.extract<8>(0)); w.insert(3, v.extract<8>(2));",
        '    print("insert", w);',
        "    int8 buf[32]; aie::store_v(buf, v); const auto back = aie::load_v<32>(buf);",
        '    print("loadstore", back);',
        "    cascade_words link; output_cascade<acc32> co{&link}; input_cascade<acc32> ci{&link};",
        "    aie::accum<acc32, 16> e(from_ll<int32, 16>(p_ll)), f(from_ll<int32, 16>(q_ll));",
        "    writeincr(&co, f); writeincr(&co, e);",
        "    const auto c1 = readincr_v<16>(&ci); const auto c2 = readincr_v<16>(&ci);",
        '    print("cascade", aie::concat(lanes(c1), lanes(c2)));',
        "}",
    ]
    # Vector add (wrapping) with a value and a vector; upshift / downshift by the modes; mul into acc64.
    edges16 = [-(1 << 15), (1 << 15) - 1, -1, 0, 1, 300, -300, 12345]
    arr("v16", np.concatenate([edges16, rng.integers(-(1 << 15), 1 << 15, 24)]))
    arr("w16", rng.integers(-(1 << 15), 1 << 15, 32))
    arr("v8", np.concatenate([[-128, 127, -1, 0, 1, 64, -64, 100], rng.integers(-128, 128, 24)]))
    arr("u8", np.concatenate([[0, 255, 1, 128, 127, 200, 3, 64], rng.integers(0, 256, 24)]))
    arr("v32", np.concatenate([[-(1 << 31), (1 << 31) - 1, -1, 0, 1, 1 << 20, -(1 << 20), 77777],
                               rng.integers(-(1 << 31), 1 << 31, 8)]))
    body += ["{",
             "    const auto v = from_ll<int16, 32>(v16_ll), w = from_ll<int16, 32>(w16_ll);",
             "    const auto b = from_ll<int8, 32>(v8_ll); const auto u = from_ll<uint8, 32>(u8_ll);",
             "    const auto d = from_ll<int32, 16>(v32_ll);"]
    for c in ADD_VALUES:
        body += [f'    print("vadd16_{c}", aie::add(v, int16({c})));',
                 f'    print("vaddl16_{c}", aie::add(int16({c}), v));']
    body += ['    print("vaddvv16", aie::add(v, w));',
             '    print("vadd8_100", aie::add(b, int8(100)));',
             '    print("vaddu8_200", aie::add(u, uint8(200)));']
    for sat in range(3):
        body.append(f"    aie::set_saturation(aie::saturation_mode({sat}));")
        for sh in SHIFTS16:
            body.append(f'    print("ush16_{sat}_{sh}", aie::upshift(v, {sh}));')
        for sh in (1, 4, 7):
            body += [f'    print("ush8_{sat}_{sh}", aie::upshift(b, {sh}));',
                     f'    print("ushu8_{sat}_{sh}", aie::upshift(u, {sh}));']
        for sh in (1, 16, 23):
            body.append(f'    print("ush32_{sat}_{sh}", aie::upshift(d, {sh}));')
    body.append("    aie::set_saturation(aie::saturation_mode::none);")
    for r in range(10):
        body.append(f"    aie::set_rounding(aie::rounding_mode({r}));")
        for sh in SHIFTS16:
            body.append(f'    print("dsh16_{r}_{sh}", aie::downshift(v, {sh}));')
        body += [f'    print("dshu8_{r}_3", aie::downshift(u, 3));',
                 f'    print("dsh32_{r}_9", aie::downshift(d, 9));']
    for m in MULTIPLIERS:
        mt = "int16" if m < 1 << 15 else "int32"
        body += [f'    print("mul_{m}", lanes(aie::mul<acc64>(d, {mt}({m}))));',
                 f'    print("mull_{m}", lanes(aie::mul<acc64>({mt}({m}), d)));']
    body += ["    static_assert(std::is_same_v<decltype(aie::mul(d, int16(3))), aie::accum<acc64, 16>>);",
             "    static_assert(std::is_same_v<decltype(aie::mul(v, int16(3))), aie::accum<acc32, 32>>);",
             '    print("mulvv", lanes(aie::mul(v, w)));',
             "}"]
    # mmul in every AIE-ML shape: C = C0 + A0 B0 + A1 B1 (mac from an accumulator), and mul = A0 B0.
    for precision, (shapes, acc_bits) in _microtiles().items():
        ta, tb = PRECISION_TYPES[precision]
        tag = f"acc{acc_bits}"
        for m, k, n in shapes:
            name = f"mm_{precision}_{m}_{k}_{n}"
            for i in (0, 1):
                arr(f"{name}_a{i}", rng.integers(*_range(ta), m * k))
                arr(f"{name}_b{i}", rng.integers(*_range(tb), k * n))
            arr(f"{name}_c", rng.integers(-(1 << 20), 1 << 20, m * n))
            body += [
                "{",
                f"    using MM = aie::mmul<{m}, {k}, {n}, {ta}, {tb}, {tag}>;",
                f"    aie::accum<{tag}, MM::size_C> c0(from_ll<int32, MM::size_C>({name}_c_ll));",
                "    MM mm(c0);",
                f"    mm.mac(from_ll<{ta}, MM::size_A>({name}_a0_ll), from_ll<{tb}, MM::size_B>({name}_b0_ll));",
                f"    mm.mac(from_ll<{ta}, MM::size_A>({name}_a1_ll), from_ll<{tb}, MM::size_B>({name}_b1_ll));",
                f'    print("{name} mac", lanes(mm.to_accum()));',
                "    MM m2;",
                f"    m2.mul(from_ll<{ta}, MM::size_A>({name}_a0_ll), from_ll<{tb}, MM::size_B>({name}_b0_ll));",
                f'    print("{name} mul", lanes(m2.to_accum()));',
                "    aie::set_rounding(aie::rounding_mode::conv_even);",
                "    aie::set_saturation(aie::saturation_mode::saturate);",
                f'    print("{name} srs", mm.to_vector<int8>(7));',
                "}",
            ]
    main = "\n".join([_PRELUDE, *decls, "int main()", "{", *body, "    return 0;", "}"])
    return main, data


def _acc32_types(shift: int) -> list[str]:
    """Output types of an acc32 SRS by `shift`: on AIE-ML acc32 -> int32 is a move that takes no shift (the
    AIE API casts there), so the host model refuses a shifted one and only shift 0 is tested."""
    return [t for t in OUT_TYPES if shift == 0 or OUT_TYPES[t][0] < 32]


def _range(t: str) -> tuple[int, int]:
    bits, _ = BITS[t]
    return -(1 << (bits - 1)), 1 << (bits - 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if GXX is None:
        pytest.skip("needs g++")
    root = tmp_path_factory.mktemp("host")
    main, data = _program(np.random.default_rng(2024))
    (root / "t.cpp").write_text(main)
    done = subprocess.run([GXX, "-std=c++20", "-Wall", "-Werror", "-O1", "-I", str(include_dir()), "t.cpp",
                           "-o", "t"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    out = subprocess.run([str(root / "t")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    results = {}
    for line in out.stdout.splitlines():
        words = line.split()
        n_tag = 6 if words[0] == "srs" else 3 if words[0].startswith("up") else 2 if words[0].startswith("mm_") else 1
        results[" ".join(words[:n_tag])] = np.array([int(w) for w in words[n_tag:]], dtype=np.int64)
    return results, data


def test_include_dir_holds_the_headers():
    root = include_dir()
    assert isinstance(root, Path)
    for name in ("adf.h", "aie_api/aie.hpp", "aie_api/aie_adf.hpp"):
        assert (root / name).is_file(), name


@pytest.mark.parametrize("group", ["acc32", "acc64"])
def test_srs_every_mode_matches_numerics(run, group):
    results, data = run
    shifts = ACC32_SHIFTS if group == "acc32" else ACC64_SHIFTS
    checked = expected = 0
    for shift in shifts:
        acc = data[f"a{group[3:]}_{shift}"]
        types = _acc32_types(shift) if group == "acc32" else ACC64_OUT
        expected += len(types) * 30
        for t in types:
            bits, signed = OUT_TYPES[t]
            for r, rounding in enumerate(Rounding):
                for s, saturation in enumerate(Saturation):
                    got = results[f"srs {group} {t} {shift} {r} {s}"]
                    want = srs(acc, shift, FixedType(bits, signed, 0, rounding, saturation))
                    np.testing.assert_array_equal(got, want, err_msg=f"{t} shift {shift} {rounding} {saturation}")
                    checked += 1
    assert checked == expected


def test_srs_ties_of_both_signs_are_in_the_data(run):
    _, data = run
    for shift in ACC32_SHIFTS[1:]:
        acc = data[f"a32_{shift}"]
        rem = acc & ((1 << shift) - 1)
        tie = rem == (1 << (shift - 1))
        assert np.any(tie & (acc < 0)) and np.any(tie & (acc > 0)), shift


def test_upshift_matches_numerics(run):
    results, data = run
    x8, x16 = data["x8"], data["x16"]
    for shift in UPSHIFTS:
        np.testing.assert_array_equal(results[f"up int8 {shift}"], x8 << shift)
        np.testing.assert_array_equal(results[f"up int16 {shift}"], x16 << shift)
        np.testing.assert_array_equal(results[f"ups int8 {shift}"], x8 << shift)
        np.testing.assert_array_equal(results[f"upu int8 {shift}"], (x8 & 0xFF) << shift)
        out = FixedType(32, True, 0, Rounding.FLOOR, Saturation.SATURATE)
        np.testing.assert_array_equal(results[f"upsat int16 {shift}"], srs(x16, -shift, out))
        np.testing.assert_array_equal(results[f"upsat int16 {shift}"], saturate(x16 << shift, 32, True,
                                                                                 Saturation.SATURATE))


def test_add_max_min_and_lane_moves(run):
    results, data = run
    p, q, v = data["p"], data["q"], data["r8"]
    np.testing.assert_array_equal(results["add"], (p << 3) + q)
    np.testing.assert_array_equal(results["max_s"], np.maximum(v, -5))
    np.testing.assert_array_equal(results["min_s"], np.minimum(v, 7))
    np.testing.assert_array_equal(results["max_v"], v)
    np.testing.assert_array_equal(results["concat"], np.concatenate([v[16:], v[:16]]))
    np.testing.assert_array_equal(results["even"], v[0::2])
    np.testing.assert_array_equal(results["odd"], v[1::2])
    np.testing.assert_array_equal(results["even4"], v.reshape(4, 2, 4)[:, 0].ravel())
    np.testing.assert_array_equal(results["odd4"], v.reshape(4, 2, 4)[:, 1].ravel())
    w = np.zeros(32, dtype=np.int64)
    w[8:16], w[24:32] = v[0:8], v[16:24]
    np.testing.assert_array_equal(results["insert"], w)
    np.testing.assert_array_equal(results["loadstore"], v)
    np.testing.assert_array_equal(results["cascade"], np.concatenate([q, p]))


def test_mmul_every_aie_ml_shape(run):
    results, data = run
    shapes = 0
    for precision, (tiles, _) in _microtiles().items():
        for m, k, n in tiles:
            name = f"mm_{precision}_{m}_{k}_{n}"
            a0, a1 = (data[f"{name}_a{i}"].reshape(m, k) for i in (0, 1))
            b0, b1 = (data[f"{name}_b{i}"].reshape(k, n) for i in (0, 1))
            c = data[f"{name}_c"].reshape(m, n) + a0 @ b0 + a1 @ b1
            np.testing.assert_array_equal(results[f"{name} mac"], c.ravel(), err_msg=name)
            np.testing.assert_array_equal(results[f"{name} mul"], (a0 @ b0).ravel(), err_msg=name)
            want = srs(c.ravel(), 7, FixedType(8, True, 0, Rounding.CONV_EVEN, Saturation.SATURATE))
            np.testing.assert_array_equal(results[f"{name} srs"], want, err_msg=name)
            shapes += 1
    assert shapes >= 10


def _wrap(x, bits: int, signed: bool) -> np.ndarray:
    return saturate(np.asarray(x, dtype=np.int64), bits, signed, Saturation.NONE)


def test_vector_add_wraps_in_the_lane_type(run):
    results, data = run
    v, w = data["v16"], data["w16"]
    for c in ADD_VALUES:
        np.testing.assert_array_equal(results[f"vadd16_{c}"], _wrap(v + c, 16, True), err_msg=str(c))
        np.testing.assert_array_equal(results[f"vaddl16_{c}"], _wrap(v + c, 16, True), err_msg=str(c))
    np.testing.assert_array_equal(results["vaddvv16"], _wrap(v + w, 16, True))
    np.testing.assert_array_equal(results["vadd8_100"], _wrap(data["v8"] + 100, 8, True))
    np.testing.assert_array_equal(results["vaddu8_200"], _wrap(data["u8"] + 200, 8, False))
    assert np.any(v + 32767 > 32767) and np.any(data["u8"] + 200 > 255)  # the wrap is exercised


def test_upshift_is_a_left_shift_brought_in_by_the_saturation_mode(run):
    """With saturation none, the documented shift (the low bits); otherwise the AIE-ML implementation's SRS."""
    results, data = run
    cases = [("ush16", "v16", 16, True, SHIFTS16), ("ush8", "v8", 8, True, (1, 4, 7)),
             ("ushu8", "u8", 8, False, (1, 4, 7)), ("ush32", "v32", 32, True, (1, 16, 23))]
    for tag, name, bits, signed, shifts in cases:
        x = data[name]
        for s_i, sat in enumerate(Saturation):
            for sh in shifts:
                got = results[f"{tag}_{s_i}_{sh}"]
                np.testing.assert_array_equal(got, saturate(x << sh, bits, signed, sat), err_msg=f"{tag} {sat} {sh}")
                if sat is Saturation.NONE:
                    np.testing.assert_array_equal(got, _wrap(x << sh, bits, signed))


def test_downshift_is_an_arithmetic_shift_rounded_by_the_mode(run):
    """Floor rounding (and any mode where the bits shifted out are zero) gives the documented shift: arithmetic
    for signed lanes, logical for unsigned ones; the AIE-ML implementation rounds by the current mode."""
    from aieflow.numerics import round_shift

    results, data = run
    v, u, d = data["v16"], data["u8"], data["v32"]
    for r_i, rounding in enumerate(Rounding):
        for sh in SHIFTS16:
            np.testing.assert_array_equal(results[f"dsh16_{r_i}_{sh}"], round_shift(v, sh, rounding))
        np.testing.assert_array_equal(results[f"dshu8_{r_i}_3"], round_shift(u, 3, rounding))
        np.testing.assert_array_equal(results[f"dsh32_{r_i}_9"], round_shift(d, 9, rounding))
    np.testing.assert_array_equal(results["dsh16_0_5"], v >> 5)  # floor: the arithmetic shift itself
    np.testing.assert_array_equal(results["dshu8_0_3"], u >> 3)


def test_mul_of_int32_lanes_by_an_int16_or_int32_value_is_exact_in_acc64(run):
    results, data = run
    d = data["v32"]
    for m in MULTIPLIERS:
        np.testing.assert_array_equal(results[f"mul_{m}"], d * m, err_msg=str(m))
        np.testing.assert_array_equal(results[f"mull_{m}"], d * m, err_msg=str(m))
    np.testing.assert_array_equal(results["mulvv"], data["v16"] * data["w16"])
    assert np.abs(d * 32767).max() > 1 << 45  # beyond 32 bits: only a 64-bit accumulator holds it
