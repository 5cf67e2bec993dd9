"""Causality of the whole scored evaluation, DualClock included, through the real loop.

A tiny GPT runs the evaluation end to end (score-first TTT, the DualClock hook, its experts, gate and
learning); then tokens[t:] are replaced and it runs again from the same artifact. Whatever was decided
before token t was seen must not move by one bit: the network's and every expert's score of each
target before t - 1 (target i predicts tokens[i + 1]), the mixed score, and the gate's features and
weights at position t - 1, which predict tokens[t] itself. The network statistics are the model's own
(no made-up network whose statistics read the target). The perturbation must change the score of
target t - 1, or the test would check nothing.
"""
from __future__ import annotations

import copy
import itertools
import math
import random

import pytest
import torch

import train_gpt as tg
from conftest import TINY_ENV

BOS = tg.BOS_ID
DC_ENV = {"DC_ENABLED": "1", "DC_GATE_SAMPLE_TOKENS": "48", "DC_ESCAPE_SAMPLE_TOKENS": "32",
          "DC_TILT": "1", "DC_TILT_ORDER": "3", "DC_TILT_THRESHOLD": "0.5"}  # short hints, so that they fire


def documents_stream(length: int, vocab: int, seed: int) -> torch.Tensor:
    """BOS-led documents of 3..60 tokens mixing repeated phrases and random tokens."""
    rng = random.Random(seed)
    phrases = [[rng.randrange(2, vocab) for _ in range(rng.randrange(2, 6))] for _ in range(6)]
    tokens = [BOS]
    while len(tokens) < length:
        end = len(tokens) + rng.randrange(3, 60)
        while len(tokens) < end:
            tokens.extend(rng.choice(phrases) if rng.random() < 0.5 else [rng.randrange(2, vocab)])
        tokens.append(BOS)
    return torch.tensor(tokens[:length], dtype=torch.long)


def tiny_model(h: tg.Hyperparameters, seed: int = 0) -> tg.GPT:
    torch.manual_seed(seed)
    model = tg.GPT(h)
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    model.looping = True
    return model


def flat_tables(vocab_size: int) -> tg.ByteTables:
    return tg.ByteTables(torch.full((vocab_size,), 2), torch.zeros(vocab_size, dtype=torch.bool),
                         torch.zeros(vocab_size, dtype=torch.bool))


class MixRecorder:
    """Wraps DualClock.mix_chunk, gate_features and the tilt's hook: per target, the components' log-probs
    (network first), the mixed log-prob, the gate's features and the weights the gate used, the tilt's hint
    and the network's log-probability of it."""

    def __init__(self, monkeypatch):
        self.rows: dict[str, list[torch.Tensor]] = {key: [] for key in
                                                    ("logprobs", "mixed", "features", "used", "hint", "hint_logprob")}
        mix_chunk, features, tilt = tg.DualClock.mix_chunk, tg.gate_features, tg.NgramTilt.on_chunk
        recorder = self

        def recording_tilt(hook, chunk):
            recorder.rows["hint"].append(chunk.hint.clone())
            recorder.rows["hint_logprob"].append(chunk.hint_logprob.clone())
            return tilt(hook, chunk)

        def recording_features(*args, **kwargs):
            result = features(*args, **kwargs)
            recorder.rows["features"].append(result.clone())
            return result

        def recording_mix_chunk(clock, *args, **kwargs):
            logprobs, mixed = mix_chunk(clock, *args, **kwargs)
            recorder.rows["logprobs"].append(logprobs.clone())
            recorder.rows["mixed"].append(mixed.clone())
            recorder.rows["used"].append(clock.mixer.used.clone())
            return logprobs, mixed

        monkeypatch.setattr(tg, "gate_features", recording_features)
        monkeypatch.setattr(tg.NgramTilt, "on_chunk", recording_tilt)
        monkeypatch.setattr(tg.DualClock, "mix_chunk", recording_mix_chunk)

    def take(self) -> dict[str, torch.Tensor]:
        taken = {key: torch.cat(parts) for key, parts in self.rows.items()}
        for parts in self.rows.values():
            parts.clear()
        return taken


def run_stream(model: tg.GPT, tokens: torch.Tensor, h: tg.Hyperparameters, recorder: MixRecorder):
    runtime = tg.setup_runtime(h, {})
    hooks = [tg.DualClock(h, h.vocab_size, "cpu"), tg.NgramTilt(h)]
    result = tg.evaluate_ttt(tg.WindowScorer(copy.deepcopy(model), h, runtime), tokens, flat_tables(h.vocab_size), h,
                             runtime, hooks=hooks)
    return result, recorder.take()


