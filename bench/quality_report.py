"""bench/quality.py's tables: plain aligned text, or Markdown (``--markdown``) to paste into docs/benchmarks.md.

Every rate is printed with the counts behind it (``k/n``).
"""

from __future__ import annotations

from typing import Any

MARKDOWN = False


def table(title: str, header: list[str], rows: list[list[Any]], note: str = "") -> None:
    cells = [[str(c) for c in r] for r in [header] + rows]
    print(f"\n### {title}\n" if MARKDOWN else f"\n== {title}")
    if MARKDOWN:
        print("| " + " | ".join(cells[0]) + " |")
        print("|" + "|".join(" --- " for _ in header) + "|")
        for r in cells[1:]:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        for k, r in enumerate(cells):
            print("  ".join(c.rjust(w) if k and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if note:
        print(("\n" if MARKDOWN else "") + note)


def pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}%" if abs(x) < 0.1 else f"{100 * x:.1f}%"


def frac(k: int, n: int) -> str:
    return f"{k}/{n} ({pct(k / n)})" if n else "-"


def times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def thr(values: list[float]) -> str:
    return " / ".join(f"{v:.3f}" for v in values) or "-"


# ----------------------------------------------------------------------------- sections


def embeddings(res: dict) -> None:
    rows = [[corpus, channel, c["recordings"], c["embedded_now"], f"{c['embed_wall_s']:.1f}",
             "-" if c["x_real_time"] is None else f"{c['x_real_time']:.0f}x"]
            for corpus, by in res["embedding"].items() for channel, c in by.items()]
    for corpus, sw in res.get("sweeps", {}).items():
        c = sw.get("cost")
        if c:
            rate = c["audio_s_embedded_now"] / c["wall_s"] if c["embedded_now"] and c["wall_s"] else None
            rows.append([corpus, "wide, cut (sweeps)", c["cuts"], c["embedded_now"], f"{c['wall_s']:.1f}",
                         "-" if rate is None else f"{rate:.0f}x"])
    table("Embeddings (embed_recordings, each recording once per channel; cached)",
          ["corpus", "channel", "recordings", "embedded now", "embed s", "x real time"], rows,
          "tel = 8 kHz, 8-bit mu-law, back to 16 kHz (probes only). cut: first T s of a recording, for the length "
          "sweeps (embedding and silero-vad speech seconds; 'embed s' counts both). Cached embeddings are read, not "
          "recomputed.")


def refusals(res: dict) -> None:
    rows = []
    for corpus, by in res["refusals"].items():
        for channel, r in by.items():
            example = next(iter(r["refused_recordings"].items()), None)
            rows.append([corpus, channel, frac(r["refused"], r["recordings"]), r["not_enough_speech"],
                         _short(f"{example[0]}: {example[1].split(': ', 1)[-1]}") if example else ""])
    table("Recordings audio.load refuses (product AudioLimits(): >= 0.5 s, >= 1 s of speech)",
          ["corpus", "channel", "refused", "too little speech", "example"], rows,
          "Refused recordings are still measured below (their embeddings exist); the counts say how many the "
          "product would have turned away first.")


def not_speech(res: dict) -> None:
    rows = [[name, "refused: no speech" if r["refused"] and r.get("no_speech") else
             "refused: " + _short(r["message"], 50) if r["refused"] else f"ACCEPTED ({r['speech_s']:.2f} s speech)"]
            for name, r in res["not_speech"].items()]
    refused = sum(r["refused"] and r.get("no_speech", False) for r in res["not_speech"].values())
    table("Sounds that are not speech (5 s each, peak 0.3) through audio.load", ["signal", "answer"], rows,
          f"{refused}/{len(rows)} refused as no speech.")


def enrollment(res: dict) -> None:
    corpora = list(res["enrollment_checks"])
    checks = [res["enrollment_checks"][c] for c in corpora]
    t = res["thresholds"]
    rows = [
        [f"genuine enrollments (3 recordings) refused for under {checks[0]['speech_needed_s']:g} s of speech"]
        + [frac(e["speech_refused"], e["enrollments"]) for e in checks],
        ["genuine enrollments (3 recordings) refused as inconsistent"]
        + [frac(e["genuine_refused"], e["enrollments"]) for e in checks],
        ["one of the 3 replaced by another speaker's: caught"]
        + [frac(e["intruder_caught"], e["intruder_variants"]) for e in checks],
        ["... and the message names the intruder"]
        + [frac(e["intruder_named"], e["intruder_variants"]) for e in checks],
        ["one of the 3 a telephone call (checked in the telephone channel): refused"]
        + [frac(e["phone_refused"], e["phone_variants"]) for e in checks],
        ["all 3 telephone calls (enrolled over the phone): refused"]
        + [frac(e["calls_refused"], e["enrollments"]) for e in checks],
        ["same person enrolled again (recordings 4-6 vs 1-3): flagged"]
        + [frac(e["same_caught"], e["same_person"]) for e in checks],
        ["... naming the right speaker"] + [frac(e["same_named"], e["same_person"]) for e in checks],
        ["new person (first 3 recordings) flagged as a duplicate"]
        + [frac(e["new_flagged"], e["new_people"]) for e in checks],
        ["new person with < 6 recordings (all of them) flagged"]
        + [frac(e["few_recordings_flagged"], e["few_recordings_people"]) for e in checks],
    ]
    for channel in ("wide", "tel"):
        rows.append([f"recordings refused by audio.load ({channel})"]
                    + [frac(res["refusals"][c][channel]["refused"], res["refusals"][c][channel]["recordings"])
                       if channel in res["refusals"].get(c, {}) else "-" for c in corpora])
    table(f"Enrollment checks (product defaults: consistency {t['consistency']:.2f}, duplicate {t['duplicate']:.2f})",
          ["check"] + corpora, rows,
          "Enrollments are wideband. Triples are consecutive recordings of every speaker with >= 3; each triple "
          "gets 3 intruder variants (fixed seed). Duplicate: per fold, the bank's other speakers enrolled too.")


def held_out_gates(res: dict) -> None:
    rows = [[r["chosen_on"], r["measured_on"], f"{r['consistency']:.3f}", frac(r["genuine_refused"], r["genuine"]),
             frac(r["intruder_caught"], r["intruders"]), f"{r['duplicate']:.3f}", frac(r["same_caught"], r["same"]),
             frac(r["new_flagged"], r["new"])] for r in res.get("held_out_gates", [])]
    if rows:
        table("Enrollment gates chosen on one corpus, measured on another", [
            "chosen on", "measured on", "consistency", "genuine refused", "intruder caught", "duplicate",
            "same person caught", "new person flagged"], rows,
            "Each gate set by its rule on the first corpus alone (consistency: at most 1% of its genuine triples "
            "refused; duplicate: the same person enrolled again caught at least 90% of the time), then applied "
            "to the second; rows with the same corpus twice are in-sample.")


def calibration(res: dict) -> None:
    rows = []
    for corpus, calibs in res["calibration"].items():
        if corpus.endswith("-tel"):
            continue
        for f, c in enumerate(calibs):
            tr = c["trials"]
            idents = [_point(c["identify"][rule][r]) for rule in RULE_NAMES for r in RATES]
            rows.append([corpus, f + 1, tr["gallery"], tr["cohort"],
                         f"{tr['genuine']} / {tr['impostor_pairs']} / {tr['unknown_probes']}",
                         _point(c["verify"]), *idents])
    table("Calibration, as `voicebank calibrate` does it (cosine; bank = one half, 5 recordings each)",
          ["corpus", "fold", "speakers", "cohort", "trials: genuine / impostor pairs / unknown",
           "verify FAR 1%", *[f"identify {pct(float(r))} ({rule})" for rule in RULE_NAMES for r in RATES]], rows,
          "Identification thresholds are on each rule's statistic (margin: 2 x best - second best cosine; best: the "
          "best cosine), so the two are not on one scale. -tel: calibrated in the telephone channel (the enrollments "
          "through voicebank's simulated line); -tel-before: the wideband calibration, as before channels.")


def verification(res: dict) -> None:
    rows = []
    for corpus, h in res["held_out"].items():
        v, e = h["summed"]["verify"], h["eer"]
        promised = v.get("promised") or 0.01 * v["pairs"]
        rows.append([corpus, f"{pct(e['eer'])} ({e['target']} / {e['nontarget']})",
                     thr([m["verify"]["threshold"] for m in h["folds"] if "verify" in m]),
                     pct(promised / v["pairs"]) if v["pairs"] else "-",
                     frac(v["false_accepts"], v["pairs"]), times(v["false_accepts"] / promised if v["pairs"] else None),
                     frac(v["false_rejects"], v["genuine"])])
    table("Verification on held-out people (genuine: own voiceprint; impostor: every unknown person x every "
          "voiceprint)", ["corpus", "EER (genuine / impostor trials)", "threshold per fold", "promised FAR",
                          "measured FAR", "measured / promised", "FRR"], rows)


def identification(res: dict) -> None:
    rows = []
    for corpus, h in res["held_out"].items():
        s = h["summed"]
        for rate in RATES:
            r = float(rate)
            by_rule = {rule: s["identify"][rule][rate] for rule in RULE_NAMES}
            refused = [rule for rule, i in by_rule.items() if not i["folds"]]
            if len(refused) == len(by_rule) and len({by_rule[x]["refused"][0] for x in refused}) == 1:
                rows.append([corpus, " and ".join(refused), pct(r), "-",
                             "refused: " + _refusal(by_rule[refused[0]]["refused"][0]), *["-"] * 5])
                continue
            for rule, i in by_rule.items():
                if not i["folds"]:
                    rows.append([corpus, rule, pct(r), "-", "refused: " + _refusal(i["refused"][0]), *["-"] * 5])
                    continue
                note = f" ({len(i['refused'])} fold refused)" if i["refused"] else ""
                promised = i.get("promised") or r * i["unknown"]
                asked = "" if promised <= r * i["unknown"] * 1.0001 else f" (asked {pct(r)}; the trials support no less)"
                rows.append([corpus, rule, pct(promised / i["unknown"]) + asked + note,
                             f"{promised:.1f}/{i['unknown']}", frac(i["false_alarms"], i["unknown"]),
                             times(i["false_alarms"] / promised), frac(i["correct"], i["genuine"]),
                             frac(i["misidentified"], i["genuine"]), frac(i["oracle_correct"], i["genuine"]),
                             frac(s["closed_top1"], s["genuine"])])
    table("Open-set identification on held-out people (bank of one half; unknown = the other half + strangers)",
          ["corpus", "rule", "promised FA", "promised count", "measured FA", "measured / promised", "correct ID",
           "misidentified", "oracle correct ID", "closed-set top-1"], rows,
          "rule: margin = 2 x best - second best cosine (new banks), best = the best cosine (banks migrated from "
          "before the margin rule); each calibrated on its own statistic and measured with it (decide). The "
          "candidate is the cosine top-1 under both, so closed-set top-1 is the same. promised count: target x "
          "unknown probes. oracle: the most correct identifications any single threshold on the same statistic "
          "gives with no more measured false alarms than the calibrated one (same scores).")


def groups(res: dict) -> None:
    rows = []
    for corpus, h in res["held_out"].items():
        for g, c in h["groups"].items():
            rows.append([corpus, g, frac(c["rejected"], c["genuine_verify"]) if c["genuine_verify"] else "-",
                         frac(c["false_accepts"], c["pairs"]) if c["pairs"] else "-"])
    table("Where the verification errors fall (calibrated threshold, both folds)",
          ["corpus", "group", "FRR (verify)", "FAR (verify)"], rows)
    rows = []
    for corpus, h in res["held_out"].items():
        for g, c in h["groups"].items():
            for rule in RULE_NAMES:
                cell = lambda k, n: frac(c[k], c[n]) if c[n] else "-"  # noqa: E731
                rows.append([corpus, g, rule, *[cell(f"correct_{rule}_{r}", f"genuine_{rule}_{r}") for r in RATES],
                             *[cell(f"fa_{rule}_{r}", f"unknown_{rule}_{r}") for r in RATES]])
    table("Where the identification errors fall (calibrated thresholds, both folds)",
          ["corpus", "group", "rule", "correct ID @1%", "correct ID @5%", "unknown FA @1%", "unknown FA @5%"], rows,
          "'-': the target was refused (ThinDataError) in both folds, or the group has no such probes.")


RATES = ("0.01", "0.05")
RULE_NAMES = ("margin", "best")  # protocol.RULES


def scores(res: dict) -> None:
    for corpus, methods in res["scores"].items():
        rows = []
        for name, m in methods.items():
            cells = []
            for target in ("0.01", "0.001"):
                r = m[target]
                if r.get("n/a"):
                    cells.append(f"n/a ({m['unknown']} unknown trials; needs {r['needs']})")
                    continue
                paired = "" if name == "cosine" else f" [+{r['gained_vs_cosine']}/-{r['lost_vs_cosine']}]"
                cells.append(frac(r["correct"], m["genuine"]) + paired)
            rows.append([name, *cells, frac(m["closed_top1"], m["genuine"]), pct(m.get("eer"))])
        first = next(iter(methods.values()))
        table(f"Open-set scores compared: {corpus} ({first['genuine']} genuine, {first['unknown']} unknown probes; "
              "oracle threshold)", ["score", "correct ID @1% FA", "correct ID @0.1% FA", "closed-set top-1",
                                    "verification EER"], rows,
              "[+a/-b]: genuine probes this score identifies that cosine misses / that cosine identifies and it "
              "misses.\ncosine: the product's best rule (migrated banks); margin rule 2 s1 - s2: the product's "
              "margin rule (new banks), by decide; margin s1-s2: the bare margin. Candidate = cosine top-1 for all "
              "three.")


def winner(res: dict) -> None:
    w = res["winner"]
    corpora = w["corpora"]
    rows = [[name, *[pct(w["rates"][name].get(c)) for c in corpora], pct(w["mean"].get(name))]
            for name in w["rates"]]
    table("Correct identification at 1% unknown false alarms (oracle), all corpora",
          ["score", *corpora, "mean (all corpora)"], rows, w["verdict"])


def _point(p: dict) -> str:
    return f"{p['threshold']:.3f}" if "threshold" in p else "refused: " + _refusal(p["refused"])


def _refusal(message: str) -> str:
    """'needs at least 200 ...; there are 85' -> '85 < 200 trials'."""
    import re

    m = re.search(r"needs at least (\d+) ([a-z -]+?) trials; there are (\d+)", message)
    return f"{m.group(3)} < {m.group(1)} {m.group(2)} trials" if m else _short(message)


def _short(text: str, n: int = 90) -> str:
    text = text.replace("|", "/")
    return text if len(text) <= n else text[: n - 3] + "..."
