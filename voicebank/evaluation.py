"""Measuring a bank on data: error rates of scored trials, calibration, DET plots.

Trial lists are read and scored in ``trials.py`` (its names are importable from here too).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Collection, Sequence

import numpy as np

from . import identification, lengths, scoring
from . import settings as settings_mod
from .channel import NO_TELEPHONE, TELEPHONE, WIDEBAND
from .calibration import (BEST, IDENTIFY, SCAN, VERIFY, OpenSetTrials, OperatingPoint, RateModel, ThinDataError, decide,
                          identification_point, measure, needed, top2, upper_bound, verification_point)
from .encoding import Progress
from .errors import InvalidInputError, NotEnoughDataError
from .lengths import groups
from .norm import Normalizer
from .reference import Reference, for_model
from .services import Services
from .trials import (ENROLLED, LABELS, PAIRS, Scores, Trial, TrialFileError,  # noqa: F401 (re-exported)
                     read_trials, score_file, score_trials)
from .vectors import voiceprint

log = logging.getLogger(__name__)


@dataclass
class Report:
    """Error rates of a set of scores; thresholds are on the bank's score."""

    kind: str
    n_target: int
    n_nontarget: int
    eer: float
    eer_threshold: float
    min_dcf: dict[str, dict[str, float]]
    far_target: float
    at_far: scoring.ErrorRates
    current: scoring.ErrorRates | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rates = lambda r: None if r is None else {"threshold": r.threshold, "far": r.far, "frr": r.frr}  # noqa: E731
        return {
            "score": self.kind, "n_target": self.n_target, "n_nontarget": self.n_nontarget,
            "eer": self.eer, "eer_threshold": self.eer_threshold, "min_dcf": self.min_dcf,
            "far_target": self.far_target, "at_far": rates(self.at_far), "current_threshold": rates(self.current),
            **self.extra,
        }



def open_set_trials(services: Services, max_probes: int = 5000, seed: int = 0, rule: str | None = None,
                    channel: str = WIDEBAND, wanted: tuple[float | None, float | None] = (0.01, 0.01),
                    combine: int = 1) -> OpenSetTrials:
    """Calibration trials made from the bank itself in ``channel``, no audio needed: see
    :func:`trials_from_embeddings`. The cohort (people never enrolled) adds unknown-person trials;
    the model's reference set (:mod:`voicebank.reference`) adds more when the bank's own are too
    few for the rates ``wanted`` (false accepts per claim, unknown-person false alarms). Voiceprints
    closer than the duplicate-voice threshold are one person's: they are no strangers to each other.
    ``rule``: the identification decision to calibrate (default: the bank's)."""
    return _trials_of(services, rule, channel, max_probes, seed)(wanted, combine)


def _trials_of(services: Services, rule: str | None, channel: str, max_probes: int = 5000,
               seed: int = 0) -> Callable[[tuple[float | None, float | None], int], OpenSetTrials]:
    """:func:`open_set_trials` for the rates wanted and probes of ``combine`` recordings, with the
    bank read once for every call (calibration asks for several)."""
    speakers = services.repository.utterance_embeddings(channel)
    wide = speakers if channel == WIDEBAND else services.repository.utterance_embeddings(WIDEBAND)
    twins = twin_pairs([(sid, e) for sid, _, e in wide], services.checks()[1])
    scorer = _scorer(services, channel)
    cohort = scorer.cohort if scorer.cohort is not None else \
        services.repository.cohort_embeddings(services.encoder.dimension, channel)
    rule = rule or services.repository.settings().identify_rule
    found, reference = [(sid, e) for sid, _, e in speakers], _reference(services)
    return lambda wanted, combine=1: bank_trials(found, cohort, scorer, rule, twins, reference, channel, wanted,
                                                 max_probes, seed, combine)


def _scorer(services: Services, channel: str) -> Normalizer:
    return identification.scorer(services, services.repository.settings(), channel)


def _reference(services: Services) -> Reference | None:
    """The reference set of strangers shipped for the bank's model (:mod:`voicebank.reference`)."""
    return for_model(services.encoder.model_id)


def _operating_points(services: Services, channel: str) -> dict[str, OperatingPoint]:
    return settings_mod.operating_points(services.repository.settings(), channel)


