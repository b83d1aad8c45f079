"""The README's commands, taken from its own text and typed in order in a new shell, all work.

The environment exists already (this test runs inside it): a scratch folder gets the Makefile and links to
the checkout's .venv and pyproject.toml, and one `bash --norc` with a bare environment runs `make demo`, the
activation line and every `aieflow ...` line of the README (the TOML block saved as the file it is named), then
the Python example. A command that fails fails the test with its output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_lines(text: str) -> list[str]:
    """Lines of the README's indented code blocks, in order, each without its trailing comment."""
    out = []
    for line in text.splitlines():
        if line.startswith("    ") and line.strip():
            out.append(re.split(r"\s{2,}#", line.strip())[0].strip())
    return out


def shell_commands(text: str) -> list[str]:
    keep = ("make demo", ". .venv/bin/activate", "aieflow ")
    return [l for l in _code_lines(text) if l.startswith(keep)]


def python_example(text: str) -> str:
    section = text.split("## Python", 1)[1].split("\n## ", 1)[0]
    return "\n".join(l[4:] for l in section.splitlines() if l.startswith("    "))


def test_the_readme_names_the_commands_in_an_order_that_can_run():
    cmds = shell_commands(README)
    assert cmds[0] == "make demo" and cmds[1] == ". .venv/bin/activate"
    used = {c.split()[1] for c in cmds if c.startswith("aieflow ")}
    assert {"compile", "simulate", "report", "check", "plot", "devices", "demo"} <= used
    assert "../shared" not in README


@pytest.mark.skipif(shutil.which("g++") is None or shutil.which("make") is None, reason="needs make and g++")
def test_the_readme_commands_run_as_typed(tmp_path):
    if not (ROOT / ".venv" / "bin" / "aieflow").exists():
        pytest.skip("runs inside the checkout's .venv, which `make test` creates")
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copy2(ROOT / "Makefile", work / "Makefile")
    (work / "pyproject.toml").symlink_to(ROOT / "pyproject.toml")
    (work / ".venv").symlink_to(ROOT / ".venv")
    toml = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    lines = ["set -e"]
    for cmd in shell_commands(README):
        if "--config layers.toml" in cmd:
            (work / "layers.toml").write_text(toml)  # the README says: saved as layers.toml
        lines.append(f"echo '$ {cmd}'")
        lines.append(cmd)
    (work / "example.py").write_text(python_example(README))
    lines.append("python example.py")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", "\n".join(lines)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for produced in ("build/demo/design.json", "build/mlp/report.html", "placement.png", "y.npy",
                     "build/pinned/design.json", "build/py/design.json"):
        assert (work / produced).is_file(), produced
    assert "bit-exact" in done.stdout
