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
        for t in OUT_TYPES:
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
    shifts, types = (ACC32_SHIFTS, OUT_TYPES) if group == "acc32" else (ACC64_SHIFTS, ACC64_OUT)
    checked = 0
    for shift in shifts:
        acc = data[f"a{group[3:]}_{shift}"]
        for t in types:
            bits, signed = OUT_TYPES[t]
            for r, rounding in enumerate(Rounding):
                for s, saturation in enumerate(Saturation):
                    got = results[f"srs {group} {t} {shift} {r} {s}"]
                    want = srs(acc, shift, FixedType(bits, signed, 0, rounding, saturation))
                    np.testing.assert_array_equal(got, want, err_msg=f"{t} shift {shift} {rounding} {saturation}")
                    checked += 1
    assert checked == len(shifts) * len(types) * 30


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