def bank_trials(found: list[tuple[int, np.ndarray]], cohort: np.ndarray | None, scorer: Normalizer, rule: str,
                twins: Collection[tuple[int, int]], reference: Reference | None, channel: str,
                wanted: tuple[float | None, float | None] = (0.01, 0.01), max_probes: int = 5000,
                seed: int = 0, combine: int = 1) -> OpenSetTrials:
    """:func:`open_set_trials` from its parts: the speakers' utterance embeddings in ``channel``
    ((id, (n, d)) each), the cohort, the score, the rule, the pairs of ids that are one voice
    (:func:`twin_pairs`) and the reference set (its people enrolled in the bank left out of it).
    ``combine``: probes of that many recordings each (:func:`trials_from_embeddings`)."""
    trials = None
    if len(found) >= 3:
        try:
            trials = trials_from_embeddings(found, cohort, scorer, max_probes, seed, rule, twins=twins, combine=combine)
        except NotEnoughDataError:
            if reference is None:
                raise
    if reference is not None and channel in reference.embeddings and (trials is None or _too_few(trials, *wanted)):
        kept = ~np.isin(reference.speakers, _enrolled_of(reference, channel, [e for _, e in found]))
        rows = combined(reference.embeddings[channel][kept], reference.speakers[kept], combine)
        trials = trials_from_embeddings(found, cohort, scorer, max_probes, seed, rule, rows, twins, combine)
    if trials is None:
        trials_from_embeddings(found, cohort, scorer, combine=combine)  # raises, saying what is missing
    return replace(trials, channel=channel)


def _too_few(trials: OpenSetTrials, far: float | None, unknown_rate: float | None) -> bool:
    return (far is not None and trials.nontarget.size < needed(far)) or \
        (unknown_rate is not None and len(trials.unknown) < needed(unknown_rate))


def _enrolled_of(reference: Reference, channel: str, speakers: list[np.ndarray]) -> np.ndarray:
    """The people of the reference set who are enrolled in the bank: whose voiceprint scores higher
    against a bank's voiceprint than any two different people of the set score against each other
    (:meth:`Reference.twin`)."""
    if not speakers:
        return np.zeros(0, dtype=np.int64)
    prints = np.stack([voiceprint(e) for e in speakers]).astype(np.float64)
    people, means = reference.voiceprints(channel)
    enrolled = people[(means.astype(np.float64) @ prints.T).max(axis=1) > reference.twin(channel)]
    if len(enrolled):
        log.info("left %d people of the reference set out: they are enrolled", len(enrolled))
    return enrolled


def scan_trials(found: list[tuple[int, np.ndarray]], scorer: Normalizer, rule: str,
                twins: Collection[tuple[int, int]], reference: Reference, channel: str) -> OpenSetTrials | None:
    """Unknown-person trials for `scan`'s windows: the reference set's windows (cut as scan cuts
    them) against the bank's voiceprints, moved by the level shift measured on whole recordings
    (the bank's own strangers against the reference set's: :func:`level_shift`). A window is
    shorter than a recording, and its scores spread differently: its threshold is its own. The
    genuine trials are the bank's whole recordings (it keeps no windows of its people). None
    where the reference set has no windows in ``channel``, or the score is not cosine."""
    windows = reference.windows.get(channel)
    if windows is None or not len(windows) or scorer.kind != "cosine" or len(found) < 2:
        return None
    enrolled = _enrolled_of(reference, channel, [e for _, e in found])
    prints = np.stack([voiceprint(e) for _, e in found]).astype(np.float64)
    cut = windows[~np.isin(reference.window_speakers, enrolled)].astype(np.float64) @ prints.T
    # the level shift of whole recordings, as identification's: the same strangers, the same bank
    whole = trials_from_embeddings(found, None, scorer, rule=rule, twins=twins,
                                   reference=reference.embeddings[channel][~np.isin(reference.speakers, enrolled)])
    shift, spread = whole.sources["shift"], whole.sources["spread"]
    cut = at_level(list(cut), shift, spread, people=whole.sources["people"])
    return OpenSetTrials(whole.target, whole.known_best, whole.known_correct, cut,
                         len(found), scorer.kind, whole.known_second, rule, channel,
                         {"own": 0, "cohort": 0, "reference": len(cut), "shift": shift, "spread": spread,
                          "people": whole.sources["people"], "windows": 1},
                         whole.twins)


