"""Do voicebank's promises hold on probes longer (or shorter) than the recordings it was calibrated on?

From ``bench/quality.py``'s cached embeddings and reference sets (run it first). Banks are drawn
at random from one corpus (``--draws`` per size), each person enrolled from 3 wideband recordings
with their seconds of speech (silero-vad, as enrollment measures them), and calibrated exactly as
the product calibrates itself for 1% (verification: false accepts per claim; identification:
unknown-person false alarms, margin rule), with the reference set built from the *other* corpus:
``evaluation.bank_trials`` for single recordings, ``lengths.with_lengths`` for the thresholds by
the speech behind a probe. Then measured on people it never saw (the corpus's other people) and on
its own people's other recordings, with probes of 1, 2, 3 and 5 recordings of one person at once
(the normalized mean of their embeddings: how resemblyzer embeds one long recording; 5 is longer
than any length calibration measures). Each probe is decided three ways: at the threshold read at
its speech (voicebank), at the single-recording threshold (before), and at the highest threshold
the lengths give, for every probe (one threshold that holds for all lengths; what a probe of
unknown length gets).

``--real-audio``: probes of 2, 3 and 5 recordings are real recordings instead: the recordings' audio
joined with ``GAP_SECONDS`` of silence between them, cut to its speech and embedded as the product
embeds one recording, its speech counted by the product's detector (cached beside the others). The
table then says whether the means of embeddings stood in well for long recordings, and prints how
close the two embeddings of each probe are.

``--half-reference``: half of the people outside the bank (drawn anew for each bank) join the
reference set, the other half are the strangers measured, as with the shipped reference set, which
holds both corpora. The other corpus alone has too few people with several recordings to measure
identification of longer probes against a `speechocean` bank (it then keeps its single threshold).

    python bench/probe_length.py [--data-root ../shared/data] [--draws 10] [--sizes 10 30] [--half-reference]
                                 [--real-audio]
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_data as data  # noqa: E402
from _env import describe, machine  # noqa: E402
from quality_protocol import statistic  # noqa: E402
from voicebank.calibration import IDENTIFY, MARGIN, VERIFY, RateModel, identification_point, verification_point  # noqa: E402
from voicebank.channel import WIDEBAND  # noqa: E402
from voicebank.evaluation import bank_trials, by_length, groups  # noqa: E402
from voicebank.lengths import with_lengths  # noqa: E402
from voicebank.norm import Normalizer  # noqa: E402
from voicebank.vectors import voiceprint  # noqa: E402

RATE = 0.01
N_ENROLL = 3
MIN_RECORDINGS = 6
PROBE_LENGTHS = (1, 2, 3, 5)
WAYS = ("voicebank", "before", "one for all")
GAP_SECONDS = 0.3  # between the recordings of a real-audio probe: a pause between sentences


def calibrate(found: list, seconds: list[np.ndarray], reference) -> dict:
    """The operating points the product stores for this bank (``evaluation.calibrate``'s steps)."""
    make = by_length(lambda wanted, combine: bank_trials(found, None, Normalizer("cosine", 0), MARGIN, (), reference,
                                                          WIDEBAND, wanted, combine=combine))
    first = make(1, (RATE, RATE))
    chosen = {VERIFY: verification_point(first[VERIFY], RATE, RateModel.fit(first[VERIFY])),
              IDENTIFY: identification_point(first[IDENTIFY], RATE, len(found), RateModel.fit(first[IDENTIFY]))}
    return with_lengths(chosen, make, seconds)


def probes(rows_of: list[list[int]], k: int, one) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, seconds, whose) of probes of ``k`` recordings of one person each; ``one(rows)``
    gives a probe's (embedding, seconds of speech) from the row numbers it joins."""
    emb, sec, whose = [], [], []
    for person, rows in enumerate(rows_of):
        for span in groups(len(rows), k):
            e, s = one(np.array(rows)[span])
            emb.append(e)
            sec.append(s)
            whose.append(person)
    return np.array(emb, dtype=np.float64).reshape(len(emb), -1), np.array(sec), np.array(whose)


def averaged(embeddings: np.ndarray, seconds: np.ndarray):
    """A probe as calibration builds it: the normalized mean of its recordings' embeddings."""
    return lambda picked: (voiceprint(embeddings[picked]), float(seconds[picked].sum()))