def assert_causal(first: dict, second: dict, t: int) -> None:
    kept = t - 1  # targets i < t - 1 read tokens[:t] only
    for key in ("logprobs", "mixed"):
        assert torch.equal(first[key][:kept], second[key][:kept]), f"{key} of a target before {kept} moved"
    assert torch.equal(first["features"][kept], second["features"][kept]), "the gate's features at t-1 moved"
    assert torch.equal(first["used"][kept], second["used"][kept]), "the gate's weights at t-1 moved"
    for key in ("hint", "hint_logprob"):  # the tilt at t - 1 is decided before tokens[t]
        assert torch.equal(first[key][:t], second[key][:t]), f"the tilt's {key} at or before t-1 moved"
    assert not torch.equal(first["logprobs"][kept], second["logprobs"][kept]), "the perturbation changed nothing"


def perturbed(tokens: torch.Tensor, t: int, vocab: int) -> torch.Tensor:
    changed = tokens.clone()
    changed[t:] = documents_stream(tokens.numel() - t + 1, vocab, seed=t)[1:]
    changed[t] = (tokens[t] + 7) % (vocab - 2) + 2  # target t - 1 always changes
    return changed


def stream_settings(**extra) -> tg.Hyperparameters:
    return tg.Hyperparameters.from_env({**TINY_ENV, "VOCAB_SIZE": "64", "TTT_CHUNK_TOKENS": "96", **DC_ENV, **extra})


def test_stream_evaluation_with_dualclock_is_causal_through_the_real_loop(monkeypatch):
    h = stream_settings()
    recorder = MixRecorder(monkeypatch)
    tokens = documents_stream(5 * 64 + 1, h.vocab_size, seed=3)
    model = tiny_model(h)
    result, first = run_stream(model, tokens, h, recorder)
    assert first["mixed"].numel() == tokens.numel() - 1 and result.dualclock["tilt_fired"] > 20
    again = run_stream(model, tokens, h, recorder)[1]
    assert all(torch.equal(first[k], again[k]) for k in first)  # the same artifact gives the same scores
    bos_after = next(i for i in range(150, 300) if tokens[i - 1] == BOS)
    for t in (40, 96, 97, 150, bos_after, 250):  # inside the first chunk, a chunk's first targets, after a BOS
        assert_causal(first, run_stream(model, perturbed(tokens, t, h.vocab_size), h, recorder)[1], t)


# -- document TTT: the same check in the evaluation stream (documents in scoring order) ---------------------------

DOCUMENT_ENV = {"TTT_MODE": "document", "TTT_LORA_RANK": "4", "TTT_DOC_BATCH": "3", "TTT_DOC_CHUNK_TOKENS": "8",
                "TTT_SHORT_CHUNKS": "20:4", "TTT_PHASES": "2", "TTT_PHASE_PREFIX_DOCS": "16", "TTT_CHUNK_TOKENS": "64",
                "TTT_GLOBAL_LR": "0.05", "TTT_LORA_LR": "0.01"}


def document_settings(**extra) -> tg.Hyperparameters:
    return stream_settings(**{**DOCUMENT_ENV, **extra})


def run_documents(model: tg.GPT, tokens: torch.Tensor, h: tg.Hyperparameters, recorder: MixRecorder):
    runtime = tg.setup_runtime(h, {})
    hooks = [tg.DualClock(h, h.vocab_size, "cpu"), tg.NgramTilt(h)]
    result = tg.evaluate_documents(copy.deepcopy(model), tokens, flat_tables(h.vocab_size), h, runtime, hooks=hooks)
    return result, recorder.take()


def long_documents_stream(vocab: int) -> torch.Tensor:
    """Documents of 3..60 tokens and three of 100, longer than the 64-token window, so that windows slide."""
    generator = torch.Generator().manual_seed(9)
    long = [torch.cat([torch.tensor([BOS]), torch.randint(2, vocab, (20,), generator=generator).repeat(5)[:99]])
            for _ in range(3)]
    return torch.cat([documents_stream(400, vocab, seed=5)[:-1], *long, documents_stream(300, vocab, seed=6)])


def perturbed_in_order(tokens: torch.Tensor, order: torch.Tensor, t: int, vocab: int) -> torch.Tensor:
    """tokens whose evaluation stream differs from t on: every non-BOS token there replaced (BOS kept, so the
    documents' lengths, and with them the scoring order, stay; the order is a function of all lengths)."""
    changed = tokens.clone()
    positions = torch.cat([order[t:], order[-1:] + 1])
    generator = torch.Generator().manual_seed(t)
    keep = changed[positions] == BOS
    fresh = torch.randint(2, vocab, (positions.numel(),), generator=generator)
    fresh = torch.where(fresh == changed[positions], (fresh - 1).clamp_min(2) + (fresh == 2) * 2, fresh)
    changed[positions] = torch.where(keep, changed[positions], fresh)
    return changed


