"""hls4ml's own test files against the AIEFlow backend, beside its Vivado backend, as a user's CI would run them.

    .venv/bin/python bench/hls4ml_tests.py HLS4ML_CHECKOUT [--files test_pytorch_api.py ...] [-k EXPR]

HLS4ML_CHECKOUT is a source checkout of hls4ml (its PyPI package ships no tests; the tests are hls4ml's
code, read from that checkout and never copied into this repository). For each test file, its folder
test/pytest (conftest.py, baselines) is copied twice into a temporary folder, and the only change made is
the backend list: every `@pytest.mark.parametrize('backend', [...])` list becomes ['Vivado'] in one copy and
['AIEFlow'] in the other. Each copy runs under pytest (KERAS_BACKEND=torch), and the script prints, per
file, how many tests pass with Vivado (its C simulation, g++ and the ap_types headers, no Vitis) and how many
of those also pass with AIEFlow, the share, and the first line of each AIEFlow failure, so every remaining
failure can be read as a refusal or a bug. Tests whose backend comes from another parametrization are run
unchanged and counted apart.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

DEFAULT_FILES = ("test_pytorch_api.py", "test_keras_v3_api.py", "test_qonnx.py", "test_batchnorm_pytorch.py",
                 "test_conv1d.py", "test_pointwiseconv.py", "test_pooling.py", "test_globalpooling.py",
                 "test_depthconv2d.py", "test_sepconv2d.py")
_BACKENDS = re.compile(r"""(parametrize\(\s*['"]backend['"]\s*,\s*)\[[^\]]*\]""")


def rewrite(text: str, backend: str) -> tuple[str, int]:
    """The test file with every backend list replaced by [backend], and how many lists were replaced."""
    return _BACKENDS.subn(lambda m: f"{m.group(1)}['{backend}']", text)


def run(tests: Path, name: str, backend: str, tmp: Path, k: str | None) -> dict[str, tuple[str, str]]:
    """{test id: (outcome, first line of its failure)} of one file under one backend."""
    work = tmp / backend
    if not work.exists():
        shutil.copytree(tests, work)
    text, _ = rewrite((tests / name).read_text(), backend)
    (work / name).write_text(text)
    report = tmp / f"{backend}_{name}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", name]
    if k:
        cmd += ["-k", k]
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    results = {}
    if not report.exists():
        return results
    for case in ET.parse(report).getroot().iter("testcase"):
        tid = case.get("name", "")
        outcome, why = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                why = (node.get("message") or node.text or "").strip().splitlines()[0][:200] if (node.get("message") or node.text) else ""
                break
        results[tid] = (outcome, why)
    return results


def _plain(tid: str, backend: str) -> str:
    """A test id with the backend's name taken out, to pair the two runs' cases."""
    return tid.replace(backend, "*")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path, help="an hls4ml source checkout (with test/pytest)")
    ap.add_argument("--files", nargs="*", default=list(DEFAULT_FILES))
    ap.add_argument("-k", help="pytest -k expression, for a quick subset")
    args = ap.parse_args()
    tests = args.checkout / "test" / "pytest"
    if not tests.is_dir():
        sys.exit(f"{args.checkout} has no test/pytest: give an hls4ml source checkout")
    total_v = total_both = 0
    with tempfile.TemporaryDirectory(prefix="hls4ml_tests_") as tmp:
        tmp = Path(tmp)
        print(f"{'file':<28} {'Vivado pass':>11} {'AIEFlow pass':>12} {'share':>6}")
        for name in args.files:
            if not (tests / name).exists():
                print(f"{name:<28} (not in this checkout)")
                continue
            vivado = {_plain(t, "Vivado"): r for t, r in run(tests, name, "Vivado", tmp, args.k).items()}
            ours = {_plain(t, "AIEFlow"): r for t, r in run(tests, name, "AIEFlow", tmp, args.k).items()}
            passing = [t for t, (o, _) in vivado.items() if o == "passed"]
            both = [t for t in passing if ours.get(t, ("missing", ""))[0] == "passed"]
            total_v += len(passing)
            total_both += len(both)
            share = f"{len(both) / len(passing):.0%}" if passing else "-"
            print(f"{name:<28} {len(passing):>11} {len(both):>12} {share:>6}")
            reasons = Counter(ours.get(t, ("missing", "not run"))[1] or ours.get(t, ("missing", ""))[0]
                              for t in passing if t not in both)
            for why, n in reasons.most_common(5):
                print(f"    {n:>3} x {why}")
    if total_v:
        print(f"all files: {total_both} of the {total_v} tests that pass with Vivado also pass with AIEFlow "
              f"({total_both / total_v:.0%})")


if __name__ == "__main__":
    main()
