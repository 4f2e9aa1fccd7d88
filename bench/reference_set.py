"""Build the reference set voicebank ships for a model: embeddings of people who will never be
enrolled, in every channel, from the speech in ../shared/data whose licences allow it.

Each recording goes through the product's own path (``audio.load``: decoding, speech detection,
the channel measured) and is embedded as enrollment embeds it (``encoding.both_channels``: as it
came, and through the simulated telephone channel). Only embeddings are written, as float16, with
which person and which corpus each row is; ``voicebank/references/NOTICE.md`` names the sources.

    python bench/reference_set.py                        # resemblyzer, both corpora
    python bench/reference_set.py --model DIR --out voicebank/references/NAME.npz

bench/reference.py measures what a promise made with a reference set holds on strangers, with the
set built from one corpus and the strangers taken from the other.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")  # pkg_resources deprecation from webrtcvad (via resemblyzer)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_data as data  # noqa: E402
from voicebank.reference import Reference  # noqa: E402


WINDOWS_PER_RECORDING = 3


def window_spans(audio) -> list[tuple[int, int]]:
    """Up to ``WINDOWS_PER_RECORDING`` of the windows (start, end sample) `voicebank scan` would cut
    from ``audio`` with its defaults (speech regions, windows of ``scan.DEFAULT_WINDOW`` seconds),
    spread over the recording."""
    from voicebank import scan

    rate = audio.sample_rate
    size, step = round(scan.DEFAULT_WINDOW * rate), round(scan.DEFAULT_WINDOW * scan.DEFAULT_HOP_FRACTION * rate)
    regions = scan.speech_regions(audio.speech_frames, len(audio.samples), rate, round(scan.MIN_PAUSE * rate),
                                  round(scan.MIN_SPEECH * rate))
    spans = [(a + s, a + s + min(size, b - a)) for a, b in regions for s in scan.window_starts(b - a, size, step)]
    if not spans:
        return []
    keep = np.linspace(0, len(spans) - 1, min(len(spans), WINDOWS_PER_RECORDING)).round().astype(int)
    return [spans[k] for k in sorted(set(keep.tolist()))]


def build(corpora: list[data.Corpus], embedder) -> Reference:
    """The reference set of ``corpora`` (their recordings in manifest order), embedded by ``embedder``:
    each recording whole, and the windows `voicebank scan` would cut from it, in both channels (a
    call's windows cut from the whole recording through the simulated line, as scan cuts them)."""
    from voicebank.audio import AudioLimits
    from voicebank.channel import TELEPHONE, WIDEBAND, telephone
    from voicebank.embedding import DEFAULT_WINDOW_SECONDS
    from voicebank.encoding import Encoder, both_channels

    encoder = Encoder(embedder, embedder.model_id, embedder.source, embedder.dimension, AudioLimits(),
                      DEFAULT_WINDOW_SECONDS)
    wide, tel, speakers, names, skipped = [], [], [], [], 0
    cuts: dict[str, list] = {WIDEBAND: [], TELEPHONE: []}
    cut_speakers: list[int] = []
    people: dict[str, int] = {}
    for corpus in corpora:
        start = time.perf_counter()
        with encoder.stream([str(p) for p in corpus.paths], both_channels) as stream:
            for item in stream:
                if item.error is not None or item.audio.telephone:  # only wideband recordings have both views
                    skipped += 1
                    continue
                wide.append(item.views[0])
                tel.append(item.views[1])
                person = people.setdefault(f"{corpus.name}/{corpus.speakers[item.index]}", len(people))
                speakers.append(person)
                names.append(corpus.name)
                line = telephone(item.audio.samples, item.audio.sample_rate)
                for a, b in window_spans(item.audio):
                    cuts[WIDEBAND].append(item.audio.samples[a:b])
                    cuts[TELEPHONE].append(line[a:b])
                    cut_speakers.append(person)
        print(f"  {corpus.name}: {len(corpus.paths)} recordings in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    if skipped:
        print(f"  left out {skipped} recordings (unusable, or not wideband)", file=sys.stderr)
    window_rows = {c: encoder.embed_samples(w) for c, w in cuts.items()}
    return Reference(embedder.model_id, {WIDEBAND: np.stack(wide), TELEPHONE: np.stack(tel)},
                     np.array(speakers), np.array(names), window_rows, np.array(cut_speakers))


def cached(corpus: data.Corpus, embedder, cache: Path) -> Reference:
    """The reference set of one corpus, kept in ``cache`` (bench/quality.py measures each corpus
    with the reference set of the others)."""
    from voicebank.reference import load

    path = data.cache_path(cache, corpus.name, "reference", embedder.model_id)
    if path.is_file():
        found = load(path)
        if found.windows:  # made before reference sets held scan windows: made again
            return found
    reference = build([corpus], embedder)
    reference.save(path)
    return load(path)  # as the product reads it: float16 on disk


def merge(parts: list[Reference]) -> Reference:
    """One reference set of several (each person keeps a number of their own)."""
    offset, speakers, window_speakers = 0, [], []
    for part in parts:
        speakers.append(part.speakers + offset)
        window_speakers.append(part.window_speakers + offset)
        offset += int(part.speakers.max()) + 1
    join = lambda field: {c: np.concatenate([getattr(p, field)[c] for p in parts]) for c in getattr(parts[0], field)}  # noqa: E731
    return Reference(parts[0].model_id, join("embeddings"), np.concatenate(speakers),
                     np.concatenate([p.corpora for p in parts]), join("windows"), np.concatenate(window_speakers))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--model", default="resemblyzer", help="the model to embed with (default: resemblyzer)")
    p.add_argument("--out", type=Path, default=ROOT / "voicebank" / "references" / "resemblyzer.npz")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "quality-cache",
                   help="where each corpus's part is kept (bench/reference.py reads them too)")
    p.add_argument("--corpus", action="append", choices=sorted(data.CORPORA),
                   help="a corpus to take (repeatable); default: every corpus present")
    args = p.parse_args()
    from voicebank.embedding import load_embedder

    corpora = [c for c in (data.read_corpus(n, args.data_root) for n in args.corpus or data.CORPORA) if c]
    if not corpora:
        sys.exit(f"no corpus found under {args.data_root}")
    embedder = load_embedder(args.model)
    reference = merge([cached(c, embedder, args.cache) for c in corpora])
    reference.save(args.out)
    print(f"wrote {args.out}: {len(reference)} recordings of {reference.people()} people, "
          f"{args.out.stat().st_size / 1e6:.2f} MB ({reference.model_id})")


if __name__ == "__main__":
    main()