def trials_from_embeddings(speakers: list[tuple[int, np.ndarray]], cohort: np.ndarray | None, scorer: Normalizer,
                           max_probes: int = 5000, seed: int = 0, rule: str = BEST,
                           reference: np.ndarray | None = None,
                           twins: Collection[tuple[int, int]] = (), combine: int = 1) -> OpenSetTrials:
    """Open-set calibration trials from enrolled speakers' utterance embeddings ((id, (n, d)) each).

    Genuine: each recording of a speaker with two or more, against that speaker's voiceprint made
    WITHOUT it (verification), and against the whole gallery with that voiceprint in place of the
    speaker's (identification: is its best score its own speaker?). Unknown persons: each recording
    with its speaker taken out of the gallery, scored against everyone else, and each ``cohort``
    recording (people never enrolled) against everyone. Above ``max_probes`` recordings a fixed
    random sample of them is used, so calibration time stays bounded on big banks.

    ``reference``: (m, d) recordings of a reference set (people never enrolled), scored against
    everyone too, then moved to the level of the bank's own strangers (:func:`level_shift`).
    ``twins``: pairs of speaker ids taken for one person enrolled twice (:func:`twin_pairs`): they
    are left out of each other's unknown-person trials (a person is no stranger to their own
    voiceprint), and named in ``OpenSetTrials.twins``.

    ``combine``: each probe is ``combine`` of a speaker's recordings at once, a longer probe
    (:func:`groups`: their embeddings' normalized mean, as resemblyzer embeds one long recording;
    a probe of ``combine`` reference recordings too, taken of one person); the voiceprints stay
    those of every recording. The cohort, whose people are not told apart, is left out then.
    """
    if len(speakers) < (2 if reference is not None else 3):
        raise NotEnoughDataError(
            f"calibrating from the bank needs at least 3 enrolled speakers (it has {len(speakers)}): each one's "
            "recordings are scored against the others as if they were strangers. Enroll more, or give a trial "
            "list with --trials (verification only)."
        )
    ids = np.array([sid for sid, _ in speakers])
    prints = np.stack([voiceprint(e) for _, e in speakers]).astype(np.float64)
    spans = [(k, span) for k, (_, e) in enumerate(speakers) for span in groups(len(e), combine)]
    if not spans:
        raise NotEnoughDataError(f"no speaker has {combine} recordings to make a probe of {combine} from.")
    owner = np.array([k for k, _ in spans])
    utterances = np.stack([_probe(speakers[k][1], span) for k, span in spans]).astype(np.float64)
    chosen = np.arange(len(utterances))
    if len(chosen) > max_probes:
        chosen = np.sort(np.random.default_rng(seed).choice(len(chosen), max_probes, replace=False))
    index = {int(sid): k for k, sid in enumerate(ids)}
    pairs = sorted((index[a], index[b]) for a, b in twins if a in index and b in index)
    apart = {k: {j for a, b in pairs for k_, j in ((a, b), (b, a)) if k_ == k} for k in range(len(speakers))}
    target, known_best, known_second, known_correct, unknown, whose = [], [], [], [], [], []
    everyone = np.arange(len(speakers))
    for u in chosen:
        k, probe = owner[u], utterances[u]
        others = everyone[everyone != k]
        excl = [(int(ids[k]), int(ids[j])) for j in others]
        row = scorer.score(np.repeat(probe[None, :], len(others), 0), prints[others], excl, excl)
        if len(others):
            stranger = np.array([j not in apart[k] for j in others])
            if stranger.any():
                unknown.append(row[stranger])
                whose.append(k)
        own, span = speakers[k][1], spans[u][1]
        if len(own) > len(span):
            held_out = voiceprint(np.delete(own, span, axis=0).astype(np.float64))
            score = float(scorer.score(probe, held_out, [(int(ids[k]),)], [(int(ids[k]),)])[0])
            target.append(score)
            top = np.sort(np.append(row, score))[::-1]
            known_best.append(float(top[0]))
            known_second.append(float(top[1]) if len(top) > 1 else -np.inf)
            known_correct.append(score >= float(row.max()) if len(row) else True)
    own = len(unknown)
    cohort = cohort if combine == 1 else None
    for probe in cohort if cohort is not None else ():
        every = [(int(i),) for i in ids]
        unknown.append(scorer.score(np.repeat(probe[None, :], len(prints), 0), prints, every, every))
    shift = spread = 0.0
    if reference is not None and len(reference):
        every = [(int(i),) for i in ids]
        strangers = np.asarray(reference, dtype=np.float64)
        rows = list(strangers @ prints.T) if scorer.kind == "cosine" else [
            scorer.score(np.repeat(probe[None, :], len(prints), 0), prints, every, every) for probe in strangers]
        if len(set(whose)) >= MIN_LEVEL_PEOPLE:
            shift = level_shift(unknown[:own], rows, rule)
            spread = shift_spread(unknown[:own], whose, rule)
        unknown.extend(at_level(rows, shift, spread, seed, len(set(whose))))
    if not unknown:
        raise NotEnoughDataError(
            "no unknown-person trials: every enrolled voiceprint is within the duplicate-voice threshold of another "
            "(one person enrolled under several names?). Remove the duplicates, or add recordings of people who are "
            "not enrolled (`voicebank cohort add FILE...`).")
    if not target and reference is None and combine == 1:  # longer probes only move a rate's threshold
        raise NotEnoughDataError(
            "calibrating from the bank needs genuine trials: at least one speaker with two or more recordings. "
            "Add recordings (`voicebank add NAME FILE...`), or give a trial list with --trials."
        )
    sources = {"own": own, "cohort": len(cohort) if cohort is not None else 0,
               "reference": 0 if reference is None else len(reference), "shift": shift, "spread": spread,
               "people": len(set(whose))}
    return OpenSetTrials(np.array(target), np.array(known_best), np.array(known_correct, dtype=bool), unknown,
                         len(speakers), scorer.kind, np.array(known_second), rule, sources=sources,
                         twins=tuple((int(ids[a]), int(ids[b])) for a, b in pairs))


def _probe(rows: np.ndarray, span: np.ndarray) -> np.ndarray:
    return rows[span[0]] if len(span) == 1 else voiceprint(rows[span])


