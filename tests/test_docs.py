"""README.md and docs/: the set-up commands come first, every relative link and anchor resolves, the notebook
tables list exactly the notebooks, and every ``llmd-kserve`` flag they show exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from llmd_kserve.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP = ["python3 -m venv .venv && .venv/bin/pip install -q -e '.[report]' && .venv/bin/llmd-kserve demo",
         "bash tests/run.sh"]


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            slug = _slug(m.group(1))
            out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return out


def _links(path: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", _prose(path.read_text())) if not re.match(r"[a-z]+:", t)]


def test_the_readme_starts_with_the_two_setup_commands():
    blocks = re.findall(r"^    (\S.*)$", (ROOT / "README.md").read_text(), re.M)
    assert blocks[:2] == SETUP
    assert (ROOT / "tests" / "run.sh").exists()


def test_every_relative_link_and_anchor_resolves():
    for page in PAGES:
        for link in _links(page):
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            assert path.exists(), f"{page.relative_to(ROOT)}: {link} (no such file)"
            assert ROOT in path.parents or path == ROOT, f"{page.relative_to(ROOT)}: {link} leaves the repository"
            if anchor:
                assert anchor in _anchors(path), f"{page.relative_to(ROOT)}: {link} (no such heading)"


def _notebook_rows(page: Path) -> list[str]:
    return re.findall(r"^\| `(\d\d_\w+)` \|", page.read_text(), re.M)


def test_the_notebook_tables_list_exactly_the_notebooks():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for page in (ROOT / "README.md", ROOT / "docs" / "notebooks.md"):
        assert _notebook_rows(page) == notebooks, page.name


def _options(parser: argparse.ArgumentParser) -> dict[str, dict[str, set[str] | None]]:
    """Subcommand → its flags and those of its own subcommands (``pipeline run``, ``keys add``…), each with its
    choices (None: any value)."""
    def flags(p: argparse.ArgumentParser) -> dict[str, set[str] | None]:
        out: dict[str, set[str] | None] = {}
        for a in p._actions:
            for s in a.option_strings:
                out[s] = {str(c) for c in a.choices} if a.choices and not isinstance(a.choices, dict) else None
            if isinstance(a, argparse._SubParsersAction):
                for child in a.choices.values():
                    out |= flags(child)
        return out

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: flags(p) for name, p in sub.choices.items()}


def _commands(text: str) -> list[str]:
    """Each ``llmd-kserve …`` command shown in a code span or code line, up to a comment, a pipe or the span's end."""
    spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"^(?:    |\s*)(llmd-kserve .*)$", text, re.M)
    out = []
    for span in spans:
        for m in re.finditer(r"llmd-kserve ([^`]*)", span.replace(r"\|", " ")):
            out.append(re.split(r" #| \| | && |; ", m.group(1))[0])
    return out


def test_every_llmd_kserve_flag_shown_exists():
    options = _options(build_parser())
    seen = 0
    for page in PAGES:
        for command in _commands(page.read_text()):
            words = command.split()
            if not words or words[0] not in options:
                continue
            seen += 1
            known = options[words[0]]
            for i, word in enumerate(words[1:], start=1):
                following = words[i + 1] if i + 1 < len(words) else ""
                flag, _, value = word.strip("[](){}…,.:").partition("=")
                if not flag.startswith("--") or len(flag) == 2:
                    continue
                assert flag in known, f"{page.name}: llmd-kserve {words[0]} has no {flag}: {command}"
                value = value or following.strip("[](){}…,.:'")
                choices = known[flag]
                if choices and re.fullmatch(r"[a-z][\w-]*", value):  # a literal value, not a placeholder
                    assert value in choices, f"{page.name}: {flag} {value} is not one of {sorted(choices)}: {command}"
    assert seen > 40
