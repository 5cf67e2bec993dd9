"""Plant each legality or learning bug in a scratch copy of train_gpt.py and check that a test fails.

Why: a test that passes proves nothing until it has been seen to fail on the bug it guards. Each bug
below is one textual patch of train_gpt.py (the review's ten kinds, the match expert's own, and the
evaluation loop's: stream and document TTT, the mixer's order, the n-gram tilt); the
script copies the repository's code and tests into a temporary folder, applies one patch, runs the
tests meant to catch it there (pytest -x), and reports whether they failed. The unpatched copy must
pass the same tests. tests/test_planted_bugs.py checks that every patch still applies.

    python bench/planted_bugs.py            # every bug (~15 minutes on one thread)
    python bench/planted_bugs.py --only match_reads_its_own_target
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEGALITY = "tests/test_dualclock_learning.py::test_every_candidate_through_the_public_path_sums_to_one"
REFERENCE = "tests/test_dualclock_learning.py::test_default_path_with_learning_matches_the_slow_reference"
HASHED_REFERENCE = "tests/test_dualclock.py::test_vectorized_experts_match_the_slow_reference"
CAUSALITY = "tests/test_dualclock.py::test_gate_and_escapes_for_a_chunk_learn_only_from_earlier_chunks"
STABILITY = "tests/test_dualclock_learning.py::test_one_ulp_on_one_network_nll_barely_moves_the_result"
VERIFIED = "tests/test_dualclock_learning.py::test_the_match_expert_keeps_only_candidates_whose_tokens_agree"
REAL_LOOP = "tests/test_eval_causality.py::test_stream_evaluation_with_dualclock_is_causal_through_the_real_loop"
DOCUMENT = "tests/test_eval_causality.py::test_document_evaluation_with_dualclock_is_causal_in_its_order"
DOCUMENT_ORDER = ("tests/test_dualclock_learning.py::"
                  "test_dualclock_over_document_ttt_matches_the_slow_reference_in_the_evaluation_order")
DOCUMENT_TESTS = [DOCUMENT, DOCUMENT_ORDER]  # the document path's legality tests
TILT_REFERENCE = "tests/test_eval_causality.py::test_ngram_hints_match_a_left_to_right_pass"

# (name, what the bug does, text in train_gpt.py, its replacement, the tests that must catch it); a bug of
# several patches gives tuples of texts and replacements.
BUGS = [
    ("bucket_reads_the_target", "a hashed expert's context bucket mixes in the target",
     "lambda: hash_buckets(self.hashes[order - 1], buckets, self.hash_mode))",
     "lambda: hash_buckets((self.hashes[order - 1] ^ self.targets * HASH_MUL) & HASH_MASK, buckets, self.hash_mode))",
     [LEGALITY, HASHED_REFERENCE]),
    ("hashed_document_reads_the_target", "a hashed local expert's document counts the target's own BOS",
     "ids = self.bos_before + torch.cumsum(is_bos[:-1], 0)",
     "ids = self.bos_before + torch.cumsum(is_bos, 0)[1:]",
     [LEGALITY, HASHED_REFERENCE]),
    ("sharp_document_reads_the_target", "the sharp document expert's document counts the target's own BOS",
     "self.documents, self.next_document = documents[:-1], int(documents[-1])",
     "self.documents, self.next_document = documents[1:], int(documents[-1])",
     [LEGALITY, REFERENCE]),
    ("self_count", "a target counts toward its own prediction (inclusive prefix rank)",
     "return torch.empty_like(position).scatter_(0, order, position - run_start)",
     "return torch.empty_like(position).scatter_(0, order, position - run_start + 1)",
     [LEGALITY, HASHED_REFERENCE]),
    ("gate_reads_the_target_nll", "the gate's features hold the network's NLL of the target",
     "features = gate_features(logprobs.shape[0], network_stats,",
     "features = gate_features(logprobs.shape[0], {'entropy': neural_nll, 'top_prob': neural_nll},",
     [LEGALITY, REFERENCE]),
    ("escapes_learn_before_scoring", "the escapes learn chunk c before scoring it",
     "            logprobs = self.logprobs(stats)\n",
     "            learn(self.escapes, self.prior, self.scale, lambda: -self.logprobs(stats).sum(1).mean(), 1,\n"
     "                  self.h.dc_escape_lr, end - start)\n            logprobs = self.logprobs(stats)\n",
     [LEGALITY, CAUSALITY]),
    ("gate_learns_before_scoring", "the gate learns chunk c before mixing it",
     "        mixed = self.mixer.mix(logprobs, features)\n        self.mixer.update(logprobs, features)\n",
     "        self.mixer.update(logprobs, features)\n        mixed = self.mixer.mix(logprobs, features)\n",
     [LEGALITY, CAUSALITY]),
    ("gate_weights_unnormalized", "the gate's floor is added without taking it from the softmax",
     "self.used = self.floor + (1 - self.gate.shape[1] * self.floor) * torch.softmax(features @ self.gate, 1)",
     "self.used = self.floor + torch.softmax(features @ self.gate, 1)",
     [LEGALITY]),
    ("match_reads_its_own_target", "the match expert's candidate is the position itself",
     "before = torch.cat([entry[:1], entry[:-1]]).scatter_(",
     "before = entry.clone().scatter_(",
     [LEGALITY, REFERENCE]),
    ("match_reads_later_positions", "the match table holds the chunk's positions before they are looked up",
     "        starts = F.pad(sorted_key[1:] != sorted_key[:-1], (1, 0), value=True).nonzero().squeeze(1)\n",
     "        self.heads.scatter_reduce_(0, sorted_key.long(), entry, 'amax')\n"
     "        starts = F.pad(sorted_key[1:] != sorted_key[:-1], (1, 0), value=True).nonzero().squeeze(1)\n",
     [LEGALITY, REFERENCE]),
    ("match_confidence_counts_its_own_hit", "the match confidence counts the position's own hit",
     "tallies.cumsum(2) - tallies + self.counts.unsqueeze(2)",
     "tallies.cumsum(2) + self.counts.unsqueeze(2)",
     [LEGALITY, REFERENCE]),
    ("match_unverified", "the match expert uses a candidate whose tokens disagree",
     "bucket * (blocks >= needed))",
     "bucket.clamp_min(1))",
     [VERIFIED]),
    ("network_statistics_one_late", "the mixer gets each target's entropy and top probability one position late "
     "(from a context that holds the target): passed all 59 DualClock and evaluation tests before the real-loop test",
     "chunk = ChunkScores(tokens, first_target, last_target, nll, entropy, top_prob,",
     "chunk = ChunkScores(tokens, first_target, last_target, nll, entropy.roll(-1), top_prob.roll(-1),",
     [REAL_LOOP]),
    ("stream_ttt_reads_the_next_chunk", "stream TTT trains on a chunk and the next one's first tokens, unscored",
     "trainer.train_on_chunk(tokens, first_target, last_target, h.ttt_lr * cosine)",
     "trainer.train_on_chunk(tokens, first_target, min(last_target + h.eval_seq_len, num_targets), h.ttt_lr * cosine)",
     [REAL_LOOP]),
    ("adapter_learns_before_scoring", "document TTT: the adapters take a step on a chunk before scoring it",
     "                statistics = self.forward(inputs, positions, tokens[index + 1], hints)\n",
     "                if learn:\n                    (self.forward(inputs, positions, tokens[index + 1], hints)[0] * scored).sum().backward()\n"
     "                    self.adapters.optimizer.step()\n                    self.adapters.optimizer.zero_grad()\n"
     "                statistics = self.forward(inputs, positions, tokens[index + 1], hints)\n",
     [DOCUMENT]),
    ("adapter_reads_its_target", "document TTT: each target is scored from the position after it (its input)",
     "positions = (target - begin[:, None]).clamp(0, width - 1)",
     "positions = (target - begin[:, None] + 1).clamp(0, width - 1)",
     [DOCUMENT]),
    ("chunks_overlap", "document TTT: each chunk also scores the previous chunk's last target",
     "target = k * chunk + offsets  #",
     "target = k * chunk + offsets - (k > 0)  #",
     [DOCUMENT]),
    ("phase_trains_on_unscored_documents", "a global SGD phase trains on the shortest documents, scored or not",
     "training = sorted(finished, key=",
     "training = sorted(spans, key=",
     [DOCUMENT]),
    ("mixer_in_document_order", "document TTT: the mixer reads the stream in document order while the network "
     "scores in length order (#2130/#2135's counts)",
     "chunk = ChunkScores(stream, bounds[i]",
     "chunk = ChunkScores(tokens, bounds[i]",
     [DOCUMENT_ORDER, DOCUMENT]),
    ("tilt_counts_in_document_order", "the n-gram tilt's counts run in document order while documents are scored in "
     "length order (#2130/#2135)",
     "hints = ngram_hints(stream, h) if h.dc_tilt else None",
     "hints = ngram_hints(tokens, h)[order] if h.dc_tilt else None",
     [DOCUMENT]),
    ("tilt_hint_counts_its_target", "the tilt's hint is the leader after its own target is counted",
     "hints[by_context] = torch.where(fires, F.pad(leader[:-1], (1, 0)), -1)",
     "hints[by_context] = torch.where(fires, leader, -1)",
     [TILT_REFERENCE]),
    ("adam_like_steps", "Adam's two faults: steps of 0.1 per chunk whatever its size, eps 1e-8",
     ("gradient / (scale + LEARNER_EPS)", "step, keep = rate * share,"),
     ("gradient / (scale + 1e-8)", "step, keep = 0.1,"),
     [STABILITY]),
]


def scratch_copy(folder: Path) -> None:
    for name in ("train_gpt.py", "pyproject.toml"):
        shutil.copy(ROOT / name, folder / name)
    for name in ("tests", "data"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "datasets", "tokenizers"))


def apply(source: str, old, new, name: str) -> str:
    for old, new in zip(*((old, new) if isinstance(old, tuple) else ((old,), (new,)))):
        if source.count(old) != 1:
            raise SystemExit(f"{name}: the text to patch occurs {source.count(old)} times in train_gpt.py (expected once)")
        source = source.replace(old, new)
    return source


def run_tests(folder: Path, tests: list[str]) -> tuple[int, float, str]:
    began = time.time()
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=folder,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    return result.returncode, time.time() - began, lines[0] if lines else result.stdout.strip().splitlines()[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="bug names")
    parser.add_argument("--skip-clean", action="store_true", help="do not run the unpatched copy first")
    args = parser.parse_args(argv)
    bugs = [bug for bug in BUGS if not args.only or bug[0] in args.only]
    source = (ROOT / "train_gpt.py").read_text()
    for name, _, old, new, _ in BUGS:
        apply(source, old, new, name)  # every patch applies before anything runs
    missed = 0
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        scratch_copy(folder)
        if not args.skip_clean:
            tests = sorted({test for bug in bugs for test in bug[4]})
            code, seconds, last = run_tests(folder, tests)
            print(f"unpatched: {'pass' if code == 0 else 'FAIL'} ({seconds:.0f} s) {last}")
            if code != 0:
                return 1
        print("| bug | what it does | caught | by | seconds |\n|---|---|---|---|---:|")
        for name, what, old, new, tests in bugs:
            (folder / "train_gpt.py").write_text(apply(source, old, new, name))
            code, seconds, last = run_tests(folder, tests)
            caught = code == 1  # 1: a test failed (2+: interrupted, usage or collection error)
            missed += not caught
            print(f"| {name} | {what} | {'yes' if caught else f'NO (pytest exit {code})'} | {last} | {seconds:.0f} |",
                  flush=True)
        (folder / "train_gpt.py").write_text(source)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