def test_document_evaluation_with_dualclock_is_causal_in_its_order(monkeypatch):
    h = document_settings()
    recorder = MixRecorder(monkeypatch)
    tokens = long_documents_stream(h.vocab_size)
    queue = tg.document_queue(tg.document_spans(tokens), bool(tokens[-1] == BOS), h)
    order, stream = tg.evaluation_stream(tokens, queue)
    plan = tg.document_plan(queue, h, 1)
    assert [phases for _, phases in plan if phases] == [[0], [1]]  # two pauses for global SGD
    model = tiny_model(h)
    result, first = run_documents(model, tokens, h, recorder)
    assert result.tokens == tokens.numel() - 1 == first["mixed"].numel() and result.extra["sgd_ms"] > 0
    assert result.dualclock["tilt_fired"] > 20
    again = run_documents(model, tokens, h, recorder)[1]
    assert all(torch.equal(first[k], again[k]) for k in first)  # the same artifact and seed: the same scores
    segment_ends = list(itertools.accumulate(sum(e - f for f, e in queue[i]) for i in range(len(queue))))
    long_document = next(v for v in range(order.numel()) if order[v] == 450)  # inside a document of 100
    candidates = [5, 40, segment_ends[1] + 2, segment_ends[3] + 1, long_document, long_document + 9, order.numel() - 30]
    for t in candidates:
        t += int(stream[t] == BOS)  # a token that the perturbation changes
        changed = perturbed_in_order(tokens, order, t, h.vocab_size)
        assert_causal(first, run_documents(model, changed, h, recorder)[1], t)


def test_document_adapters_and_phases_learn(monkeypatch):
    """The checks above mean something only if the adapters and the phases change the scores."""
    h = document_settings()
    tokens = long_documents_stream(h.vocab_size)
    model, runtime = tiny_model(h), tg.setup_runtime(h, {})
    scores = {}
    for name, extra in {"both": {}, "no adapter steps": {"TTT_LORA_LR": "0"}, "no phases": {"TTT_PHASES": "0"}}.items():
        settings = document_settings(**extra)
        scores[name] = tg.evaluate_documents(copy.deepcopy(model), tokens, flat_tables(h.vocab_size), settings, runtime).val_loss
    assert len(set(scores.values())) == 3, scores


# -- the n-gram tilt -------------------------------------------------------------------------------------------


def slow_hints(tokens: list[int], order: int, threshold: float) -> list[int]:
    """The published token hint (#2130/#2135), one target at a time with dictionaries: look up, then count the target."""
    contexts, pairs, hints = {}, {}, []
    for i in range(len(tokens) - 1):
        if i < order - 2:
            hints.append(-1)
            continue
        context, target = tuple(tokens[i - order + 2:i + 1]), tokens[i + 1]
        total, top, leader = contexts.get(context, (0, 0, -1))
        hints.append(leader if total and top / total >= threshold else -1)
        pairs[context, target] = pairs.get((context, target), 0) + 1
        if pairs[context, target] > top:  # strictly: a tie keeps the older token
            top, leader = pairs[context, target], target
        contexts[context] = (total + 1, top, leader)
    return hints


@pytest.mark.parametrize("order, threshold", [(16, 0.8), (3, 0.5), (2, 0.8), (4, 0.3)])
def test_ngram_hints_match_a_left_to_right_pass(order, threshold):
    rng = random.Random(order)
    phrases = [[rng.randrange(2, 9) for _ in range(rng.randrange(2, 20))] for _ in range(5)]
    stream = [BOS]
    while len(stream) < 3000:
        stream += rng.choice(phrases) if rng.random() < 0.6 else [rng.randrange(0, 9)]
    h = tg.Hyperparameters.from_env({"DC_TILT_ORDER": str(order), "DC_TILT_THRESHOLD": str(threshold)})
    hints = tg.ngram_hints(torch.tensor(stream), h).tolist()
    assert hints == slow_hints(stream, order, threshold) and sum(x >= 0 for x in hints) > 5


def test_the_tilt_is_a_distribution_over_every_candidate():
    """p'(a) = p(a)·e^{β·1[a=h]} / Z for every candidate a, through the hook: the tilted probabilities sum to 1."""
    h = tg.Hyperparameters.from_env({"VOCAB_SIZE": "16", "DC_TILT_BOOST": "2.625"})
    logits = torch.randn(16, generator=torch.Generator().manual_seed(1)) * 3
    log_p = logits.log_softmax(0)
    for hint in (-1, 0, 5):
        total = 0.0
        for candidate in range(16):
            tilt = tg.NgramTilt(h)
            tokens = torch.tensor([BOS, candidate])
            tilt.on_chunk(tg.ChunkScores(tokens, 0, 1, -log_p[candidate:candidate + 1], torch.zeros(1), torch.zeros(1),
                                         torch.ones(1, dtype=torch.float64), log_p[max(hint, 0):max(hint, 0) + 1],
                                         torch.tensor([hint])))
            total += math.exp(-tilt.nll)
        assert total == pytest.approx(1, abs=1e-6)
