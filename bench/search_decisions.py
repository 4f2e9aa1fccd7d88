"""bench/search.py's decision columns: the identifications an index kind changes, against exact search.

recall@1 counts a probe as lost whenever the index's first candidate is not exact search's first. The
product never takes the index's word for it: ``identification._candidates`` rescores the index's top-K
candidates exactly (float64 dot products against the stored float32 voiceprints) and sorts them, and
``calibration.decide`` turns the best two into the identification statistic (``margin`` rule, the
default: ``2 * best - second``; ``best`` rule: ``best``), accepted at the bank's threshold. So a swap
of two near-tied candidates, which recall@1 counts, changes nothing once rescored, and a miss far below
the threshold changes no decision; while a missed runner-up, which recall@1 does not see, raises the
margin and can let an unknown person in. This module counts what changes:

- probes: the genuine queries (a new utterance of an enrolled speaker) and as many unknown-person
  probes (speakers of the same population who are not enrolled: ``search_population.unknowns``);
- the reference: exact top-K over the whole bank (the benchmark's numpy brute force), rescored and
  decided the same way. Its candidates come from a float32 search; its float64 top two could only fall
  outside them if K-1 voiceprints lay within float32 rounding (~1e-6) of the second best;
- thresholds: where the reference accepts 1% and 0.1% of the unknown persons (quantiles 0.99 and
  0.999 of its statistic over the unknown probes), as calibration would set them;
- a decision differs when acceptance differs, or both accept but name different speakers; counted
  among genuine and among unknown probes, at each threshold. And the share of probes whose rescored
  top two (speakers, and statistic within 1e-6) equal the reference's: those decide the same at any
  threshold, so 1 - that share bounds what any threshold could change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from voicebank import calibration, scoring

BATCH = 64  # probes per search call
ACCEPTED_UNKNOWN = (0.01, 0.001)  # the reference's unknown-person acceptance at the thresholds compared
SAME = 1e-6  # statistics this close are the same

# (probes (m, d), k) -> (scores (m, k), SQL ids (m, k)), as SpeakerIndex.search answers: id = row + 1, -1 none
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Outcome:
    """What the product decides from one search's candidates, per probe."""

    top2: np.ndarray  # (m, 2) SQL ids of the best and second rescored candidates; -1: none
    statistic: np.ndarray  # (m,) calibration.decide of their scores; -inf without a candidate

    def accepted(self, threshold: float) -> np.ndarray:
        return np.array([scoring.accept(s, threshold) for s in self.statistic], dtype=bool)


def outcome(prints: np.ndarray, probes: np.ndarray, proposed: np.ndarray, rule: str) -> Outcome:
    """Rescore ``proposed`` (m, k) SQL ids (< 1: none) as ``identification._candidates`` does: float64
    dot products of each probe with the float32 voiceprints ``prints`` (n, d), best first; then the
    statistic of the best two as ``calibration.decide`` makes it under ``rule``. ``k`` >= 2 (the margin
    rule needs a runner-up; the benchmark's banks hold thousands)."""
    rows = np.where(proposed > 0, proposed - 1, 0)
    probes64 = probes.astype(np.float64)
    scores = np.stack([np.sum(probes64 * prints[rows[:, j]], axis=1) for j in range(rows.shape[1])], axis=1)
    scores[proposed < 1] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :2]
    best = np.take_along_axis(scores, order, axis=1)
    top2 = np.where(np.isfinite(best), np.take_along_axis(proposed, order, axis=1), -1)
    statistic = np.array([calibration.decide(b, s, rule) if np.isfinite(b) else -np.inf for b, s in best])
    return Outcome(top2, statistic)


