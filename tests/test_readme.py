"""The README stays short and true: at most 300 lines, every command and option it shows exists,
every command the CLI has is in it, its JSON examples have the fields the commands print, and its
links lead somewhere."""

from __future__ import annotations

import json
import re
import shlex

import click
import pytest

from conftest import REPO, TINY_THRESHOLD
from voicebank.cli import main

README = (REPO / "README.md").read_text(encoding="utf-8")
MAX_LINES = 300


def test_the_readme_is_at_most_300_lines():
    lines = README.count("\n") + (not README.endswith("\n"))
    assert lines <= MAX_LINES, f"README.md is {lines} lines; move depth to docs/ (the limit is {MAX_LINES})"


def shell_lines(text: str) -> list[str]:
    """The command lines of the README's ```bash blocks, comments cut."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line:
                lines.append(line)
    return lines


def options(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}


def resolve(argv: list[str]) -> tuple[click.Command, list[str]]:
    """The (sub)command ``voicebank argv`` runs, and the arguments left for it; an option
    unknown to a command on the way fails the test."""
    command, words = main, list(argv)
    while isinstance(command, click.Group):
        known = options(command) | {"-h": None, "--help": None}
        while words and words[0].startswith("-"):
            word = words.pop(0)
            name = word.split("=", 1)[0]
            assert name in known, f"voicebank {' '.join(argv)}: {name} is not an option of {command.name}"
            param = known[name]
            if param is not None and not param.is_flag and not param.count and "=" not in word:
                words.pop(0)
        if not words:
            return command, []
        name = words.pop(0)
        assert name in command.commands, f"voicebank {' '.join(argv)}: no command {name!r}"
        command = command.commands[name]
    return command, words


def test_every_command_line_in_the_readme_names_real_commands_and_options():
    seen = 0
    for line in shell_lines(README):
        if not line.startswith("voicebank"):
            continue
        seen += 1
        command, words = resolve(shlex.split(line)[1:])
        known = options(command) | {"-h": None, "--help": None}
        for word in words:
            if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
                assert word.split("=", 1)[0] in known, f"{line}: {word} is not an option of {command.name}"
    assert seen >= 20  # the walk, import, calibration, HTTP, scan, PostgreSQL


def test_every_command_of_the_cli_is_in_the_readme():
    missing = []
    for name, command in main.commands.items():
        if f"`{name}" not in README:
            missing.append(name)
        for sub in getattr(command, "commands", {}):
            if f"`{name} {sub}" not in README:
                missing.append(f"{name} {sub}")
    assert missing == []
    for option in options(main):
        if option.startswith("--") and option not in ("--help", "--version", "--verbose"):
            assert f"`{option}" in README, option


def keys(value) -> object:
    """The shape of a JSON value: its dicts' keys, all the way down."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [keys(value[0])] if value else []
    return None


@pytest.mark.embedder("fake")
def test_the_readmes_json_answers_have_the_fields_the_commands_print(db_path, model, voices):
    from voicebank import VoiceBank

    shown = {line.split()[1]: json.loads(answer) for line, answer in
             re.findall(r"^\$ (voicebank \w+ .*--json)\n(\{.*\})$", README, re.MULTILINE)}
    assert set(shown) == {"identify", "verify"}
    with VoiceBank.open(db_path, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
        bank.enroll("bob", voices["bob"][:2])
        printed = {"identify": bank.identify(voices["alice"][2]).to_dict(),
                   "verify": bank.verify("alice", voices["alice"][2]).to_dict()}
    for command, answer in shown.items():
        assert keys(answer) == keys(printed[command]), command


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readmes_links_lead_somewhere():
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        page = (REPO / path) if path else REPO / "README.md"
        assert page.exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.*)$", page.read_text(encoding="utf-8"), re.MULTILINE)
            assert anchor in {slug(h) for h in headings}, target
