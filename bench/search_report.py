"""bench/search.py's report: ratios against the numpy and flat rows of the same run, the tables, the
verdict against the issue's targets, and merging a run into an earlier results file.
"""

from __future__ import annotations

TARGET_P50_MS, TARGET_RECALL = 10.0, 0.99  # the target at 1M speakers
PG_TARGET_P50_MS = 15.0  # pgvector's (issue 13): at 100k voiceprints on 2 cores, the same recall


def add_ratios(rows: list[dict]) -> None:
    """Each row against the numpy and flat rows of the same size measured in the same run."""
    same = {(r["run"], r["size"], r["kind"]): r for r in rows}
    for r in rows:
        for base in ("numpy", "flat"):
            b = same.get((r["run"], r["size"], base))
            r[f"vs_{base}"] = None if b is None else {
                "p50_speedup": b["p50_ms"] / r["p50_ms"], "batch_qps_ratio": r["batch_qps"] / b["batch_qps"],
                "bytes_ratio": r["file_bytes_per_speaker"] / b["file_bytes_per_speaker"],
                "build_ratio": r["build_s"] / b["build_s"] if b["build_s"] else None}


def print_table(rows: list[dict], order: list[str]) -> None:
    """One line per (size, kind), kinds in ``order``."""
    head = (f"{'N':>9} {'kind':<8} {'build s':>8} {'B/spk file':>10} {'B/spk RSS':>10} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'batch q/s':>10} {'q/s 1/4/16 clients':>20} {'recall@1':>8} {'x numpy':>8} {'x flat':>7}  structure")
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["size"], order.index(r["kind"]) if r["kind"] in order else 99)):
        s = r["structure"]
        knobs = ", ".join(f"{k}={s[k]}" for k in ("M", "efSearch", "nlist", "nprobe") if k in s) or ("exact" if s["exact"] else "")
        speed = lambda base: f"{r[base]['p50_speedup']:.1f}" if r.get(base) else "-"  # noqa: E731
        clients = "/".join(f"{q:,.0f}" for q in (r.get("qps_clients") or {}).values()) or "-"
        print(f"{r['size']:>9,} {r['kind']:<8} {r['build_s']:>8.1f} {r['file_bytes_per_speaker']:>10,.0f} "
              f"{r['rss_bytes_per_speaker']:>10,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['batch_qps']:>10,.0f} "
              f"{clients:>20} {r['recall_at_1']:>8.4f} {speed('vs_numpy'):>8} {speed('vs_flat'):>7}  {knobs}")
    print("(pgvector: 'B/spk file' is the HNSW index, 'B/spk RSS' the speakers table with it; 'batch q/s' = 1 client)")


def print_sweeps(sweeps: list[dict]) -> None:
    if not sweeps:
        return
    print("\nsearch-time knob (same built index): recall@1 vs exact, single-query p50")
    for s in sorted(sweeps, key=lambda s: (s["size"], s["kind"], s.get("efSearch", s.get("nprobe")))):
        knob = "efSearch" if "efSearch" in s else "nprobe"
        print(f"{s['size']:>9,} {s['kind']:<5} {knob}={s[knob]:<4} recall@1={s['recall_at_1']:.4f}  p50={s['p50_ms']:.2f} ms")


def say(r: dict) -> None:
    """One row as soon as it is measured."""
    differ = " ".join(f"{t['differ_genuine']}/{t['differ_unknown']}" for t in r["decisions"]["thresholds"])
    print(f"  {r['kind']:<8} build {r['build_s']:7.1f} s  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
          f"batch {r['batch_qps']:9,.0f} q/s  recall@1 {r['recall_at_1']:.4f}  "
          f"{r['file_bytes_per_speaker']:,.0f} B/speaker  decisions differing (genuine/unknown) {differ}"
          + (f"  shared_buffers {r['shared_buffers_bytes'] / 2 ** 20:,.0f} MB" if "shared_buffers_bytes" in r else ""),
          flush=True)


def merge(old: dict, new: dict) -> dict:
    """Rows of ``new`` replace those of ``old`` for the same (size, kind); the rest of ``old`` stays."""
    fresh = {(r["size"], r["kind"]) for r in new["results"]}
    fresh_sweeps = {(s["size"], s["kind"]) for s in new["sweeps"]}
    return {"runs": old.get("runs", []) + new["runs"],
            "results": [r for r in old.get("results", []) if (r["size"], r["kind"]) not in fresh] + new["results"],
            "sweeps": [s for s in old.get("sweeps", []) if (s["size"], s["kind"]) not in fresh_sweeps] + new["sweeps"]}


def judge(rows: list[dict]) -> None:
    """Say which kinds meet the issue's target at the largest size measured."""
    largest = max(r["size"] for r in rows)
    print(f"\ntarget at {largest:,}: p50 <= {TARGET_P50_MS} ms at recall@1 >= {TARGET_RECALL}")
    for r in (r for r in rows if r["size"] == largest):
        target = PG_TARGET_P50_MS if r["kind"].startswith("pgvector") else TARGET_P50_MS
        ok = r["p50_ms"] <= target and r["recall_at_1"] >= TARGET_RECALL
        print(f"  {r['kind']:<6} p50 {r['p50_ms']:.2f} ms, recall@1 {r['recall_at_1']:.4f}: {'meets' if ok else 'misses'} "
              f"{'it' if target == TARGET_P50_MS else f'pgvector target (p50 <= {target} ms)'}")
