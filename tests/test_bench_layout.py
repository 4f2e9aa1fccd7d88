"""The benchmarks' shape, held by reading their source (nothing under bench/ is run):

- no benchmark module over MAX_LINES lines: a script that grows past it is doing several jobs, and
  its parts go into sibling modules (bench/search_*.py, bench/embed_*.py, bench/quality_*.py);
- one machine description: only ``bench/_env.py`` reads /proc/cpuinfo, so every results file
  describes its CPU with the same keys (``_env.machine``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
MAX_LINES = 320
SCRIPTS = sorted(BENCH.glob("*.py"))


def cpuinfo_reads(source: str) -> list[int]:
    """Line numbers of the string constants in ``source`` that name /proc/cpuinfo."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/proc/cpuinfo" in node.value)


def test_the_benchmarks_are_found():
    assert len(SCRIPTS) > 10 and BENCH / "_env.py" in SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_benchmark_module_is_over_the_line_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (f"bench/{path.name} has {lines} lines (at most {MAX_LINES}): move a cohesive part "
                                f"into a sibling module")


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.name != "_env.py"], ids=lambda p: p.name)
def test_only_env_reads_cpuinfo(path):
    found = cpuinfo_reads(path.read_text())
    assert not found, (f"bench/{path.name} reads /proc/cpuinfo (line {found[0]}): describe the machine with "
                       f"_env.machine() instead")


def test_the_cpuinfo_check_sees_a_read():
    assert cpuinfo_reads('with open("/proc/cpuinfo") as f:\n    pass\n') == [1]
    assert cpuinfo_reads("import os\nprint(os.cpu_count())\n") == []


def test_env_describes_the_cpu_with_the_same_keys_everywhere(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("_env", None)
    import _env

    info = _env.machine()
    assert {"cpu", "cpu_count", "usable_cores", "avx512", "platform", "python"} <= set(info)
    assert info["cpu"] and isinstance(info["avx512"], bool) and info["usable_cores"] >= 1
    assert "torch" not in info  # only a benchmark that runs torch asks for its version and threads
    assert _env.describe(info).startswith(f"machine: cpu {info['cpu']}, ")
