"""The decode-ahead pipeline (voicebank/pipeline.py) with a fake decoder and a fake model: order,
errors, chunking, bounded look-ahead, overlap of decoding with embedding, and early close."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from voicebank.audio import Audio
from voicebank.errors import AudioError
from voicebank.pipeline import embed_stream

SR = 100  # samples per "second": chunk sizes below are in these units


def fake_load(seconds_of: dict[str, float], calls: list[str] | None = None, lock=threading.Lock()):
    def load(name) -> Audio:
        name = name if isinstance(name, str) else name.name  # a file object
        with lock:
            if calls is not None:
                calls.append(name)
        if name.startswith("bad"):
            raise AudioError(f"{name}: not a readable audio file.")
        n = int(seconds_of.get(name, 1.0) * SR)
        samples = np.full(n, float(len(name)), dtype=np.float32)
        return Audio(samples, SR, name * 2, name, n / SR)

    return load


def fake_embed(calls: list[int] | None = None):
    def embed(waves):
        if calls is not None:
            calls.append(len(waves))
        # a 2-dim "embedding" that says which waveform it came from: (its length, its value)
        return np.array([[len(w), w[0]] for w in waves], dtype=np.float32)

    return embed


def run(names, seconds_of=None, chunk_seconds=3.0, threads=2, embed_calls=None):
    return list(embed_stream(names, fake_load(seconds_of or {}), fake_embed(embed_calls), SR, chunk_seconds, threads))


def test_results_come_back_in_order_each_with_its_own_embedding():
    names = [f"r{'x' * i}" for i in range(25)]
    seconds = {n: 0.5 + (i % 4) for i, n in enumerate(names)}
    out = run(names, seconds)
    assert [e.index for e in out] == list(range(25))
    for name, e in zip(names, out):
        assert e.error is None and e.audio.label == name
        assert e.embedding.tolist() == [int(seconds[name] * SR), len(name)]


def test_unusable_recordings_come_back_as_errors_and_the_rest_are_embedded():
    out = run(["a", "bad1", "bb", "bad2", "ccc"])
    assert [type(e.error).__name__ if e.error else None for e in out] == [None, "AudioError", None, "AudioError", None]
    assert "bad1: not a readable audio file" in str(out[1].error)
    assert out[1].embedding is None and out[1].audio is None
    assert [e.embedding[1] for e in out if e.error is None] == [1, 2, 3]


def test_audio_is_gathered_into_chunks_before_the_model_sees_it():
    calls: list[int] = []
    run([f"n{i}" for i in range(10)], chunk_seconds=3.0, embed_calls=calls)  # 1 s each
    assert calls == [3, 3, 3, 1]
    calls.clear()
    run(["long", "a", "b"], {"long": 7.0}, chunk_seconds=3.0, embed_calls=calls)  # longer than a chunk: alone
    assert calls == [1, 2]


def test_nothing_at_all_and_only_errors():
    assert run([]) == []
    calls: list[int] = []
    out = run(["bad1", "bad2"], embed_calls=calls)
    assert [e.index for e in out] == [0, 1] and all(e.error for e in out) and calls == []


def test_decoding_runs_ahead_while_the_model_works_but_only_about_two_chunks_ahead():
    names = [f"n{i:02d}" for i in range(40)]  # 1 s each; chunks of 4 s
    loads: list[str] = []
    seen_ahead: list[int] = []  # at each call of the model: recordings decoded beyond the ones it is given
    embedded = [0]
    release = threading.Event()

    def embed(waves):
        if not seen_ahead:  # the first chunk: wait until the decoders have filled the look-ahead
            for _ in range(200):
                if len(loads) >= 4 + 4 + 1 + 2:
                    break
                release.wait(0.01)
        embedded[0] += len(waves)
        seen_ahead.append(len(loads) - embedded[0])
        return fake_embed()(waves)

    out = list(embed_stream(names, fake_load({}, loads), embed, SR, 4.0, threads=2))
    assert len(out) == 40
    # While the first chunk (4 recordings) was being embedded, the whole next chunk was decoded...
    assert seen_ahead[0] >= 4 + 2
    # ...but no more than two chunks of audio are held (the one at the model among them), plus one
    # waiting for room and those in the decoders' hands.
    assert max(seen_ahead) <= 4 + 1 + 2


def test_closing_early_stops_the_decoders():
    loads: list[str] = []
    stream = embed_stream((f"n{i}" for i in range(10_000)), fake_load({}, loads), fake_embed(), SR, 2.0, 2)
    first = next(stream)
    assert first.index == 0
    stream.close()
    done = len(loads)
    assert done < 50
    assert not [t for t in threading.enumerate() if t.name.startswith("voicebank-decode")]


def test_a_bug_in_decoding_is_raised_not_swallowed():
    def load(name):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        list(embed_stream(["a"], load, fake_embed(), SR, 1.0, 1))
    assert not [t for t in threading.enumerate() if t.name.startswith("voicebank-decode")]


def test_what_came_before_a_bug_is_still_answered_then_the_bug_is_raised():
    def load(name):
        if name == "bug":
            raise KeyError("a bug")
        return fake_load({})(name)

    got = []
    with pytest.raises(KeyError):
        for item in embed_stream(["a", "bad1", "bug", "b"], load, fake_embed(), SR, 100.0, 2):
            got.append(item)
    assert [(e.index, e.error is None) for e in got] == [(0, True), (1, False)]


def test_the_same_file_object_twice_is_an_error_for_the_second(tmp_path):
    import io

    handle = io.BytesIO(b"x")
    handle.name = "take.wav"
    out = run(["a", handle, "b", handle])
    assert [e.error is None for e in out] == [True, True, True, False]
    assert str(out[3].error) == ("take.wav: the same file object is given again (as recording 2, then 4); "
                                 "give each recording once.")


def test_an_error_of_the_model_is_raised():
    def embed(waves):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        list(embed_stream(["a", "b"], fake_load({}), embed, SR, 1.0, 2))


def test_admit_refuses_a_decoded_recording_in_the_callers_thread_before_it_is_embedded():
    caller, seen = threading.get_ident(), []

    def admit(audio: Audio) -> None:
        seen.append(threading.get_ident())
        if audio.label.startswith("taken"):
            raise AudioError(f"{audio.label} is already enrolled.")

    calls: list[int] = []
    names = ["a", "taken1", "bb"] + [f"n{i}" for i in range(40)]  # 1 s each: 14 chunks of 3 s
    out = list(embed_stream(names, fake_load({}), fake_embed(calls), SR, 3.0, 2, admit=admit))
    assert [str(e.error) if e.error else e.audio.label for e in out[:3]] == ["a", "taken1 is already enrolled.", "bb"]
    assert out[1].embedding is None and sum(calls) == len(names) - 1  # the refused one never reached the model
    assert set(seen) == {caller}  # a check that reads the database runs where the caller's reads do


def test_fail_fast_ends_at_the_first_unusable_recording_and_embeds_nothing_pending():
    calls: list[int] = []
    out = list(embed_stream(["a", "bb", "bad1", "ccc"], fake_load({}), fake_embed(calls), SR, 100.0, 2,
                            fail_fast=True))
    assert [e.index for e in out] == [2] and "bad1" in str(out[0].error)
    assert calls == []  # a and bb were decoded, waiting for their chunk: the model never saw them