def combined(rows: np.ndarray, owners: np.ndarray, combine: int) -> np.ndarray:
    """Recordings of several people (``owners``: whose each row is) as probes of ``combine``
    recordings of one person each (:func:`groups`)."""
    if combine == 1:
        return rows
    out = [_probe(rows[owners == p], span) for p in np.unique(owners) for span in groups(int(np.sum(owners == p)), combine)]
    return np.stack(out) if out else np.zeros((0, rows.shape[1]), rows.dtype)


# The bank's own strangers set the reference set's level from this many people on. With fewer, the
# level's spread, estimated from n people, is Student's t on n - 1 <= 2 degrees of freedom, which
# has no finite variance: a promise kept on average over it asks for a threshold no genuine speaker
# reaches (a bank of 3 people got 1.0 for verification and rejected everyone). Below it the
# reference set is taken at its own level, and the trials' sources say so (shift 0).
MIN_LEVEL_PEOPLE = 4

# Where the bank's own strangers and the reference set's are compared: the median of their decision
# statistics. Matching the level of single scores instead (their mean, or their 90th percentile)
# left small banks' promises 2-3x over on strangers of their own corpus; a scale fitted as well was
# noisier still (bench/quality.py, "Identification by bank size and channel").
SHIFT_QUANTILE = 0.5


def level_shift(own: list[np.ndarray], reference: list[np.ndarray], rule: str) -> float:
    """How far to move the reference set's scores (every score of its rows, so every decision
    statistic moves as much) to the level of the bank's own strangers: the difference of the
    medians of their decision statistics (``rule``; ``own``: the bank's own unknown-person rows,
    its recordings against everyone else). None of its own (fewer than 3): 0. Strangers from the
    bank's own population (its language, its microphones, its line) score closer to its voiceprints
    than the reference set's people do.

    Like is compared with like: an own row lacks its own speaker's voiceprint, so it has one
    candidate fewer than a reference row, and the best of fewer candidates is lower. Where that is
    so, the reference set's median is taken over every gallery with one voiceprint left out
    (:func:`_one_left_out`), and the shift found is then applied to its full rows, as a stranger
    meets the whole bank."""
    own_stats = [decide(*top2(r), rule) for r in own if len(r)]
    if len(own_stats) < 3 or not reference:
        return 0.0
    narrower = int(np.median([len(r) for r in own if len(r)])) == max(len(r) for r in reference) - 1
    reference_stats = _one_left_out(reference, rule) if narrower else [decide(*top2(r), rule) for r in reference if len(r)]
    return float(np.quantile(own_stats, SHIFT_QUANTILE) - np.quantile(reference_stats, SHIFT_QUANTILE))


def _one_left_out(rows: list[np.ndarray], rule: str) -> np.ndarray:
    """The decision statistic of each row with each of its candidates left out in turn, pooled:
    leaving out the best gives (second, third), leaving out the second (best, third), and any of the
    other len - 2 leaves (best, second)."""
    out = []
    for row in rows:
        if len(row) < 2:
            continue
        top = np.sort(row)[::-1][:3]
        third = top[2] if len(top) > 2 else None
        out += [decide(top[1], third, rule), decide(top[0], third, rule)] + [decide(top[0], top[1], rule)] * (len(row) - 2)
    return np.array(out)


SHIFT_DRAWS = 200  # bootstrap resamples behind shift_spread


def shift_spread(own: list[np.ndarray], whose: Sequence[int], rule: str, seed: int = 0) -> float:
    """How uncertain :func:`level_shift`'s level of the bank's own strangers is: the standard
    deviation of their median decision statistic over bootstrap resamples of the bank's people
    (``whose``: the speaker behind each row of ``own``), not of its recordings, since one speaker's
    recordings score alike; scaled by sqrt(n / (n - 1)) for n people, since a bootstrap over few
    people understates the spread by that much. 0 where :func:`level_shift` measures no shift."""
    stats = np.array([decide(*top2(r), rule) if len(r) else np.nan for r in own])
    owners = np.asarray(whose)[~np.isnan(stats)] if len(stats) else np.zeros(0)
    stats = stats[~np.isnan(stats)]
    groups = [stats[owners == k] for k in np.unique(owners)]
    if len(stats) < 3 or len(groups) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    medians = [np.quantile(np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))]),
                           SHIFT_QUANTILE) for _ in range(SHIFT_DRAWS)]
    return float(np.std(medians) * np.sqrt(len(groups) / (len(groups) - 1)))


