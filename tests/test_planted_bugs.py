"""bench/planted_bugs.py stays usable: every planted bug still applies to train_gpt.py, and one of them,
planted in a scratch copy, is caught by the test meant to catch it (the whole set: run the script)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import planted_bugs  # noqa: E402


def test_every_planted_bug_applies_once_and_changes_the_code():
    source = (ROOT / "train_gpt.py").read_text()
    for name, _, old, new, tests in planted_bugs.BUGS:
        patched = planted_bugs.apply(source, old, new, name)  # exits if a text is not there exactly once
        assert patched != source and tests
    assert len(planted_bugs.BUGS) >= 10


def test_a_planted_normalization_bug_is_caught(capsys):
    assert planted_bugs.main(["--only", "gate_weights_unnormalized", "--skip-clean"]) == 0
    assert "| gate_weights_unnormalized |" in capsys.readouterr().out
