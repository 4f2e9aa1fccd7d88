"""What every benchmark records and prints first: the machine and the versions its figures were taken with.

One description for every benchmark (:func:`machine`), so that two results files can be compared key by
key, and one printer (:func:`describe`). A benchmark adds keys of its own (a device, a load average at the
end) on top of the dict; it never describes the CPU its own way.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def machine(torch: bool = False) -> dict:
    """The CPU (model, cores, AVX-512 and bf16 instructions), memory, platform, Python, the 1-minute load
    average now; with ``torch``, torch's version and intra-op threads as they stand (call it after setting them)."""
    cpu, flags = _cpuinfo()
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "usable_cores": _usable_cores(),
            "avx512": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "memory_gib": _memory_gib(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    if torch:
        import torch as _torch

        info.update(torch=_torch.__version__, torch_threads=_torch.get_num_threads())
    return info


def describe(machine: dict, versions: dict | None = None) -> str:
    """Two lines, ``machine: ...`` and ``versions: ...``, from a script's machine and versions dicts."""
    def flat(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items() if not isinstance(v, (list, dict)))

    return f"machine: {flat(machine)}" + (f"\nversions: {flat(versions)}" if versions else "")


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, instruction-set flags) of the first CPU; the platform's processor name elsewhere."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    return name or platform.processor() or platform.machine() or "unknown", flags


def _usable_cores() -> int:
    """The product's own count (affinity mask capped by a cgroup quota) when voicebank is importable."""
    try:
        from voicebank.runtime import usable_cores
    except ImportError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return usable_cores()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            return round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB, or None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


if __name__ == "__main__":  # python bench/_env.py: this machine, as every benchmark records it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(describe(machine()))