def at_level(rows: list[np.ndarray], shift: float, spread: float, seed: int = 0,
             people: int | None = None) -> list[np.ndarray]:
    """The reference set's rows moved to the level of the bank's own strangers, each by its own
    draw of what that level may be: ``shift`` plus ``spread`` times a quantile of Student's t with
    ``people - 1`` degrees of freedom (the spread is itself estimated from that many people; None:
    a normal quantile), the quantiles evenly spaced and dealt to the rows in a fixed random order.
    A threshold chosen on these rows keeps its promise on average over the level's uncertainty;
    moved by ``shift`` alone, it would keep it only at the estimate, and a false-alarm rate rises
    faster with a level set too low than it falls with one set too high."""
    if not spread or not rows:
        return [r + shift for r in rows]
    n = len(rows)
    probabilities = (np.arange(n) + 0.5) / n
    if people is not None and people >= 2:
        from scipy.special import stdtrit  # scipy comes with librosa; calibration only

        quantiles = stdtrit(people - 1, probabilities)
    else:
        quantiles = np.array([NormalDist().inv_cdf(p) for p in probabilities])
    draws = shift + spread * np.random.default_rng(seed).permutation(quantiles)
    return [r + d for r, d in zip(rows, draws)]


def twin_pairs(speakers: list[tuple[int, np.ndarray]], threshold: float) -> list[tuple[int, int]]:
    """Pairs of speaker ids (a < b) whose voiceprints (of the (id, (n, d)) utterance embeddings
    given) reach the duplicate-voice ``threshold``: one voice enrolled twice. Taken in the wideband
    channel, where the threshold was set; the same pairs hold in every channel."""
    if len(speakers) < 2:
        return []
    ids = np.array([sid for sid, _ in speakers])
    prints = np.stack([voiceprint(e) for _, e in speakers]).astype(np.float64)
    a, b = np.nonzero(np.triu(prints @ prints.T >= threshold, k=1))
    return sorted((int(min(ids[i], ids[j])), int(max(ids[i], ids[j]))) for i, j in zip(a, b))


def trial_list_trials(scores: Scores) -> OpenSetTrials:
    """Verification trials from a scored trial list, as :class:`OpenSetTrials` (no identification
    view: a trial list says nothing about a gallery). The non-target scores form one row."""
    return OpenSetTrials(scores.target, np.zeros(0), np.zeros(0, dtype=bool), [scores.nontarget], 1, scores.kind)


@dataclass
class Calibration:
    """What ``calibrate`` measured: the chosen operating points, what the stored thresholds give
    on the same trials, and how the identification promise moves as the bank grows."""

    chosen: dict[str, OperatingPoint]
    stored: dict[str, OperatingPoint]
    trials: OpenSetTrials
    source: str  # "bank" or the trial list's path
    growth: list[tuple[int, float]] = field(default_factory=list)  # (speakers, false alarms at the chosen threshold)
    scored: Scores | None = None  # the trial list's scores, when calibrated on one
    # the same, measured in the other channels (telephone), and why a channel could not be
    channels: dict[str, "Calibration"] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # speakers taken for one voice enrolled twice, by name (left out of each other's unknown trials)
    twins: list[tuple[str, str]] = field(default_factory=list)
    # the verification trials, when they are not ``trials`` (the bank's own impostor pairs can be enough
    # for the false-accept rate while its unknown-person trials are too few without the reference set)
    verify_trials: OpenSetTrials | None = None

    @property
    def channel(self) -> str:
        return self.trials.channel

    def every_channel(self) -> list["Calibration"]:
        """This calibration (wideband) and the other channels' after it."""
        return [self, *self.channels.values()]

    def to_dict(self) -> dict[str, Any]:
        t, v = self.trials, self.verify_trials or self.trials
        out = {
            "source": self.source, "channel": t.channel, "score": t.kind, "gallery": t.gallery,
            "trials": {"genuine": int(v.target.size), "impostor": int(v.nontarget.size), "unknown": len(t.unknown)},
            "chosen": {k: p.to_dict(with_model=False) for k, p in self.chosen.items()},
            "stored": {k: p.to_dict(with_model=False) for k, p in self.stored.items()},
            "growth": [{"speakers": n, "false_alarm": round(r, 6)} for n, r in self.growth],
        }
        if self.channels or self.skipped:
            out["channels"] = {name: c.to_dict() for name, c in self.channels.items()}
            out["skipped"] = dict(self.skipped)
        out["twins"] = [list(pair) for pair in self.twins]
        return out


def calibrate_bank(services: Services, trials: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None,
                   far: float | None = 0.01, unknown_rate: float = 0.01,
                   purposes: tuple[str, ...] = (VERIFY, IDENTIFY), rule: str | None = None,
                   progress: Progress | None = None) -> Calibration:
    """``voicebank calibrate``: :func:`calibrate` on the bank's own recordings, or with the trial
    list ``trials`` (relative paths from ``root``), which calibrates verification only: asked for
    both purposes, it chooses the verification threshold alone."""
    scores = None
    if trials is not None:
        purposes = (VERIFY,) if set(purposes) == {VERIFY, IDENTIFY} else purposes
        scores = score_file(services, trials, root, progress)
    result = calibrate(services, far=far, unknown_rate=unknown_rate, purposes=purposes, trials=scores,
                       source=str(trials) if trials is not None else "bank", rule=rule)
    result.scored = scores
    if scores is None and not services.repository.utterance_embeddings(TELEPHONE):
        result.skipped[TELEPHONE] = (
            f"no speaker has recordings embedded through the telephone line yet ({NO_TELEPHONE}): enroll them "
            "again, or `voicebank add` new recordings.")
    elif scores is None:  # the bank's own recordings were also embedded through the telephone channel
        try:
            result.channels[TELEPHONE] = calibrate(services, far=far, unknown_rate=unknown_rate, purposes=purposes,
                                                   rule=rule, channel=TELEPHONE)
        except NotEnoughDataError as exc:
            result.skipped[TELEPHONE] = str(exc)
    return result


