"""What every benchmark prints first: the machine and the versions its figures were taken with."""

from __future__ import annotations


def describe(machine: dict, versions: dict | None = None) -> str:
    """Two lines, ``machine: ...`` and ``versions: ...``, from a script's machine and versions dicts."""
    def flat(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items() if not isinstance(v, (list, dict)))

    return f"machine: {flat(machine)}" + (f"\nversions: {flat(versions)}" if versions else "")
