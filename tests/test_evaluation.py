"""Evaluation invariants: byte counts, windows that score every target once, plain == an
independent loss, and score-first TTT that never trains on a token before scoring it."""
import math

import pytest
import torch

import train_gpt
from conftest import TINY_ENV


def runtime_cpu():
    h = train_gpt.Hyperparameters.from_env({"DEVICE": "cpu"})
    return train_gpt.setup_runtime(h, {})


def test_bpb_bytes_equal_utf8_length_of_decoded_text(tiny_dataset):
    processor = train_gpt.load_tokenizer(str(tiny_dataset["tokenizer_path"]), 512)
    tables = train_gpt.build_byte_tables(processor)
    documents = ["Plain ASCII text, with  two spaces and digits 12345.",
                 "Ünïcödé: naïve café — 東京 ☃ 🎉, then a tab\tand a newline\nnext line.",
                 "def f(x):\n    return x ** 2  # comment",
                 "  leading spaces and trailing space "]
    for document in documents:
        ids = processor.encode(document)
        assert any(processor.is_byte(i) for i in ids) or document.isascii()
        stream = torch.tensor([train_gpt.BOS_ID] + ids)
        counted = tables.target_bytes(stream).sum().item()
        assert counted == len(processor.decode(ids).encode("utf-8")), document


def test_tokenizer_vocab_must_match(tiny_dataset):
    with pytest.raises(ValueError, match="VOCAB_SIZE=8192"):
        train_gpt.load_tokenizer(str(tiny_dataset["tokenizer_path"]), 8192)
    with pytest.raises(FileNotFoundError, match="TOKENIZER_PATH"):
        train_gpt.load_tokenizer("/nonexistent.model", 512)


@pytest.mark.parametrize("num_targets, seq_len, stride", [(256, 64, 64), (256, 64, 16), (250, 64, 24), (64, 64, 7)])
def test_windows_score_every_target_exactly_once(num_targets, seq_len, stride):
    windows = train_gpt.sliding_windows(num_targets, seq_len, stride)
    scored = []
    for start, scored_from in windows:
        assert start <= scored_from <= start + seq_len
        scored.extend(range(scored_from, start + seq_len))
    assert scored == list(range(num_targets))
    if stride == seq_len:
        assert all(start == scored_from for start, scored_from in windows)


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    h = train_gpt.Hyperparameters.from_env({**TINY_ENV, **overrides})
    model = train_gpt.GPT(h)
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    model.looping = True
    return h, model


def flat_tables(vocab_size):
    return train_gpt.ByteTables(torch.full((vocab_size,), 2), torch.zeros(vocab_size, dtype=torch.bool),
                                torch.zeros(vocab_size, dtype=torch.bool))


def test_plain_evaluation_equals_an_independent_loss():
    h, model = small_model()
    tokens = torch.randint(0, h.vocab_size, (4 * h.eval_seq_len + 1,))
    runtime = runtime_cpu()
    result = train_gpt.evaluate_windows("plain", train_gpt.WindowScorer(model, h, runtime), tokens,
                                        flat_tables(h.vocab_size), h.eval_seq_len, h, runtime)
    windows = tokens[:-1].view(4, h.eval_seq_len)
    targets = tokens[1:].view(4, h.eval_seq_len)
    with torch.no_grad():
        expected = model.loss(windows, targets).item()
    assert result.val_loss == pytest.approx(expected, rel=1e-5)
    assert result.val_bpb == pytest.approx(expected / math.log(2) / 2, rel=1e-5)


def test_sliding_windows_give_more_context_and_count_every_target():
    h, model = small_model()
    tokens = torch.randint(0, h.vocab_size, (4 * h.eval_seq_len + 1,))
    runtime = runtime_cpu()
    scorer = train_gpt.WindowScorer(model, h, runtime)
    plain = train_gpt.evaluate_windows("plain", scorer, tokens, flat_tables(h.vocab_size), h.eval_seq_len, h, runtime)
    sliding = train_gpt.evaluate_windows("sliding", scorer, tokens, flat_tables(h.vocab_size), 16, h, runtime)
    assert sliding.tokens == plain.tokens == tokens.numel() - 1
    assert sliding.val_loss != plain.val_loss


class Recorder:
    """Token ids equal stream positions, so every id names the position it came from."""

    def __init__(self):
        self.clock, self.scored, self.trained, self.hooked = 0, {}, {}, {}

    def tick(self):
        self.clock += 1
        return self.clock


def test_score_first_ttt_never_trains_on_an_unscored_token(monkeypatch):
    vocab = 1200
    h, model = small_model(VOCAB_SIZE=str(vocab), TTT_CHUNK_TOKENS="200", TTT_EPOCHS="2", EVAL_STRIDE="16")
    tokens = torch.arange(17 * h.eval_seq_len + 1)  # id == position
    recorder = Recorder()
    real_add, real_loss = train_gpt.WindowScorer._add, train_gpt.GPT.loss

    def recording_add(self, buffer, offset, hidden, sequences, starts, scored_from, begin, end):
        time = recorder.tick()
        targets = starts[:, None] + torch.arange(begin, end) + 1  # the token each position predicts
        for t in targets[targets > scored_from[:, None]].tolist():  # the scored ones (pads: none)
            assert t not in recorder.scored, f"target {t} scored twice"
            recorder.scored[t] = time
        return real_add(self, buffer, offset, hidden, sequences, starts, scored_from, begin, end)

    def recording_loss(self, input_ids, target_ids, sequence_weights=None):
        if torch.is_grad_enabled():
            time = recorder.tick()
            rows = sequence_weights > 0 if sequence_weights is not None else torch.ones(len(input_ids), dtype=torch.bool)
            for t in torch.cat([input_ids[rows], target_ids[rows]], 1).flatten().tolist():
                recorder.trained.setdefault(t, time)
        return real_loss(self, input_ids, target_ids, sequence_weights)

    class Hook:
        def on_chunk(self, chunk):
            time = recorder.tick()
            for t in range(chunk.target_start, chunk.target_end):
                recorder.hooked[t + 1] = time
            assert torch.isfinite(chunk.nll).all() and chunk.nll.numel() == chunk.target_end - chunk.target_start

        def log_fields(self):
            return {"mixed_bpb": 1.0}

    monkeypatch.setattr(train_gpt.WindowScorer, "_add", recording_add)
    monkeypatch.setattr(train_gpt.GPT, "loss", recording_loss)
    before = [p.detach().clone() for p in model.parameters()]
    runtime = runtime_cpu()
    train_gpt.evaluate_ttt(train_gpt.WindowScorer(model, h, runtime), tokens, flat_tables(vocab), h, runtime,
                           hooks=[Hook()])
    assert sorted(recorder.scored) == list(range(1, tokens.numel()))  # every target once
    assert recorder.trained, "TTT did not train"
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    for token, trained_at in recorder.trained.items():
        if token == 0:
            continue  # the first token is context only, never a target
        assert recorder.scored[token] < trained_at, f"token {token} trained on before it was scored"
        assert recorder.hooked[token] < trained_at, f"hook saw token {token} after training on it"
    last_chunk = max(recorder.scored.values())
    assert all(time < last_chunk for time in recorder.trained.values())  # last chunk never trained