def calibrate(services: Services, *, far: float | None = 0.01, unknown_rate: float = 0.01,
              purposes: tuple[str, ...] = (VERIFY, IDENTIFY), trials: Scores | None = None,
              source: str = "bank", rule: str | None = None, channel: str = WIDEBAND) -> Calibration:
    """Choose the thresholds for ``purposes`` (verification: false accepts ``far`` per claim, or
    the EER with ``far`` None; identification: unknown-person false alarms ``unknown_rate`` at the
    bank's size) from the bank's own recordings, or for verification from scored ``trials``.
    ``rule``: the identification decision (``best`` or ``margin``; default the bank's). Nothing is
    stored: ``bank.thresholds.set_operating_point`` stores a chosen point (and its rule). Raises
    :class:`~voicebank.errors.NotEnoughDataError` (nothing chosen) when the data cannot support a
    target."""
    if trials is not None and IDENTIFY in purposes:
        raise InvalidInputError("a trial list calibrates verification only: identification is calibrated from the "
                                "bank itself (run calibrate without --trials, or with --for verify).")
    if trials is not None:
        data = {VERIFY: trial_list_trials(trials)}
    else:
        make = _trials_of(services, rule, channel)
        data = trials_per_purpose(make, far if VERIFY in purposes else None,
                                  unknown_rate if IDENTIFY in purposes else None, purposes)
    models = {id(d): RateModel.fit(d) for d in data.values()}
    model = lambda which: models[id(data[which])]  # noqa: E731
    current = _operating_points(services, channel)
    chosen, thin = {}, []
    choose = {VERIFY: lambda: verification_point(data[VERIFY], far, model(VERIFY)),
              IDENTIFY: lambda: identification_point(data[IDENTIFY], unknown_rate, data[IDENTIFY].gallery,
                                                     model(IDENTIFY))}
    for which in (VERIFY, IDENTIFY):
        if which in purposes:
            try:
                chosen[which] = choose[which]()
            except ThinDataError as exc:  # say everything that is missing at once
                thin.append(str(exc))
    if thin:
        raise ThinDataError(" Also: ".join(thin))
    if trials is None:
        chosen = lengths.with_lengths(chosen, by_length(make), list(services.repository.utterance_speech(channel).values()))
    main = data.get(IDENTIFY, data.get(VERIFY))
    stored = {which: measure(data[which], which, point.threshold, model(which), point.method, point.target)
              for which, point in current.items()
              if which in purposes and (which == VERIFY or (point.rule or BEST) == main.rule)}
    if trials is None and IDENTIFY in purposes:
        found = _scan_point(services, rule or services.repository.settings().identify_rule, channel, unknown_rate)
        if found is not None:
            chosen[SCAN], windows = found
            if SCAN in current and (current[SCAN].rule or BEST) == windows.rule:
                was = current[SCAN]
                stored[SCAN] = replace(measure(windows, IDENTIFY, was.threshold, chosen[SCAN].model, was.method,
                                               was.target), purpose=SCAN)
    growth = []
    if IDENTIFY in chosen:
        t = chosen[IDENTIFY].threshold
        growth = [(n, model(IDENTIFY).false_alarm(t, n)) for n in sorted({main.gallery * m for m in (1, 2, 5, 10)})]
    names = {sid: name for sid, name, _ in services.repository.utterance_embeddings(WIDEBAND)} if main.twins else {}
    return Calibration(chosen, stored, main, source, growth,
                       twins=[(names.get(a, str(a)), names.get(b, str(b))) for a, b in main.twins],
                       verify_trials=data.get(VERIFY))


def _scan_point(services: Services, rule: str, channel: str, rate: float) -> tuple[OperatingPoint, OpenSetTrials] | None:
    """The operating point of `scan`'s windows in ``channel`` for ``rate`` unknown-person false
    alarms per window, and its trials (:func:`scan_trials`), or None where it cannot be measured."""
    reference = _reference(services)
    if reference is None:
        return None
    speakers = services.repository.utterance_embeddings(channel)
    wide = speakers if channel == WIDEBAND else services.repository.utterance_embeddings(WIDEBAND)
    trials = scan_trials([(sid, e) for sid, _, e in speakers], _scorer(services, channel), rule,
                         twin_pairs([(sid, e) for sid, _, e in wide], services.checks()[1]), reference, channel)
    if trials is None:
        return None
    point = identification_point(trials, rate, trials.gallery, RateModel.fit(trials))
    return replace(point, purpose=SCAN), trials


