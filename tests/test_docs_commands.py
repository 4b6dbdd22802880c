"""The documentation can be followed: every `run_search.py` / `skd-ray` command line in a fenced
block of README.md, docs/*.md or CONTRIBUTING.md parses with the real parser and passes the
flag checks that run before anything starts; every relative link points to a file that exists
(and, for a `#anchor` into a Markdown page, to one of its headings); every docs page is linked
from the README; and the README stays short."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from skd_ray.cli.after import check_combination
from skd_ray.cli.commands import build_parser, parse_command_line
from skd_ray.cli.flags import check_combinations, check_ranges
from skd_ray.errors import SkdError

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "CONTRIBUTING.md"]
README_MAX_LINES = 220
INSTALL = "bash scripts/install.sh"
QUICK_START = ".venv/bin/python run_search.py"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
# Shell variables and placeholders the documented commands use, and what stands in for them.
VARIABLES = {"HEAD_IP": "10.0.0.1", "PWD": "/tmp/skd"}
PLACEHOLDER = re.compile(r"<[^<>\s]+>")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ">", ">>", "<", "2>&1"}


def blocks_of(text: str) -> list[tuple[int, str]]:
    """(line number of the block's first line, its text) of every fenced block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def logical_lines(start: int, block: str) -> list[tuple[int, str]]:
    """The block's lines with backslash-continued lines joined, each with its first line's number."""
    out: list[tuple[int, str]] = []
    pending, first = "", start
    for number, line in enumerate(block.split("\n"), start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def substitute(token: str) -> str:
    for name, value in VARIABLES.items():
        token = token.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return PLACEHOLDER.sub("x", token)


def command_of(line: str) -> tuple[str, list[str]] | None:
    """(program, argv) of a `run_search.py`, `python -m skd_ray` or `skd-ray` command in a shell
    line (after `&&`, or after `--` of `ray job submit`), or None when the line has none."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: not a command line of ours
        return None
    comment = next((i for i, token in enumerate(tokens) if token.startswith("#")), len(tokens))
    tokens = tokens[:comment]
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else None
        if Path(token).name == "run_search.py" or (token == "skd_ray" and before == "-m"):
            prog = "run_search.py"
        elif Path(token).name == "skd-ray" and (before is None or before in SHELL_OPERATORS | {"--"}):
            prog = "skd-ray"
        else:
            continue
        args = []
        for word in tokens[i + 1:]:
            if word in SHELL_OPERATORS:
                break
            if word != "...":
                args.append(substitute(word))
        return prog, args
    return None


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, program, argv) of every documented command."""
    found = []
    for page in PAGES:
        for start, block in blocks_of(page.read_text()):
            for number, line in logical_lines(start, block):
                command = command_of(line)
                if command:
                    found.append((f"{page.relative_to(ROOT)}:{number}", *command))
    return found


COMMANDS = documented_commands()


def test_the_documented_commands_are_found() -> None:
    where = {place.split(":")[0] for place, _, _ in COMMANDS}
    assert len(COMMANDS) >= 30, COMMANDS
    assert {"README.md", "docs/usage.md", "docs/cluster.md", "docs/comparison.md"} <= where, sorted(where)
    assert any(prog == "skd-ray" for _, prog, _ in COMMANDS)


def test_the_quick_start_is_the_readmes_first_command_after_the_install() -> None:
    """A fresh clone can run the README's commands in order: the install comes first (once), then
    the quick start's search."""
    text = README.read_text()
    blocks = [block for _, block in blocks_of(text)]
    first = next(i for i, block in enumerate(blocks) if "run_search.py" in block or "skd-ray" in block)
    assert blocks[first].startswith(QUICK_START), blocks[first]
    installs = [i for i, block in enumerate(blocks) if any(line.startswith(INSTALL) for line in block.splitlines())]
    assert installs and installs[0] < first, installs
    assert INSTALL not in blocks[first].split("#")[0]  # not installed a second time


@pytest.mark.parametrize(("where", "prog", "argv"), COMMANDS, ids=[place for place, _, _ in COMMANDS])
def test_a_documented_command_parses(where: str, prog: str, argv: list[str]) -> None:
    """The real parser takes it, and the checks that run before anything starts (ranges,
    contradicting flags) pass; nothing is run."""
    shown = f"{where}: {prog} {' '.join(argv)}"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = parse_command_line(argv, prog)
    except SystemExit as exit_:
        said = stderr.getvalue().strip().splitlines()
        pytest.fail(f"{shown}\nis refused by the parser (exit {exit_.code}): {said[-1] if said else ''}")
    args: argparse.Namespace = parsed.args
    try:
        check_ranges(args, parsed.flag_names)
        check_combinations(args, build_parser().get_default)
        check_combination(args)
    except SkdError as err:
        pytest.fail(f"{shown}\nis refused before it starts: {err.problem}")


def test_command_lines_are_read_as_a_shell_would() -> None:
    assert command_of(".venv/bin/skd-ray final --top 3   # the 3 best") == ("skd-ray", ["final", "--top", "3"])
    assert command_of(f"{INSTALL} && {QUICK_START}") == ("run_search.py", [])
    assert command_of("python /home/ray/skd-ray/run_search.py --mlflow-uri http://$HEAD_IP:5000 ...") == \
        ("run_search.py", ["--mlflow-uri", "http://10.0.0.1:5000"])
    assert command_of("cd /path/to/skd-ray") is None
    assert command_of("python -m skd_ray --results > out.txt") == ("run_search.py", ["--results"])
    joined = logical_lines(1, "a \\\n  b\nc")
    assert [(n, " ".join(line.split())) for n, line in joined] == [(1, "a b"), (3, "c")]


# Links: [text](target) and ![alt](target) outside fenced blocks.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def without_fences(text: str) -> str:
    """The text with every fenced block blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped, spaces
    as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(without_fences(page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        anchors.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return anchors


def links_of(page: Path) -> list[tuple[int, str]]:
    text = without_fences(page.read_text())
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)]


LINKS = [(page, number, target) for page in PAGES for number, target in links_of(page)
         if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_the_links_are_found() -> None:
    assert len(LINKS) >= 40, LINKS


@pytest.mark.parametrize(("page", "number", "target"), LINKS,
                         ids=[f"{page.relative_to(ROOT)}:{number}:{target}" for page, number, target in LINKS])
def test_a_relative_link_points_to_something_that_exists(page: Path, number: int, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    where = f"{page.relative_to(ROOT)}:{number}: {target}"
    assert resolved.exists(), f"{where}: {path} does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors_of(resolved), f"{where}: no heading #{anchor} in {resolved.relative_to(ROOT)}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in links_of(README)}
    missing = [page.name for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_the_readme_stays_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"
