"""bench/planted_bugs.py stays usable: every planted bug still applies to train_gpt.py, and one of them,
planted in a scratch copy, is caught by the test meant to catch it (the whole set: run the script)."""
from __future__ import annotations

import importlib
import inspect
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


def test_no_legality_test_uses_a_network_whose_statistics_read_the_target():
    """informed_network's entropy and top probability depend on the target: a legality test fed them could
    not tell a mixer that reads the target from one that does not."""
    sys.path.insert(0, str(ROOT / "tests"))
    for test_id in (planted_bugs.LEGALITY, planted_bugs.CAUSALITY, planted_bugs.REAL_LOOP, *planted_bugs.DOCUMENT_TESTS):
        path, name = test_id.split("::")
        module = importlib.import_module(Path(path).stem)
        assert "informed_network" not in inspect.getsource(getattr(module, name)), test_id