class Joined:
    """Probes of several recordings as real recordings (``--real-audio``), embedded once and kept in
    ``path``; single recordings are the cached embeddings."""

    def __init__(self, corpus, embedder, embeddings: np.ndarray, seconds: np.ndarray, path: Path):
        self.corpus, self.embedder, self.embeddings, self.seconds, self.path = corpus, embedder, embeddings, seconds, path
        self.done: dict[str, tuple[np.ndarray, float]] = {}
        self.closeness: dict[int, list[float]] = {}
        if path.is_file():
            with np.load(path) as z:
                self.done = {k: (e, float(s)) for k, e, s in zip(z["keys"].tolist(), z["emb"], z["seconds"])}

    def __call__(self, rows_of: list[list[int]], k: int):
        return probes(rows_of, k, averaged(self.embeddings, self.seconds) if k == 1 else self.one)

    def one(self, picked: np.ndarray) -> tuple[np.ndarray, float]:
        key = "|".join(str(self.corpus.paths[i].relative_to(self.corpus.root)) for i in picked)
        if key not in self.done:
            from voicebank.audio import near_speech, speech_seconds, voiced_frames
            from voicebank.embedding import embed_recordings

            gap = np.zeros(int(GAP_SECONDS * data.SR), np.float32)
            parts = [data.decode(self.corpus.paths[i]) for i in picked]
            samples = np.concatenate([x for part in parts for x in (part, gap)][:-1])
            voiced = voiced_frames(samples, data.SR)
            vec = embed_recordings(self.embedder, [near_speech(samples, data.SR, voiced)])[0]
            self.done[key] = (vec.astype(np.float64), speech_seconds(samples, data.SR))
        self.closeness.setdefault(len(picked), []).append(float(self.done[key][0] @ voiceprint(self.embeddings[picked])))
        return self.done[key]

    def save(self) -> None:
        if self.done:
            np.savez(self.path, keys=np.array(list(self.done)), emb=np.stack([e for e, _ in self.done.values()]),
                     seconds=np.array([s for _, s in self.done.values()]))


def thresholds(point, sec: np.ndarray) -> dict[str, np.ndarray]:
    return {"voicebank": np.array([point.at(s) for s in sec]), "before": np.full(len(sec), point.threshold),
            "one for all": np.full(len(sec), point.at(None))}