def trials_per_purpose(make: Callable[[tuple[float | None, float | None]], OpenSetTrials], far: float | None,
                       unknown_rate: float | None,
                       purposes: tuple[str, ...] = (VERIFY, IDENTIFY)) -> dict[str, OpenSetTrials]:
    """The trials each purpose is calibrated on: the bank's own (``make((None, None))``), and for a
    purpose whose own trials are too few for its rate, the ones with the reference set
    (``make((far, unknown_rate))``, made once for both when both need them). Where its own are
    enough, a purpose is never calibrated on another population's strangers."""
    own, wanted = None, {VERIFY: (far, None), IDENTIFY: (None, unknown_rate)}
    try:
        own = make((None, None))
    except NotEnoughDataError:
        pass
    out: dict[str, OpenSetTrials] = {}
    for which, rates in wanted.items():
        if which not in purposes:
            continue
        if own is not None and (own.sources["reference"] or not _too_few(own, *rates)):
            out[which] = own
        else:
            other = out.get(VERIFY if which == IDENTIFY else IDENTIFY)
            out[which] = other if other is not None and other is not own else make((far, unknown_rate))
    return out


def by_length(make: Callable[[tuple[float | None, float | None], int], OpenSetTrials]) -> lengths.Make:
    """The trials :func:`lengths.with_lengths` measures longer probes on: each purpose's, for the
    rates it asks (:func:`trials_per_purpose`), from ``make(wanted, combine)``, the trials with
    probes of ``combine`` recordings."""
    def of(combine: int, wanted: tuple[float | None, float | None]) -> dict[str, OpenSetTrials]:
        purposes = tuple(p for p, rate in zip((VERIFY, IDENTIFY), wanted) if rate is not None)
        return trials_per_purpose(lambda w: make(w, combine), *wanted, purposes)
    return of


# A bank on its automatic operating points (method "auto": set from the reference set when it was
# made) is calibrated again after each change while it holds at most this many speakers: there its
# own strangers are few, and every enrollment moves what a threshold promises. Larger banks keep
# their last calibration, whose model says how its promise moves as they grow (``check`` warns).
AUTO_MAX_SPEAKERS = 200
AUTO = "auto"
AUTO_RATES = (0.01, 0.01)  # what the automatic points are measured for: false accepts, unknown-person false alarms


def auto_calibration(services: Services) -> list[OperatingPoint]:
    """The operating points a bank on automatic calibration should have now: measured on its own
    recordings and the reference set, in every channel, for the purposes and channels whose stored
    point is still ``auto``. Empty when there is nothing to do (none is auto, the bank is past
    ``AUTO_MAX_SPEAKERS``, or it cannot be measured yet)."""
    if _reference(services) is None:
        return []
    out = []
    for channel in (WIDEBAND, TELEPHONE):
        points = _operating_points(services, channel)
        auto = {p for p, point in points.items() if point.method == AUTO}
        if IDENTIFY in auto and SCAN not in points:  # the first time scan's windows can be measured
            auto.add(SCAN)
        if not auto:
            continue
        try:
            result = calibrate(services, far=AUTO_RATES[0], unknown_rate=AUTO_RATES[1], channel=channel,
                               purposes=tuple(p for p in (VERIFY, IDENTIFY) if p in auto or (p == IDENTIFY and SCAN in auto)))
        except NotEnoughDataError as exc:
            log.info("automatic calibration (%s) waits for more speakers: %s", channel, exc)
            continue
        out += [replace(point, method=AUTO) for which, point in result.chosen.items() if which in auto]
    return out


def reference_points(reference: Reference, rule: str) -> list[OperatingPoint]:
    """A new bank's operating points, from the reference set alone (its people with two or more
    recordings as the bank's speakers, everyone as strangers): what they promise is measured, not
    assumed, and the bank's own recordings take over as it fills (:func:`auto_calibration`). The
    identification points are set for a bank of one; what they count is counted at one too (each
    stranger's recording against one voiceprint at a time)."""
    points = []
    for channel in (WIDEBAND, TELEPHONE):
        rows = reference.embeddings[channel]
        people = [(int(p), rows[reference.speakers == p]) for p in np.unique(reference.speakers)]
        speakers = [(p, e) for p, e in people if len(e) >= 2]
        singles = [e for _, e in people if len(e) < 2]
        trials = replace(trials_from_embeddings(speakers, np.concatenate(singles) if singles else None,
                                                Normalizer("cosine", 0), rule=rule), channel=channel)
        sources = {"own": 0, "cohort": 0, "reference": len(rows), "shift": 0.0}
        model = RateModel.fit(trials)
        points.append(replace(verification_point(trials, AUTO_RATES[0], model), method=AUTO, sources=sources))
        points.append(_at_one(identification_point(trials, AUTO_RATES[1], 1, model), trials.nontarget, sources))
        windows = reference.windows.get(channel)
        if windows is not None and len(windows):  # each window against every other person's voiceprint
            ids = np.array([p for p, _ in speakers])
            prints = np.stack([voiceprint(e) for _, e in speakers]).astype(np.float64)
            scores = windows.astype(np.float64) @ prints.T
            cut = [row[ids != person] for row, person in zip(scores, reference.window_speakers)]
            scan = replace(trials, unknown=cut)
            point = identification_point(scan, AUTO_RATES[1], 1, RateModel.fit(scan))
            points.append(replace(_at_one(point, np.concatenate(cut), {**sources, "reference": len(windows)}),
                                  purpose=SCAN))
    return points