class Comparison:
    """Exact search's decisions for one bank and its probes; called with a kind's search, how many of
    that kind's decisions differ (see the module docstring)."""

    def __init__(self, prints: np.ndarray, genuine: np.ndarray, unknown: np.ndarray, exact: Search, k: int,
                 rule: str = calibration.MARGIN, thresholds: dict | None = None):
        """``prints`` (n, d) float32 voiceprints (SQL id = row + 1); ``genuine`` and ``unknown`` probes (m, d);
        ``exact``: the brute-force search; ``k``: candidates asked of every search (>= 2); ``thresholds``:
        {name: threshold} to decide at (a bank's calibrated ones, say), each reported as its
        ``operating_point``; default: where exact search accepts each of ``ACCEPTED_UNKNOWN`` of the
        unknown probes, reported as ``unknown_accepted_by_exact``."""
        self.prints, self.k, self.rule = prints, k, rule
        self.probes = np.concatenate([genuine, unknown])
        self.genuine = np.arange(len(self.probes)) < len(genuine)
        self.reference = self._outcome(exact)
        unknown_statistic = self.reference.statistic[~self.genuine]
        self.named = "unknown_accepted_by_exact" if thresholds is None else "operating_point"
        self.thresholds = thresholds if thresholds is not None else {
            rate: float(np.quantile(unknown_statistic, 1 - rate)) for rate in ACCEPTED_UNKNOWN}

    def _outcome(self, search: Search) -> Outcome:
        batches = (self.probes[i:i + BATCH] for i in range(0, len(self.probes), BATCH))
        proposed = np.concatenate([search(batch, self.k)[1] for batch in batches])
        return outcome(self.prints, self.probes, proposed, self.rule)

    def __call__(self, search: Search) -> dict:
        """``search``'s differing decisions, as a JSON-ready dict."""
        got, ref = self._outcome(search), self.reference
        genuine, unknown = self.genuine, ~self.genuine
        same_top2 = np.all(got.top2 == ref.top2, axis=1) & (np.abs(got.statistic - ref.statistic) <= SAME)
        out = {"rule": self.rule, "k": self.k, "genuine": int(genuine.sum()), "unknown": int(unknown.sum()),
               "same_top2": float(same_top2.mean()), "same_top2_genuine": float(same_top2[genuine].mean()),
               "same_top2_unknown": float(same_top2[unknown].mean()), "thresholds": []}
        for exact in self.exact_accepts():
            threshold = exact["threshold"]
            mine, theirs = got.accepted(threshold), ref.accepted(threshold)
            differ = (mine != theirs) | (mine & theirs & (got.top2[:, 0] != ref.top2[:, 0]))
            out["thresholds"].append({**exact, "differ_genuine": int(differ[genuine].sum()),
                                      "differ_unknown": int(differ[unknown].sum())})
        return out

    def exact_accepts(self) -> list[dict]:
        """Per threshold: its name and value, and how many genuine and unknown probes exact search accepts."""
        out = []
        for rate, threshold in self.thresholds.items():
            theirs = self.reference.accepted(threshold)
            out.append({self.named: rate, "threshold": threshold,
                        "exact_accepts_genuine": int(theirs[self.genuine].sum()),
                        "exact_accepts_unknown": int(theirs[~self.genuine].sum())})
        return out


def print_table(rows: list[dict], order: list[str]) -> None:
    """The decision columns of ``rows`` (bench/search.py's result rows; rows without them are skipped)."""
    rows = sorted((r for r in rows if r.get("decisions")),
                  key=lambda r: (r["size"], order.index(r["kind"]) if r["kind"] in order else 99))
    if not rows:
        return
    rates = [t["unknown_accepted_by_exact"] for t in rows[0]["decisions"]["thresholds"]]
    print(f"\ndecisions that differ from exact search (index top-{rows[0]['decisions']['k']} rescored in "
          f"float64, {rows[0]['decisions']['rule']} rule; thresholds where exact search accepts "
          f"{' / '.join(f'{r:.1%}' for r in rates)} of unknown persons)")
    head = (f"{'N':>9} {'kind':<8} {'genuine':>7} {'unknown':>7} {'same top-2':>10} "
            + " ".join(f"{f'differ @{r:.1%} gen/unk':>22}" for r in rates) + "  thresholds")
    print(head)
    print("-" * len(head))
    for r in rows:
        d = r["decisions"]
        differ = " ".join(f"{t['differ_genuine']:>18}/{t['differ_unknown']:<3}" for t in d["thresholds"])
        thresholds = " / ".join(f"{t['threshold']:.4f}" for t in d["thresholds"])
        print(f"{r['size']:>9,} {r['kind']:<8} {d['genuine']:>7} {d['unknown']:>7} {d['same_top2']:>10.4f} "
              f"{differ}  {thresholds}")
