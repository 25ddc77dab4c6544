"""Every ``python -m bench ...`` and ``python -m export ...`` command README.md shows parses with the real argument
parsers (nothing runs), so the README cannot drift from the command line: a renamed or removed flag fails here,
naming the README line.

Commands are read from code blocks (a line, or a part after ``&&``/``;``) and from inline code spans that are
whole commands (a span naming only the tool or a subcommand, ``python -m bench sweep``, is a name). A synopsis
is read as a command: ``[--flag X]`` counts as given, ``a|b`` and ``{a,b}`` as their first choice, ``(A | B)``
and ``--model M | --manifest PATH`` as the first alternative, ``NAME...`` as one ``NAME``; placeholders (``N``,
``PATH``, ``$m``, a value ``...``) take a value the flag's parser accepts.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from bench.cli import _ROUTES, parser_for
from export.cli import build_parser as export_parser

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = re.compile(r"python3? -m (bench|export)\b")
PLACEHOLDER = "\0placeholder"  # stands for a value the README leaves to the reader


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every command README.md shows."""
    found, prose, fenced = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        fence = line.lstrip().startswith("```")
        fenced ^= fence
        prose.append("" if fenced or fence else line)
        if fenced and not fence:
            for part in re.split(r"&&|;", re.split(r"\s#\s", line)[0]):
                part = part.strip().removeprefix("$ ")
                if COMMAND.match(part):
                    found.append((number, part))
    joined = "\n".join(prose)
    for span in re.finditer(r"`([^`]+)`", joined):
        words = " ".join(span.group(1).split())
        if COMMAND.match(words) and not _only_a_name(words):
            found.append((joined.count("\n", 0, span.start()) + 1, words))
    return sorted(found)


def _only_a_name(words: str) -> bool:
    rest = COMMAND.sub("", words, count=1).split()
    return not rest or (len(rest) == 1 and rest[0] in (*_ROUTES, "run"))


def argv_of(command: str) -> tuple[str, list[str]]:
    """("bench" or "export", its arguments) with the synopsis notation resolved (module docstring)."""
    tool = COMMAND.match(command).group(1)
    text = COMMAND.sub("", command, count=1).replace("[", " ").replace("]", " ").replace("(", " ").replace(")", " ")
    argv: list[str] = []
    skipped = None  # after a lone "|": the tokens of the alternative left out so far
    for token in shlex.split(text, comments=True):
        if token == "|":  # keep the first alternative; leave out the next, a flag and its values
            skipped = 0
        elif skipped is not None and (skipped == 0 or not token.startswith("-")):
            skipped += 1
        else:
            skipped = None
            value = _value(token, argv)
            if value is not None:
                argv.append(value)
    return tool, argv


def _value(token: str, before: list[str]) -> str | None:
    if token.startswith("{") and token.endswith("}"):
        token = token[1:-1].split(",")[0]
    if token.startswith("-"):
        return token
    if token == "...":  # elided values of the flag before it, or elided arguments (none then)
        return PLACEHOLDER if before and before[-1].startswith("-") else None
    token = token.removesuffix("...").split("|")[0]
    if re.fullmatch(r"[A-Z][A-Z0-9_]*|\$\w+", token):
        return PLACEHOLDER
    return token


def filled(parser, argv: list[str]) -> list[str]:
    """Placeholders given a value the flag before them takes: its first choice, 1 for a number, else a word."""
    out = []
    for token in argv:
        if token == PLACEHOLDER:
            # argparse keeps no public map from a flag to its action; _option_string_actions is that map
            action = parser._option_string_actions.get(out[-1]) if out else None
            choices = list(action.choices or ()) if action is not None else []
            token = str(choices[0]) if choices else "1" if _takes_number(action) else "value"
        out.append(token)
    return out


def _takes_number(action) -> bool:
    if action is None or action.type is None:
        return False
    try:
        action.type("1")
    except (TypeError, ValueError):
        return False
    return action.type not in (str, Path)


def parse(tool: str, argv: list[str]) -> str | None:
    """None when ``argv`` parses, else what the parser said."""
    parser, rest = (export_parser(), argv) if tool == "export" else parser_for(argv)
    assert parser is not None, f"{argv[0]} is internal and takes no flags"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(filled(parser, rest))
    except SystemExit as exc:
        return errors.getvalue().strip().splitlines()[-1] if exc.code else None
    return None


COMMANDS = readme_commands(README.read_text())


def test_the_readme_shows_commands_of_both_tools():
    tools = {COMMAND.match(command).group(1) for _, command in COMMANDS}
    assert tools == {"bench", "export"} and len(COMMANDS) > 40, COMMANDS


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[f"README.md:{line}" for line, _ in COMMANDS])
def test_every_readme_command_parses(line, command):
    tool, argv = argv_of(command)
    problem = parse(tool, argv)
    assert problem is None, f"README.md line {line}: `{command}` does not parse: {problem}"


def test_a_stale_flag_is_caught_naming_the_line():
    text = "intro\n```bash\npython -m bench --runtime ov --model M --batchsize 8\n```\n`python -m export --modle X`\n"
    (first, bench_command), (second, export_command) = readme_commands(text)
    assert (first, second) == (3, 5)
    assert "unrecognized arguments: --batchsize 8" in parse(*argv_of(bench_command))
    assert "unrecognized arguments: --modle" in parse(*argv_of(export_command))


def test_synopsis_notation_is_read_as_a_command():
    tool, argv = argv_of("python -m bench tune --model M | --manifest PATH --objective latency|throughput "
                         "[--runtimes ...] (--max-latency-ms X | --min-throughput N) [--batch B]")
    assert tool == "bench"
    assert argv == ["tune", "--model", PLACEHOLDER, "--objective", "latency", "--runtimes", PLACEHOLDER,
                    "--max-latency-ms", PLACEHOLDER, "--batch", PLACEHOLDER]
    assert parse(tool, argv) is None