def _at_one(point: OperatingPoint, pairs: np.ndarray, sources: dict) -> OperatingPoint:
    """An identification point for a bank of one, counted as such: every stranger-voiceprint pair."""
    counted = int(np.count_nonzero(pairs >= point.threshold))
    return replace(point, method=AUTO, counted=counted, trials=int(pairs.size),
                   upper=upper_bound(counted, int(pairs.size)), sources=sources)


def report(scores: Scores, far: float = 0.01, current_threshold: float | None = None) -> Report:
    eer, eer_threshold = scoring.eer(scores.target, scores.nontarget)
    dcf = {}
    for p in (0.01, 0.05):
        value, threshold = scoring.min_dcf(scores.target, scores.nontarget, p_target=p)
        dcf[f"p_target={p:g}"] = {"value": value, "threshold": threshold}
    current = None
    if current_threshold is not None:
        current = scoring.ErrorRates(
            current_threshold,
            float(np.mean(scores.nontarget >= current_threshold)),
            float(np.mean(scores.target < current_threshold)),
        )
    extra = {"left_out": scores.left_out, "dropped_trials": scores.dropped} if scores.left_out else {}
    return Report(scores.kind, len(scores.target), len(scores.nontarget), eer, eer_threshold, dcf, far,
                  scoring.threshold_at_far(scores.target, scores.nontarget, far), current, extra)


def plot_report(scores: Scores, result: Report, path: str | Path) -> None:
    """``eval --plot``: the DET curve of a trial list, with the EER, the --far point, and the
    bank's verification threshold marked at its rates on these trials. (The identification
    threshold is not marked: it applies to an identification's decision statistic against a whole
    bank, not to one pair's score, so no point of this curve is its rate.)"""
    from .plots import det_plot

    points = [("EER", result.eer, result.eer),
              (f"FAR {result.far_target:g} (threshold {result.at_far.threshold:.3f})", result.at_far.far, result.at_far.frr)]
    if result.current is not None:
        t = result.current.threshold
        points.append((f"verify threshold {t:.3f}", float(np.mean(scores.nontarget >= t)), float(np.mean(scores.target < t))))
    det_plot(scores.target, scores.nontarget, writable(path), points=points,
             title=f"Verification on {result.n_target:,} target and {result.n_nontarget:,} non-target trials")


def plot_calibration(cal: Calibration, path: str | Path) -> list[Path]:
    """``calibrate --plot``: the DET curve of the verification trials (to ``path``) and the
    open-set identification view (to ``<path stem>-identify<suffix>``), chosen and stored
    thresholds marked. Returns the files written."""
    from .plots import det_plot, identification_plot

    path, t = writable(path), cal.trials
    v = cal.verify_trials or t
    det_points = [(f"{name} verify {p.threshold:.3f}", p.counted / max(p.trials, 1), p.miss)
                  for name, p in (("chosen", cal.chosen.get(VERIFY)), ("stored", cal.stored.get(VERIFY))) if p]
    det_plot(v.target, v.nontarget, path, points=det_points, title="Verification trials from the bank")
    written = [path]
    if t.known_best.size and IDENTIFY in cal.chosen:
        id_points = [(f"{name} identify {p.threshold:.3f}", p.counted / max(p.trials, 1), p.hit)
                     for name, p in (("chosen", cal.chosen.get(IDENTIFY)), ("stored", cal.stored.get(IDENTIFY))) if p]
        second = path.with_name(f"{path.stem}-identify{path.suffix}")
        identification_plot(t.known_decision, t.known_correct, t.unknown_best, second, points=id_points,
                            title=f"Open-set identification, {t.gallery} enrolled")
        written.append(second)
    return written


def writable(path: str | Path) -> Path:
    """``path`` if a plot can be written there, else an :class:`InvalidInputError` saying why
    (checked before the work, so a typo does not cost a long evaluation)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InvalidInputError(f"--plot {path}: give a .png, .svg or .pdf file name.")
    try:
        if not path.parent.is_dir():
            raise InvalidInputError(f"--plot {path}: the folder {path.parent} does not exist; create it or choose "
                                    "another.")
        if path.is_dir():
            raise InvalidInputError(f"--plot {path}: is a folder; give a file name.")
    except OSError as exc:  # a name over 255 bytes, a folder this user may not enter
        raise InvalidInputError(f"--plot {path}: cannot write there ({exc.strerror or exc}); choose another file "
                                "name.") from None
    return path
