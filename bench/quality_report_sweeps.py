"""bench/quality.py's sweep tables (printed through quality_report's ``table``, so ``--markdown`` holds for
them too): probe length, enrollment length, and bank size by channel.
"""

from __future__ import annotations

from quality_report import frac, pct, table, times


def probe_length(res: dict) -> None:
    rows = []
    for corpus, sw in res.get("sweeps", {}).items():
        for r in sw.get("probe_length", []):
            if not r["probes"]:
                rows.append([corpus, f"{r['seconds']:g}", 0, "-", "-", "-"])
                continue
            speech = (f"{r['speech_s_mean']:.2f} (min {r['speech_s_min']:.2f})" if "speech_s_mean" in r
                      else f"audio {r['audio_s_mean']:.1f} s")
            rows.append([corpus, r["seconds"] if isinstance(r["seconds"], str) else f"{r['seconds']:g}", r["probes"],
                         speech, f"{pct(r['eer'])} ({r['target']} / {r['nontarget']})", f"{r['threshold']:.3f}"])
    if rows:
        table("Probe length: each probe cut to its first T s (probes at least T s long), against full-length "
              "voiceprints of 3 recordings", ["corpus", "T s", "probes", "speech s per probe, mean", "EER (target / "
                                              "non-target trials)", "threshold at EER"], rows,
              "Wideband. Each speaker with 2+ recordings enrolls from its first 3; the others are probes. Non-target: "
              "each probe against every other voiceprint (no unknown persons). Speech: silero-vad "
              "(audio.speech_seconds). Enrolled speakers: "
              + ", ".join(f"{c} {sw['speakers']}" for c, sw in res["sweeps"].items() if "speakers" in sw)
              + ".\nLonger cuts keep only the probes that long, so a row is not the same probes as the row above it.")


def enrollment_length(res: dict) -> None:
    rows = []
    for corpus, sw in res.get("sweeps", {}).items():
        for r in sw.get("enrollment_length", []):
            full = isinstance(r["total_seconds"], str)
            rows.append([corpus, r["total_seconds"] if full else f"{r['total_seconds']:g}",
                         f"{r['audio_s_per_speaker']:.1f}",
                         "-" if full else f"{r['speech_s_per_speaker']:.2f} (min {r['speech_s_per_speaker_min']:.2f})",
                         "-" if full else r["short_recordings"],
                         f"{pct(r['eer'])} ({r['target']} / {r['nontarget']})", f"{r['threshold']:.3f}"])
    if rows:
        table("Enrollment length: each speaker's 3 enrollment recordings cut to T/3 s each (T s in all), full-length "
              "probes", ["corpus", "T s", "audio s per speaker", "speech s per speaker, mean", "recordings shorter "
                         "than T/3", "EER (target / non-target trials)", "threshold at EER"], rows,
              "Wideband. Non-target: each probe against every other voiceprint, and every single-recording speaker "
              "(never enrolled) against every voiceprint (" + ", ".join(
                  f"{c} {sw['unknown']}" for c, sw in res["sweeps"].items() if "unknown" in sw)
              + "). A recording shorter than T/3 s is used whole.")


def _interval(per_bank: list | None) -> str:
    from quality_banks import ratio_interval

    found = ratio_interval(per_bank or [])
    return "-" if found is None else f"{times(found[0])}-{times(found[1])}"


def banks(res: dict) -> None:
    """Promised against measured false alarms, per corpus, bank size and probe channel (quality_banks)."""
    rows = []
    for corpus, sizes in res.get("banks", {}).items():
        for size, b in sizes.items():
            for channel, figures in b["channels"].items():
                for rate in ("0.01", "0.05"):
                    f = figures.get(rate)
                    if not f or "unknown" not in f:
                        continue
                    promised = f["promised"] / f["unknown"]
                    foreign = channel.endswith(", another corpus")
                    rows.append([corpus, f"{size} ({b['draws']})", "other corpus" if foreign else b["strangers"],
                                 channel.removesuffix(", another corpus"), pct(float(rate)),
                                 pct(promised), frac(f["false_alarms"], f["unknown"]),
                                 times(f["false_alarms"] / f["promised"] if f["promised"] else None),
                                 _interval(f.get("per_bank")),
                                 frac(f["correct"], f["genuine"]), pct(f["oracle_correct"] / f["genuine"]),
                                 f"{f['reference_used']}/{f['banks']}"])
    table("Identification by bank size and channel: promised against measured unknown-person false alarms",
          ["corpus", "bank (draws)", "strangers", "probes", "asked", "promised", "measured FA", "measured / promised",
           "90% over draws", "identified correctly", "best single threshold", "banks using the reference set"], rows,
          "Each bank: people drawn at random, enrolled from 3 wideband recordings each, calibrated as the product "
          "calibrates (its own recordings, the reference set of strangers when those are too few, moved to the level of "
          "its own strangers; the reference set built from the other corpus); probes decided in their channel "
          "(telephone, gsm, amr: through voicebank's simulated line, against telephone voiceprints; '... before': "
          "against the wideband voiceprints with the wideband threshold, as before channels; '..., another corpus': "
          "the same bank against every recording of the other corpus). promised: the rate calibration stood behind (the "
          "asked one, or the lowest its trials supported). Counts summed over the draws; '90% over draws': a bootstrap "
          "interval of the ratio over which banks were drawn.")
    rows = []
    for corpus, sizes in res.get("banks", {}).items():
        for size, b in sizes.items():
            for channel, figures in b["channels"].items():
                v = figures.get("verify")
                if v:
                    rows.append([corpus, size, channel, pct(v["promised"] / v["pairs"]), frac(v["false_accepts"], v["pairs"]),
                                 times(v["false_accepts"] / v["promised"] if v["promised"] else None),
                                 frac(v["false_rejects"], v["genuine"])])
    table("Verification by bank size and channel (asked: 1% false accepts per claim)",
          ["corpus", "bank", "probes", "promised", "measured FA", "measured / promised", "false rejects"], rows)