def one_bank(embeddings, seconds, by_speaker, bank, strangers, reference, acc, make_probes) -> None:
    enroll = [by_speaker[s][:N_ENROLL] for s in bank]
    found = [(k + 1, embeddings[rows]) for k, rows in enumerate(enroll)]
    points = calibrate(found, [seconds[rows] for rows in enroll], reference)
    prints = np.stack([voiceprint(e) for _, e in found]).astype(np.float64)
    for k in PROBE_LENGTHS:
        ue, us, _ = make_probes([by_speaker[s] for s in strangers], k)
        ge, gs, gw = make_probes([by_speaker[s][N_ENROLL:] for s in bank], k)
        if not len(ue) or not len(ge):
            continue
        su, sg = ue @ prints.T, ge @ prints.T
        cell = acc.setdefault(k, {"seconds": [], "claims": 0, "strangers": 0, "genuine": 0})
        cell["seconds"] += us.tolist()
        cell["claims"] += su.size
        cell["strangers"] += len(ue)
        cell["genuine"] += len(ge)
        v_u, v_g = thresholds(points[VERIFY], us), thresholds(points[VERIFY], gs)
        i_u, i_g = thresholds(points[IDENTIFY], us), thresholds(points[IDENTIFY], gs)
        stat_u, stat_g = statistic(su, MARGIN), statistic(sg, MARGIN)
        right = sg.argmax(1) == gw
        for way in WAYS:
            w = cell.setdefault(way, {"false_accepts": 0, "accepted": 0, "false_alarms": 0, "identified": 0})
            w["false_accepts"] += int(np.sum(su >= v_u[way][:, None]))
            w["accepted"] += int(np.sum(sg[np.arange(len(gw)), gw] >= v_g[way]))
            w["false_alarms"] += int(np.sum(stat_u >= i_u[way]))
            w["identified"] += int(np.sum(right & (stat_g >= i_g[way])))
        acc.setdefault("lengths", [[list(map(float, t[:2])) for t in points[w].lengths] for w in (VERIFY, IDENTIFY)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "quality-cache")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 30])
    p.add_argument("--half-reference", action="store_true", help="half of the people outside each bank join the "
                   "reference set (the other half are measured)")
    p.add_argument("--real-audio", action="store_true", help="probes of several recordings are their audio joined "
                   "into one recording, embedded as the product embeds one")
    p.add_argument("--out", type=Path, default=None, help="default: bench/results/probe-length[-half][-real].json")
    args = p.parse_args()
    args.out = args.out or ROOT / "bench" / "results" / (f"probe-length{'-half' if args.half_reference else ''}"
                                                         f"{'-real' if args.real_audio else ''}.json")
    import reference_set
    from voicebank.embedding import load_embedder

    embedder = load_embedder("resemblyzer")
    res: dict = {"machine": machine(), "command": " ".join(sys.argv), "rate": RATE, "corpora": {}, "closeness": {}}
    print(describe(res["machine"]))
    corpora = {n: c for n in data.CORPORA if (c := data.read_corpus(n, args.data_root)) is not None}
    for name, corpus in corpora.items():
        cache = data.cache_path(args.cache, name, "wide", embedder.model_id)
        others = [c for n, c in corpora.items() if n != name]
        if not cache.is_file() or not others:
            print(f"{name}: no cache ({cache}) or no other corpus; run bench/quality.py first")
            continue
        with np.load(cache) as z:
            found = dict(zip(z["keys"].tolist(), z["emb"]))
        embeddings = np.stack([found[str(q.relative_to(corpus.root))] for q in corpus.paths]).astype(np.float64)
        seconds = data.speech_seconds(corpus, args.cache)
        reference = reference_set.merge([reference_set.cached(o, embedder, args.cache) for o in others])
        by_speaker = corpus.by_speaker()
        make_probes = (Joined(corpus, embedder, embeddings, seconds, data.cache_path(args.cache, name, "joined",
                                                                                    embedder.model_id))
                       if args.real_audio else partial(probes, one=averaged(embeddings, seconds)))
        eligible = [s for s, rows in by_speaker.items() if len(rows) >= MIN_RECORDINGS]
        rng = np.random.default_rng(0)
        for size in args.sizes:
            if size >= len(eligible):
                continue
            acc: dict = {}
            for _ in range(args.draws):
                bank = list(rng.choice(eligible, size, replace=False))
                strangers = [s for s in by_speaker if s not in bank]
                measured = reference
                if args.half_reference:
                    joins = sorted(rng.choice(strangers, len(strangers) // 2, replace=False).tolist())
                    strangers = [s for s in strangers if s not in joins]
                    measured = joined(reference, [(embeddings[by_speaker[s]], name) for s in joins])
                one_bank(embeddings, seconds, by_speaker, bank, strangers, measured, acc, make_probes)
            res["corpora"].setdefault(name, {})[str(size)] = acc
            report(name, size, acc)
        if args.real_audio:
            make_probes.save()
            res["closeness"][name] = {k: np.percentile(v, [0, 5, 50]).tolist() for k, v in make_probes.closeness.items()}
            print(f"{name}: cosine of a joined recording's embedding with the mean of its recordings' (min, 5%, "
                  f"median) by recordings joined: " + ", ".join(f"{k}: {np.round(v, 3).tolist()}"
                                                                for k, v in res["closeness"][name].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(f"wrote {args.out}")


def joined(reference, people: list) -> object:
    """``reference`` (its wideband rows) with ``people`` ((embeddings, corpus) each) added."""
    from voicebank.reference import Reference

    first = int(reference.speakers.max()) + 1
    rows = [reference.embeddings[WIDEBAND]] + [e.astype(np.float32) for e, _ in people]
    speakers = [reference.speakers] + [np.full(len(e), first + k) for k, (e, _) in enumerate(people)]
    corpora = [reference.corpora] + [np.full(len(e), name) for e, name in people]
    return Reference(reference.model_id, {WIDEBAND: np.concatenate(rows)}, np.concatenate(speakers),
                     np.concatenate(corpora))


def report(name: str, size: int, acc: dict) -> None:
    print(f"\n{name}, banks of {size}; 1% promised; thresholds by length (last draw): verify "
          f"{acc.get('lengths', [[]])[0]}, identify {acc.get('lengths', [[], []])[1]}")
    print(f"{'recordings':>10} {'speech s':>8} | " + " | ".join(f"{w:^37}" for w in WAYS))
    print(f"{'':>10} {'median':>8} | " + " | ".join(f"{'verify FA':>9} {'accepted':>8} {'ident FA':>8} {'correct':>8}"
                                                    for _ in WAYS))
    for k in PROBE_LENGTHS:
        if k not in acc:
            continue
        c = acc[k]
        cols = []
        for way in WAYS:
            w = c[way]
            cols.append(f"{w['false_accepts'] / c['claims'] / RATE:>8.2f}x {w['accepted'] / c['genuine']:>8.1%} "
                        f"{w['false_alarms'] / c['strangers'] / RATE:>7.2f}x {w['identified'] / c['genuine']:>8.1%}")
        print(f"{k:>10} {np.median(c['seconds']):>8.1f} | " + " | ".join(cols))
    print(f"  trials per row: impostor claims {[acc[k]['claims'] for k in PROBE_LENGTHS if k in acc]}, "
          f"strangers {[acc[k]['strangers'] for k in PROBE_LENGTHS if k in acc]}, "
          f"genuine {[acc[k]['genuine'] for k in PROBE_LENGTHS if k in acc]}")


if __name__ == "__main__":
    main()
