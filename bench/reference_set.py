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


def build(corpora: list[data.Corpus], embedder) -> Reference:
    """The reference set of ``corpora`` (their recordings in manifest order), embedded by ``embedder``."""
    from voicebank.audio import AudioLimits
    from voicebank.channel import TELEPHONE, WIDEBAND
    from voicebank.embedding import DEFAULT_WINDOW_SECONDS
    from voicebank.encoding import Encoder, both_channels

    encoder = Encoder(embedder, embedder.model_id, embedder.source, embedder.dimension, AudioLimits(),
                      DEFAULT_WINDOW_SECONDS)
    wide, tel, speakers, names, skipped = [], [], [], [], 0
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
                speakers.append(people.setdefault(f"{corpus.name}/{corpus.speakers[item.index]}", len(people)))
                names.append(corpus.name)
        print(f"  {corpus.name}: {len(corpus.paths)} recordings in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    if skipped:
        print(f"  left out {skipped} recordings (unusable, or not wideband)", file=sys.stderr)
    return Reference(embedder.model_id, {WIDEBAND: np.stack(wide), TELEPHONE: np.stack(tel)},
                     np.array(speakers), np.array(names))


def cached(corpus: data.Corpus, embedder, cache: Path) -> Reference:
    """The reference set of one corpus, kept in ``cache`` (bench/reference.py builds one per corpus)."""
    from voicebank.reference import load

    path = data.cache_path(cache, corpus.name, "reference", embedder.model_id)
    if path.is_file():
        return load(path)
    reference = build([corpus], embedder)
    reference.save(path)
    return load(path)  # as the product reads it: float16 on disk


def merge(parts: list[Reference]) -> Reference:
    """One reference set of several (each person keeps a number of their own)."""
    offset, speakers = 0, []
    for part in parts:
        speakers.append(part.speakers + offset)
        offset += int(part.speakers.max()) + 1
    return Reference(parts[0].model_id, {c: np.concatenate([p.embeddings[c] for p in parts]) for c in parts[0].embeddings},
                     np.concatenate(speakers), np.concatenate([p.corpora for p in parts]))


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
