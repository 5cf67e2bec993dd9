"""The repository stands alone: no tracked file points outside it.

Users get a clone of this repository and nothing else, so a path into a sibling folder of the
checkout (the developers' shared one), an absolute path of a developer's machine, a
documentation link to a web page, or a relative link to a file that does not exist would
send them to something they do not have. Fixture logs are data and may name any path, as
real logs do; everything else is checked.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUTSIDE_PATHS = re.compile(r"\.\./shared\b|(?<![\w.])/(?:work|home|Users)/\w")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
WEB_LINK = re.compile(r"\]\(\s*https?://|<https?://[^>]+>")
# Text files: everything tracked except binary assets (none today; listed for safety).
BINARY_SUFFIXES = {".png", ".jpg", ".ptz", ".pt", ".bin", ".model"}


def tracked_files() -> list[Path]:
    """git's list of tracked files; a walk of the tree where git is unavailable (an exported copy)."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        names = [n for n in listing.stdout.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
                 and not {".git", "__pycache__", ".pytest_cache"} & set(p.parts)]
    files = [ROOT / n for n in names if (ROOT / n).is_file()]
    assert files, "no tracked files found"
    return files


def text_files() -> list[Path]:
    """Tracked text files, less the fixture logs and this file (it spells the patterns out)."""
    return [p for p in tracked_files() if p.suffix.lower() not in BINARY_SUFFIXES and FIXTURES not in p.parents
            and p.resolve() != Path(__file__).resolve()]


def test_no_file_names_a_path_outside_the_repository():
    offenders = []
    for path in text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE_PATHS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def markdown_files() -> list[Path]:
    return [p for p in text_files() if p.suffix.lower() == ".md"]


def test_documentation_links_stay_inside_the_repository():
    offenders = []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)}: web link {m.group(0)[:60]}" for m in WEB_LINK.finditer(text)]
        for target in MARKDOWN_LINK.findall(text):
            if re.match(r"https?://|mailto:", target) or target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            if ROOT not in resolved.parents and resolved != ROOT:
                offenders.append(f"{path.relative_to(ROOT)}: link {target} leaves the repository")
            elif not resolved.exists():
                offenders.append(f"{path.relative_to(ROOT)}: link {target} names no file")
    assert not offenders, "\n".join(offenders)


def test_user_documentation_needs_no_outside_reference():
    """README, docs/ and records/ are what users read: no issue numbers, no reference document
    they do not have (the developers' SPEC)."""
    offenders = []
    for path in markdown_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bSPEC\b|\bissue\s*#?\d+|\bissues? \d", line, re.IGNORECASE):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("folder", ["docs", "records"])
def test_documentation_folders_exist_and_are_linked_from_the_readme(folder):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / folder / "README.md").is_file() or any((ROOT / folder).glob("*.md"))
    assert f"]({folder}/" in readme, f"README.md does not link {folder}/"
