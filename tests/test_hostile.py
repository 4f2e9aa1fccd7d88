"""Hostile names and metadata, through the Python API and the CLI, on SQLite and PostgreSQL.

Sensible input (any script, emoji, quotes, SQL, very long metadata) round-trips exactly; input past
the documented limits of ``voicebank/validate.py`` (names: 1-200 characters after trimming, no
control or invisible formatting characters, NFC; metadata: a JSON object of at most 16 KiB, values
at most 8 levels deep counting the top object) is refused with a clear one-line error. Neither can
change anything else: the other speakers and tables are compared row by row before and after.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata

import pytest
from click.testing import CliRunner, Result

from bank_worker import consistency_problems, table_rows
from conftest import TINY_THRESHOLD
from voicebank.cli import main
from voicebank.errors import DuplicateSpeakerError, InvalidInputError, SpeakerNotFoundError

# Hostile input is refused or kept by the bank's logic, whatever the model: the fake embedder (conftest).
pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]

SQL = [
    "'; DROP TABLE speakers; --",
    "Robert'); DELETE FROM utterances WHERE ('1'='1",
    "x' OR '1'='1",
    "1; UPDATE bank SET threshold = -1; --",
    '"; DROP TABLE "changes"; --',
]

ACCEPTED_NAMES = [
    "😀🎤 Zoë Ångström",
    "שלום עליכם",  # right-to-left
    "مريم العربية",
    "mixed עברית and English 123",
    "e\u0301le\u0300ve",  # combining marks: stored NFC-composed, as "élève"
    "Z\u0351\u0364a\u0313\u0300l\u0334g\u0315o",  # stacked combining marks that do not compose
    "ก\u0e34\u0e4a",  # Thai with stacked vowel and tone marks
    "名前テスト",
    "می\u200cخواهم",  # Persian: the zero-width non-joiner is part of the spelling
    "क्\u200dष",  # Devanagari: a joiner after the virama
    "👩\u200d💻 Priya",  # an emoji ZWJ sequence
    "👩🏽\u200d🚒 and ❤\ufe0f\u200d🔥",  # with a skin tone, and after VS16
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland",  # a tag-sequence flag
    "O'Brien",
    'say "hi"',
    "back\\slash and `ticks`",
    "%",
    "a%b_c*",
    "NULL",
    "<script>alert(1)</script>",
    "${jndi:ldap://x} {{7*7}}",
    "  padded name  ",  # trimmed
    "a" * 200,
    "😀" * 200,
    "e\u0301" * 200,  # 400 code points, 200 characters once composed
    *SQL,
]

REFUSED_NAMES = [
    ("", "must not be empty"),
    ("  \t ", "must not be empty"),
    ("a" * 201, "at most 200 characters; this one has 201"),
    ("x" * 10_000, "at most 200 characters; this one has 10000"),
    ("😀" * 201, "at most 200 characters"),
    ("e\u0301" * 201, "at most 200 characters; this one has 201"),
    ("a\x00b", "control"),
    ("line\nbreak", "control"),
    ("carriage\rreturn", "control"),
    ("tab\tname", "control"),
    ("\x1b[31mred\x1b[0m", "control"),
    ("del\x7fete", "control"),
    ("next\u0085line", "control"),
    ("zero\u200bwidth", "invisible formatting"),
    ("al\u200dice", "invisible formatting"),  # a joiner between ASCII letters only hides a look-alike
    ("al\u200cice", "invisible formatting"),
    ("\u200dمريم", "invisible formatting"),  # a joiner must stand between two characters
    ("مريم\u200c", "invisible formatting"),
    ("مر\u200c\u200cيم", "invisible formatting"),
    ("ab\u200d ج", "invisible formatting"),  # ... two visible ones
    ("Jos\u200dé", "invisible formatting"),  # a joiner that changes nothing visible: a look-alike of José
    ("И\u200dван", "invisible formatting"),
    ("مر\u200dيم", "invisible formatting"),  # Arabic letters take the non-joiner, not the joiner
    ("😀\u200cx", "invisible formatting"),
    ("\U000e0067\U000e0062\U000e007f", "invisible formatting"),  # tag characters outside a flag
    ("a\U000e0067\U000e007f", "invisible formatting"),
    ("\u202eevil.exe", "invisible formatting"),  # right-to-left override: a spoofing classic
    ("iso\u2066late", "invisible formatting"),
    ("\ufeffbom", "invisible formatting"),
    ("lone\ud800surrogate", "control or invisible"),
    ("\ufdfa" * 60, "its look-alike form"),  # 1080 characters spelled out: past the column
    ("\u3300" * 200, "its look-alike form"),  # 1000 characters, 2800 bytes spelled out: past PostgreSQL's index
    ("'; DROP TABLE speakers; --\x00", "control"),
    (123, "must be text"),
    (None, "must be text"),
    (b"bytes", "must be text"),
    (["a", "list"], "must be text"),
]


def nested(levels: int, leaf=1) -> dict:
    """A dict whose leaf value sits at ``levels`` counting the top object as 1."""
    value = leaf
    for _ in range(levels - 1):
        value = {"k": value}
    return value


ACCEPTED_METADATA = [
    {"emoji 😀": "🎤🎧", "rtl": "שלום עליכם", "combining (kept as given)": "e\u0301", "cjk": "名前"},
    {"sql": SQL[0], SQL[1]: SQL[2], "nested": {"q": SQL[3], "list": SQL}},
    {"quotes": "\"'`\\", "json in a string": '{"a": [1, 2]}', "braces": "}{]["},
    {"controls in values": "\x00\x01\n\r\t\x1b[31m\x7f\u0085\u200b\u202e"},
    {"long value": "x" * 10_000},
    {"k" * 10_000: "a 10,000-character key"},
    {"numbers": [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 1.5, 1e308, 5e-324, -0.0], "flags": [True, False, None]},
    {"": "", "empty": {}, "list": [], "deep list": [[[[[["x"]]]]]]},
    {"__proto__": {"polluted": True}, "$where": "1 == 1", "constructor": None},
    nested(8),  # the leaf at level 8: the deepest allowed
    {"k": "x" * (16 * 1024 - 9)},  # exactly 16 KiB as JSON
]

REFUSED_METADATA = [
    (nested(9), "nested more than 8 levels deep"),
    (nested(50), "nested more than 8 levels deep"),
    ({"deep": nested(100_000)}, "nested more than 8 levels deep"),
    ({"k": "x" * (16 * 1024 - 8)}, "at most 16 KiB as JSON; this is 16385 bytes"),
    ({"big": "x" * 1_000_000}, "at most 16 KiB"),
    ({"emoji": "😀" * 5_000}, "at most 16 KiB"),
    ({"wide": list(range(300_000))}, "at most 16 KiB"),
    ({f"key{i}": i for i in range(100_000)}, "at most 16 KiB"),
    ({"nan": math.nan}, "finite"),
    ({"inf": [1, math.inf]}, "finite"),
    ({1: "x"}, "keys must be text"),
    ({"inner": {(1, 2): "x"}}, "keys must be text"),
    ({"set": {1, 2}}, "plain JSON"),
    ({"bytes": b"\x00"}, "plain JSON"),
    ({"object": object()}, "plain JSON"),
    ("a string", "must be a mapping"),
    ([("k", "v")], "must be a mapping"),
]


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name.strip())


def recording_paths(voices, who: str) -> list:
    return list(voices[who][:2])


@pytest.fixture
def bank(db_url, model, voices):
    """A bank holding alice and bob (with metadata), over SQLite or PostgreSQL."""
    from voicebank import VoiceBank

    with VoiceBank.open(db_url, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as opened:
        opened.enroll("alice", recording_paths(voices, "alice"), metadata={"team": "A", "n": 1})
        opened.enroll("bob", recording_paths(voices, "bob"), metadata={"team": "B"})
        opened.db_url = db_url
        yield opened


NOT_OURS = ("changes", "bank", "audit")  # what enrolling and removing a speaker legitimately changes


def others(url: str) -> dict:
    return table_rows(url, skip=NOT_OURS)


# -- the Python API ---------------------------------------------------------------------------------
def test_hostile_names_round_trip_exactly(bank, voices):
    url = bank.db_url
    before, threshold = others(url), bank.thresholds.verify
    for given in ACCEPTED_NAMES:
        expected = nfc(given)
        speaker = bank.enroll(given, recording_paths(voices, "dave"), metadata={"given": given})
        assert speaker.name == expected, (given, speaker.name)
        assert bank.speaker(given).name == expected
        assert bank.speaker(expected).metadata == {"given": given}  # metadata is kept exactly as given
        assert [s.name for s in bank.speakers()].count(expected) == 1
        verdict = bank.verify(given, voices["dave"][2])
        assert verdict.accepted and verdict.name == expected, (given, verdict)
        stored = {row[1] for row in table_rows(url)["speakers"]}
        assert stored == {"alice", "bob", expected}, (given, stored)
        bank.remove(given)
        with pytest.raises(SpeakerNotFoundError):
            bank.speaker(expected)
    assert others(url) == before
    assert bank.thresholds.verify == threshold
    assert consistency_problems(url) == []
    assert bank.index.check().ok


def test_an_sql_fragment_name_is_identified_by_its_exact_name(bank, voices):
    before = others(bank.db_url)
    name = SQL[0]
    bank.enroll(name, recording_paths(voices, "stranger"))
    found = bank.identify(voices["stranger"][2])
    assert found.match is not None and found.match.name == name
    assert bank.identify(voices["alice"][2]).match.name == "alice"
    assert sorted(s.name for s in bank.speakers()) == sorted(["alice", "bob", name])
    bank.remove(name)
    assert others(bank.db_url) == before


def test_names_that_normalize_to_an_enrolled_name_are_duplicates(bank, voices):
    bank.enroll("élève", recording_paths(voices, "dave"))
    before = table_rows(bank.db_url)
    for variant in ("e\u0301le\u0300ve", "  élève ", "élève\t"):
        with pytest.raises(DuplicateSpeakerError, match="already enrolled"):
            bank.enroll(variant, recording_paths(voices, "carol"))
        assert bank.speaker(variant).name == "élève"
    assert table_rows(bank.db_url) == before


def test_refused_names_change_nothing(bank, voices):
    before = table_rows(bank.db_url)
    for given, words in REFUSED_NAMES:
        actions = {
            "enroll": lambda: bank.enroll(given, recording_paths(voices, "dave")),
            "add_recordings": lambda: bank.add_recordings(given, [voices["dave"][2]]),
            "verify": lambda: bank.verify(given, voices["alice"][2]),
            "speaker": lambda: bank.speaker(given),
            "remove": lambda: bank.remove(given),
        }
        for action, call in actions.items():
            with pytest.raises(InvalidInputError) as caught:
                call()
            message = str(caught.value)
            assert words in message, (repr(given)[:60], action, message)
            assert "\n" not in message and len(message) < 300, (action, message)
    assert table_rows(bank.db_url) == before


def test_a_name_long_once_spelled_out_is_refused_alike_on_every_database(bank, voices):
    """A name is also stored in its look-alike form (voicebank/confusable.py), where U+FDFA, one
    character, is 18: 60 of them were stored on SQLite and failed on PostgreSQL ("cannot use the
    database"). Now both refuse the name, naming the limit; a name just within it is enrolled by both."""
    before = table_rows(bank.db_url)
    with pytest.raises(InvalidInputError) as caught:
        bank.enroll("\ufdfa" * 60, recording_paths(voices, "dave"))
    assert str(caught.value) == (
        "a speaker name is also stored in its look-alike form, which spells out compatibility characters (\ufdfa is "
        "18 letters); that form may be at most 1024 characters and 2048 bytes, and this name's is 1080 characters "
        "(1800 bytes): give a shorter name.")
    assert table_rows(bank.db_url) == before
    for within in ("\ufdfa" * 56, "\u3300" * 146):  # 1008 characters; 2044 bytes
        assert bank.enroll(within, recording_paths(voices, "dave")).name == within
        assert bank.speaker(within).name == within
        bank.remove(within)


# Names that show as nothing, or hide something that does: refused for a new speaker
BLANK_NAMES = [
    ("bob\u3164", "U+3164"),  # a Hangul filler after it: "bob" on screen
    ("b\u034fob", "U+034F"),  # a combining grapheme joiner inside it
    ("bob\ufe00", "U+FE00"),  # a variation selector outside an emoji
    ("\u3164\u3164", "U+3164"),
    ("\u2800\u2800", "looks blank"),  # Braille cells with no dots
    ("\u2800 \u2800", "looks blank"),
    ("\u2800bob", "U+2800 (BRAILLE PATTERN BLANK)"),  # " bob" on screen
    ("b\u2009ob", "U+2009 (THIN SPACE)"),
    ("b\u200aob", "U+200A (HAIR SPACE)"),
    ("b\u202fob", "U+202F (NARROW NO-BREAK SPACE)"),
    ("bob\u3000smith", "U+3000 (IDEOGRAPHIC SPACE)"),
    ("bob\ue000", "U+E000 (private use)"),
    ("bob\U000f0000", "U+F0000 (private use)"),
    ("bob\ufdd0", "U+FDD0 (a noncharacter)"),
    ("bob\U0001fffe", "U+1FFFE (a noncharacter)"),
    ("bob\u0378", "U+0378 (unassigned)"),
    ("bob\ufffc", "U+FFFC (OBJECT REPLACEMENT CHARACTER)"),
    ("b\u2028ob", "U+2028 (LINE SEPARATOR)"),  # a line break in a list of names
    ("b\u2029ob", "U+2029 (PARAGRAPH SEPARATOR)"),
    ("bob\U0001d159", "U+1D159 (MUSICAL SYMBOL NULL NOTEHEAD)"),  # a symbol drawn empty
    ("b\U00016fe4ob", "U+16FE4 (KHITAN SMALL SCRIPT FILLER)"),
]


def test_names_that_show_as_nothing_are_refused_and_look_alikes_spelled_out_are_caught(bank, voices, monkeypatch):
    from voicebank import validate

    before = table_rows(bank.db_url)
    for given, words in BLANK_NAMES:
        with pytest.raises(InvalidInputError, match=re.escape(words)):
            bank.enroll(given, recording_paths(voices, "dave"))
    assert table_rows(bank.db_url) == before
    for fine in ("👍\ufe0f", "👩\u200d💻", "José", "...", "rn"):  # what scripts and emoji need stays allowed
        assert bank.enroll(fine, recording_paths(voices, "dave")).name == fine
        bank.remove(fine)
    bank.enroll("mary", recording_paths(voices, "dave"))
    with pytest.raises(DuplicateSpeakerError, match="'rnary' looks like the enrolled 'mary'"):
        bank.enroll("rnary", recording_paths(voices, "carol"))
    bank.remove("mary")
    # a name enrolled before these rules is still found, and can be removed
    monkeypatch.setattr(validate, "new_name", validate.name)
    for old in ("old\u3164", "old\u2009name\ue000"):
        bank.enroll(old, recording_paths(voices, "dave"))
        monkeypatch.undo()
        assert bank.speaker(old).name == old
        bank.remove(old)
        monkeypatch.setattr(validate, "new_name", validate.name)


UCD = "/usr/share/unicode/DerivedCoreProperties.txt"


@pytest.mark.skipif(not __import__("os").path.isfile(UCD), reason="Unicode's data files are not installed "
                                                                    "(apt-get install unicode-data)")
def test_the_invisible_characters_are_unicode_s_own():
    """voicebank's list of default-ignorable code points against Unicode's DerivedCoreProperties.txt."""
    import re

    from voicebank.confusable import DEFAULT_IGNORABLE

    unicode_s = set()
    with open(UCD, encoding="utf-8") as f:
        for line in f:
            found = re.match(r"([0-9A-F]+)(?:\.\.([0-9A-F]+))?\s*;\s*Default_Ignorable_Code_Point\b", line)
            if found:
                unicode_s.update(range(int(found[1], 16), int(found[2] or found[1], 16) + 1))
    ours = {c for lo, hi in DEFAULT_IGNORABLE for c in range(lo, hi + 1)}
    assert unicode_s, "no Default_Ignorable_Code_Point in " + UCD
    assert sorted(map(hex, unicode_s - ours)) == [] and sorted(map(hex, ours - unicode_s)) == []


def test_lookups_with_sql_fragments_change_nothing(bank, voices):
    before = table_rows(bank.db_url)
    for name in SQL + ["%", "_", "a*", "alice' --", "ALICE", "alice%"]:
        for call in (lambda: bank.speaker(name), lambda: bank.remove(name),
                     lambda: bank.add_recordings(name, [voices["dave"][2]]),
                     lambda: bank.verify(name, voices["alice"][2])):
            with pytest.raises(SpeakerNotFoundError) as caught:
                call()
            assert repr(name) in str(caught.value)
    assert table_rows(bank.db_url) == before
    assert bank.identify(voices["bob"][2]).match.name == "bob"


def test_hostile_metadata_round_trips_exactly(bank, voices, model):
    from voicebank import VoiceBank

    url = bank.db_url
    before = others(url)
    for i, metadata in enumerate(ACCEPTED_METADATA):
        name = f"meta-{i}"
        sent = json.dumps(metadata, sort_keys=True)
        speaker = bank.enroll(name, recording_paths(voices, "dave"), metadata=metadata)
        assert json.dumps(metadata, sort_keys=True) == sent, "enroll changed the caller's dict"
        assert speaker.metadata == metadata, name
        with VoiceBank.open(url, str(model)) as fresh:  # read back from SQL by another bank
            again = fresh.speaker(name).metadata
        assert again == metadata and json.dumps(again, sort_keys=True) == sent, name
        assert [s.metadata for s in bank.speakers() if s.name in ("alice", "bob")] == [{"team": "A", "n": 1}, {"team": "B"}]
        bank.remove(name)
    assert others(url) == before
    assert consistency_problems(url) == []


def test_refused_metadata_changes_nothing(bank, voices):
    before = table_rows(bank.db_url)
    for metadata, words in REFUSED_METADATA:
        with pytest.raises(InvalidInputError) as caught:
            bank.enroll("dave", recording_paths(voices, "dave"), metadata=metadata)
        message = str(caught.value)
        assert words in message, (repr(metadata)[:80], message)
        assert "\n" not in message and len(message) < 300, message
    assert table_rows(bank.db_url) == before
    assert len(bank) == 2


@pytest.mark.parametrize("metadata", [{"k": "lone \ud800 surrogate"}, {"\udcff": 1}, {"deep": ["\udfff"]}],
                         ids=["in-a-value", "in-a-key", "in-a-list"])
def test_metadata_with_a_lone_surrogate_is_refused_cleanly(db_path, model, voices, metadata):
    """Such strings cannot be stored as UTF-8. They come from Python callers, and from the CLI when
    an argument is not valid UTF-8 (Python decodes it with surrogateescape)."""
    from voicebank import VoiceBank

    with VoiceBank.open(db_path, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as opened:
        with pytest.raises(InvalidInputError, match="metadata"):
            opened.enroll("dave", recording_paths(voices, "dave"), metadata=metadata)
        assert len(opened) == 0


# -- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture
def cli(db_url, model, voices):
    """``cli(*args)`` runs ``voicebank --db <db_url> --model <tiny> *args`` on a bank holding alice and bob."""
    runner = CliRunner()

    def run(*args) -> Result:
        return runner.invoke(main, ["--db", db_url, "--model", str(model), *[str(a) for a in args]])

    run.db_url = db_url
    ok(run("init", "--threshold", TINY_THRESHOLD, "--identify-rule", "best"))
    ok(run("enroll", "alice", *recording_paths(voices, "alice"), "--meta", "team=A"))
    ok(run("enroll", "bob", *recording_paths(voices, "bob"), "--meta", "team=B"))
    return run


def ok(result: Result, code: int = 0) -> Result:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def refused(result: Result, *words: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr starting with ``Error: ``, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output[-500:], repr(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-500:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


CLI_NAMES = ["😀🎤 Zoë", "שלום עליכם", "e\u0301le\u0300ve", SQL[0], 'O\'Brien "the" `x`', "%", "😀" * 200]


def test_cli_hostile_names_and_metadata_round_trip(cli, voices):
    before = others(cli.db_url)
    for given in CLI_NAMES:
        expected = nfc(given)
        meta_value = f"{given} = {SQL[1]} \x1b[0m"
        enrolled = json.loads(ok(cli("enroll", given, *recording_paths(voices, "dave"), "--meta", f"note={meta_value}",
                                     "--meta", "😀=🎤", "--json")).stdout)
        assert enrolled["name"] == expected
        shown = json.loads(ok(cli("show", given, "--json")).stdout)
        assert shown["name"] == expected and shown["metadata"] == {"note": meta_value, "😀": "🎤"}
        assert f"name: {expected}" in ok(cli("show", expected)).stdout.splitlines()
        verdict = json.loads(ok(cli("verify", given, voices["dave"][2], "--json")).stdout)
        assert verdict["name"] == expected and verdict["accepted"] is True
        listed = [s["name"] for s in json.loads(ok(cli("list", "--json")).stdout)]
        assert sorted(listed) == sorted(["alice", "bob", expected])
        assert ok(cli("remove", given)).stdout == f"Removed {given}.\n"
    assert others(cli.db_url) == before


def test_cli_a_name_that_looks_like_an_option(cli, voices):
    before = others(cli.db_url)
    assert json.loads(ok(cli("enroll", "--json", "--", "--help", *recording_paths(voices, "dave"))).stdout)["name"] == "--help"
    assert json.loads(ok(cli("show", "--json", "--", "--help")).stdout)["name"] == "--help"
    ok(cli("remove", "--", "--help"))
    assert others(cli.db_url) == before


def test_cli_refuses_hostile_input_with_one_line_and_changes_nothing(cli, voices):
    before = table_rows(cli.db_url)
    dave = recording_paths(voices, "dave")
    for name, words in [("a" * 201, "at most 200"), ("x" * 10_000, "at most 200"), ("a\nb", "control"),
                        ("\x1b[31mred", "control"), ("zero\u200bwidth", "invisible"), ("\u202eevil", "invisible"),
                        ("   ", "empty"), ("\ufdfa" * 60, "1080 characters (1800 bytes)")]:
        refused(cli("enroll", name, *dave), words)
        refused(cli("show", name), words)
        refused(cli("verify", name, voices["alice"][2]), words)
        refused(cli("remove", name), words)
    for meta, words in [("big=" + "x" * 1_000_000, "at most 16 KiB"), ("k=" + "😀" * 5_000, "at most 16 KiB"),
                        ("k=" + "x" * 16_376, "this is 16385 bytes")]:
        refused(cli("enroll", "dave", *dave, "--meta", meta), words)
    for name in SQL:
        refused(cli("show", name), "no speaker named")
        refused(cli("remove", name), "no speaker named")
        refused(cli("verify", name, voices["alice"][2]), "no speaker named")
    refused(cli("enroll", "alice", *dave), "already enrolled")
    assert table_rows(cli.db_url) == before
    assert json.loads(ok(cli("identify", voices["alice"][2], "--json")).stdout)["match"]["name"] == "alice"


def test_cli_metadata_with_invalid_utf8_is_refused_cleanly(db_path, model, voices):
    """``voicebank enroll dave a.wav --meta note=$'\\xff'``: Python hands click the argument with a
    lone surrogate (surrogateescape); it must be a one-line error, not a traceback."""
    runner = CliRunner()
    base = ["--db", str(db_path), "--model", str(model)]
    ok(runner.invoke(main, [*base, "init", "--threshold", str(TINY_THRESHOLD), "--identify-rule", "best"]))
    result = runner.invoke(main, [*base, "enroll", "dave", *map(str, recording_paths(voices, "dave")),
                                  "--meta", "note=caf\udce9"])
    refused(result, "metadata")


@pytest.mark.parametrize("twin", ["\u0430lice", "ａlice", "aIice", "a1ice"])  # Cyrillic a, fullwidth a, I, 1 for l
def test_a_look_alike_of_an_enrolled_name_is_refused_naming_it(bank, voices, twin):
    before = others(bank.db_url)
    with pytest.raises(DuplicateSpeakerError) as refused:
        bank.enroll(twin, recording_paths(voices, "carol"))
    assert f"{twin!r} looks like the enrolled 'alice'" in str(refused.value)
    assert others(bank.db_url) == before
    bank.enroll("alicia", recording_paths(voices, "carol"))  # a different name is fine


ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e"  # clear screen, set title, C1 CSI, right-to-left override


def test_untrusted_text_cannot_drive_the_terminal(cli, voices, tmp_path):
    """A recording's file name becomes its label: stored escaped, and shown escaped by `show`,
    in `--json`, and in errors that quote it."""
    hostile = tmp_path / f"take{ESCAPES}.wav"
    hostile.write_bytes(voices["carol"][0].read_bytes())
    ok(cli("enroll", "carol", hostile, voices["carol"][1]))
    for args in (("show", "carol"), ("show", "carol", "--json"), ("list",), ("audit",)):
        out = ok(cli(*args)).stdout
        assert not any(ch in out for ch in "\x1b\x07\x9b\u202e"), (args, out)
    assert "take\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202e.wav" in ok(cli("show", "carol")).stdout
    line = refused(cli("identify", tmp_path / f"gone{ESCAPES}.wav"), "no such file")
    assert "gone\\x1b[2J" in line and "\x1b" not in line


def test_json_output_stays_json_and_untrusted_newlines_cannot_forge_lines(cli, voices, tmp_path):
    """Second adversarial pass: C1 controls, soft hyphens and tag characters in file names are
    escaped as JSON escapes in --json output; a newline in a file name cannot start a line."""
    odd = [tmp_path / "al\u00adice.wav", tmp_path / "x\U000e0041.wav", tmp_path / "y\x9b31m.wav",
           tmp_path / "x\nmatch: alice (score 1.0000).wav"]
    for path in odd:
        path.write_bytes(voices["bob"][2].read_bytes())
    lines = ok(cli("identify", *odd, "--json"), 0).stdout.splitlines()
    assert [json.loads(line)["file"] for line in lines] == [str(p) for p in odd]
    text = ok(cli("identify", *odd), 0).stdout.splitlines()
    assert len(text) == len(odd) and not any(line.startswith("match: alice") for line in text)


@pytest.mark.parametrize("name", ["\u0301\u0301", "ｂｏｂ"])  # combining marks alone; fullwidth bob next to bob
def test_names_that_render_as_nothing_or_as_another_are_refused(bank, voices, name):
    with pytest.raises((InvalidInputError, DuplicateSpeakerError)):
        bank.enroll(name, recording_paths(voices, "carol"))


@pytest.mark.parametrize("enrolled, twin", [("carol", "\u03f2arol"),  # Greek lunate sigma: NFKC makes it a final sigma
                                            ("fun", "\u017fun"),  # long s: NFKC makes it an s
                                            ("llama", "\u01c1ama"),  # U+01C1 looks like ll, whose l looks like 1
                                            ("allen", "a\u01c1en")])
def test_look_alikes_that_folding_or_spelling_out_would_hide_are_refused(bank, voices, enrolled, twin):
    bank.enroll(enrolled, recording_paths(voices, "carol"))
    before = others(bank.db_url)
    with pytest.raises(DuplicateSpeakerError, match=f"{twin!r} looks like the enrolled {enrolled!r}"):
        bank.enroll(twin, recording_paths(voices, "dave"))
    assert others(bank.db_url) == before


# Pairs of the confusables data that the skeleton tells apart, on purpose: each differs, once
# decomposed (NFD, UTS #39's first step too), in a mark the data does not call confusable on its own
# (dot above and ring above, double acute and diaeresis, Hebrew points). Giving both one skeleton
# would join those marks in every name (ś with ş, ö with ő), refusing names that read differently.
TOLD_APART = {("O'", "\u01a0"), ("l\u0674", "\u0623"), ("o'", "\u01a1"), ("\xc5", "\u0226"), ("\xd6", "\u0150"),
              ("\xe5", "\u0227"), ("\u0123", "\u01f5"), ("\u040d", "\u0419"), ("\u0439", "\u045d"),
              ("\u0624", "\u0648\u0674"), ("\u0626", "\u0649\u0674"), ("\u13ef", "\u1ff6"), ("\u1e9a", "\u1ea3"),
              ("\u1f7d", "\u1ff4"), ("\ufb1d", "\ufb39"), ("\ufb2a", "\ufb49"), ("\ufb2e", "\ufb2f"),
              ("\ufb2e", "\ufb30")}


def test_every_pair_in_the_confusables_data_has_one_skeleton():
    from voicebank.confusable import pairs, skeleton

    apart = {tuple(sorted((a, b))) for a, b in pairs() if skeleton(a) != skeleton(b)}
    assert apart == TOLD_APART
    assert all(skeleton(skeleton(text)) == skeleton(text) for pair in pairs() for text in pair)  # a fixpoint
    assert skeleton("sun") != skeleton("fun") and skeleton("rob") != skeleton("bob")  # not everything alike


def test_cli_text_files_it_is_named_are_read_within_bounds(cli, tmp_path, monkeypatch):
    """Trial lists (eval, calibrate --trials) and import manifests are read a line at a time:
    a device, a pipe, an endless line or a file past the limits is one `Error:` line, at once."""
    import os

    from voicebank import textfile

    fifo, long_line, big = tmp_path / "fifo", tmp_path / "one-line.txt", tmp_path / "big.txt"
    os.mkfifo(fifo)  # opening it for reading must not wait for a writer
    long_line.write_bytes(b"\0" * (textfile.MAX_LINE_BYTES + 10))
    big.write_text("1 alice x.wav\n" * 20)
    for command in (("eval",), ("calibrate", "--trials"), ("import",)):
        for device in ("/dev/zero", fifo):
            refused(cli(*command, device), "is not a regular file", "save it to a file")
        refused(cli(*command, long_line), "line 1 is longer than 64 KiB")
    monkeypatch.setattr(textfile, "MAX_LINES", 10)
    refused(cli("eval", big), "is larger than voicebank reads", "split it")
    monkeypatch.setattr(textfile, "MAX_LINES", 100)
    monkeypatch.setattr(textfile, "MAX_BYTES", 100)
    refused(cli("eval", big), "is larger than voicebank reads", "split it")
