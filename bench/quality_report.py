"""bench/quality.py's tables: plain aligned text, or Markdown (``--markdown``) to paste into the README.

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
    table("Embeddings (embed_recordings, each recording once per channel; cached)",
          ["corpus", "channel", "recordings", "embedded now", "embed s", "x real time"], rows,
          "tel = 8 kHz, 8-bit mu-law, back to 16 kHz (probes only). Cached embeddings are read, not recomputed.")


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
        ["genuine enrollments (3 recordings) refused as inconsistent"]
        + [frac(e["genuine_refused"], e["enrollments"]) for e in checks],
        ["one of the 3 replaced by another speaker's: caught"]
        + [frac(e["intruder_caught"], e["intruder_variants"]) for e in checks],
        ["... and the message names the intruder"]
        + [frac(e["intruder_named"], e["intruder_variants"]) for e in checks],
        ["one of the 3 through the telephone channel: refused"]
        + [frac(e["phone_refused"], e["phone_variants"]) for e in checks],
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


def calibration(res: dict) -> None:
    rows = []
    for corpus, calibs in res["calibration"].items():
        if corpus.endswith("-tel"):
            continue
        for f, c in enumerate(calibs):
            tr = c["trials"]
            idents = [_point(c["identify"][r]) for r in sorted(c["identify"])]
            rows.append([corpus, f + 1, tr["gallery"], tr["cohort"],
                         f"{tr['genuine']} / {tr['impostor_pairs']} / {tr['unknown_probes']}",
                         _point(c["verify"]), *idents])
    table("Calibration, as `voicebank calibrate` does it (cosine; bank = one half, 5 recordings each)",
          ["corpus", "fold", "speakers", "cohort", "trials: genuine / impostor pairs / unknown",
           "verify FAR 1%", "identify 1%", "identify 5%"], rows,
          "The -tel corpora use the same (wideband) calibration. 'refused': ThinDataError, the product's answer.")


def verification(res: dict) -> None:
    rows = []
    for corpus, h in res["held_out"].items():
        v, e = h["summed"]["verify"], h["eer"]
        far = v["false_accepts"] / v["pairs"] if v["pairs"] else None
        rows.append([corpus, f"{pct(e['eer'])} ({e['target']} / {e['nontarget']})",
                     thr([m["verify"]["threshold"] for m in h["folds"] if "verify" in m]), "1%",
                     frac(v["false_accepts"], v["pairs"]), times(far / 0.01 if far is not None else None),
                     frac(v["false_rejects"], v["genuine"])])
    table("Verification on held-out people (genuine: own voiceprint; impostor: every unknown person x every "
          "voiceprint)", ["corpus", "EER (genuine / impostor trials)", "threshold per fold", "promised FAR",
                          "measured FAR", "measured / promised", "FRR"], rows)


def identification(res: dict) -> None:
    rows = []
    for corpus, h in res["held_out"].items():
        s = h["summed"]
        for rate, i in s["identify"].items():
            r = float(rate)
            if not i["folds"]:
                rows.append([corpus, pct(r), "refused: " + _refusal(i["refused"][0]), "-", "-", "-", "-", "-"])
                continue
            fa = i["false_alarms"] / i["unknown"]
            note = f" ({len(i['refused'])} fold refused)" if i["refused"] else ""
            rows.append([corpus, pct(r) + note, frac(i["false_alarms"], i["unknown"]), times(fa / r),
                         frac(i["correct"], i["genuine"]), frac(i["misidentified"], i["genuine"]),
                         frac(i["oracle_correct"], i["genuine"]), frac(s["closed_top1"], s["genuine"])])
    table("Open-set identification on held-out people (bank of one half; unknown = the other half + strangers)",
          ["corpus", "promised FA", "measured FA", "measured / promised", "correct ID", "misidentified",
           "oracle correct ID", "closed-set top-1"], rows,
          "oracle: the most correct identifications any single threshold gives with no more measured false "
          "alarms than the calibrated one (same scores).")


def groups(res: dict) -> None:
    rows = []
    for corpus, h in res["held_out"].items():
        for g, c in h["groups"].items():
            rows.append([corpus, g, frac(c["rejected"], c["genuine_verify"]) if c["genuine_verify"] else "-",
                         frac(c["false_accepts"], c["pairs"]) if c["pairs"] else "-",
                         *[frac(c[f"correct_{r}"], c[f"genuine_{r}"]) if c[f"genuine_{r}"] else "-" for r in RATES],
                         *[frac(c[f"fa_{r}"], c[f"unknown_{r}"]) if c[f"unknown_{r}"] else "-" for r in RATES]])
    table("Where the errors fall (calibrated thresholds, both folds)",
          ["corpus", "group", "FRR (verify)", "FAR (verify)", "correct ID @1%", "correct ID @5%", "unknown FA @1%",
           "unknown FA @5%"], rows)


RATES = ("0.01", "0.05")


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
              "misses.\nmargin: candidate = cosine top-1, statistic s1 - s2 or s1 + (s1 - s2) = 2 s1 - s2.")


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
