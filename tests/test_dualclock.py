"""DualClock (docs/dualclock.md): PPM experts and the fixed-share mixer.

The vectorized experts are checked against a slow dictionary-based reference that scores one
token at a time, in every hash and reset mode; plus causality, chunk-size invariance and the
mixer's update. Normalization over all V ids through the public path, the default path's learning
and its stability are in test_dualclock_learning.py. Small vocabularies and bucket counts make hash
collisions frequent; one case uses the published sizes and large token ids.
"""
from __future__ import annotations

import copy
import math
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import train_gpt as tg

BOS = 1
MASK = (1 << 63) - 1
# The published hash constants, written out independently of train_gpt (docs/dualclock.md).
MUL, OFF, SALT, ORDM = 0x9E3779B185EBCA87, 1469598103934665603, 0x9E3779B97F4A7C15, 0xA0761D6478BD642F

PUBLISHED = {"DC_EXPERTS": "hashed", "DC_MIXER": "fixed_share"}  # the published experts and mixer
SMALL = {"VOCAB_SIZE": "50", "DC_BUCKETS_G": "16", "DC_BUCKETS_L": "16", **PUBLISHED}


def config(**overrides) -> tg.Hyperparameters:
    env = dict(SMALL)
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return tg.Hyperparameters.from_env(env)


def make_stream(length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Documents (BOS then tokens) mixing a few repeated phrases with random tokens, so that
    contexts recur within and across documents and chunks."""
    rng = random.Random(seed)
    phrases = [[rng.randrange(2, vocab) for _ in range(rng.randrange(2, 7))] for _ in range(5)]
    tokens = [BOS]
    while len(tokens) < length:
        roll = rng.random()
        if roll < 0.04:
            tokens.append(BOS)
        elif roll < 0.5:
            tokens.extend(rng.choice(phrases))
        else:
            tokens.append(rng.randrange(2, vocab))
    return torch.tensor(tokens[:length], dtype=torch.long)


# -- the slow reference: dictionaries, one token at a time, score before update -------------


def reference_hash(context: list[int], order: int) -> int:
    h = OFF
    for x in context:  # oldest first
        h = ((h ^ ((x + SALT) & MASK)) * MUL) & MASK
    h = (h ^ ((order + ORDM) & MASK)) & MASK
    return (h * MUL) & MASK


def reference_bucket(h: int, buckets: int, hash_mode: str) -> int:
    if hash_mode == "legacy":
        return h % buckets
    return h >> (63 - int(math.log2(buckets)))


class ReferenceExpert:
    def __init__(self, orders, buckets, alpha):
        self.orders, self.buckets, self.alpha = orders, buckets, alpha
        self.clear()

    def clear(self):
        self.count = [defaultdict(int) for _ in range(self.orders)]
        self.total = [defaultdict(int) for _ in range(self.orders)]

    def contexts(self, padded, t, hash_mode):  # padded = [0]*8 + tokens; target position t
        return [reference_bucket(reference_hash(padded[8 + t - k:8 + t], k), self.buckets, hash_mode)
                for k in range(1, self.orders + 1)]

    def probability(self, buckets, target, q0):
        q = q0
        for k, b in enumerate(buckets):
            q = (self.count[k][(b, target)] + self.alpha * q) / (self.total[k][b] + self.alpha)
        return q

    def add(self, buckets, target):
        for k, b in enumerate(buckets):
            self.count[k][(b, target)] += 1
            self.total[k][b] += 1


def reference_logprobs(tokens: torch.Tensor, h: tg.Hyperparameters, chunk_tokens: int) -> torch.Tensor:
    tokens = tokens.tolist()
    vocab, eps = h.vocab_size, h.dc_eps_uni
    reset = h.dc_local_reset if h.dc_doc_reset else "none"
    experts = [ReferenceExpert(h.dc_order_g, h.dc_buckets_g, h.dc_alpha_g),
               ReferenceExpert(h.dc_order_l, h.dc_buckets_l, h.dc_alpha_l)]
    unigram, seen, bos_seen, open_segment = defaultdict(int), 0, 0, None
    padded, out = [0] * 8 + tokens, []
    for i in range(len(tokens) - 1):
        t, target = i + 1, tokens[i + 1]
        bos_seen += tokens[i] == BOS  # BOS among the context tokens[0..i]
        segment = {"none": 0, "chunk": i // chunk_tokens, "doc": bos_seen}[reset]
        if segment != open_segment:
            experts[1].clear()
            open_segment = segment
        q0 = (unigram[target] + eps) / (seen + eps * vocab)
        buckets = [e.contexts(padded, t, h.dc_hash) for e in experts]
        out.append([math.log(e.probability(b, target, q0)) for e, b in zip(experts, buckets)])
        for e, b in zip(experts, buckets):
            e.add(b, target)
        unigram[target] += 1
        seen += 1
    return torch.tensor(out, dtype=torch.float64)


def tolerance(h):  # published mode computes the expert probabilities in float32
    return dict(rtol=0, atol=2e-5) if h.dc_hash == "legacy" else dict(rtol=0, atol=1e-12)


# -- tests -----------------------------------------------------------------------------------


def test_hash_matches_the_published_definition_with_large_token_ids():
    tokens = torch.randint(0, 8192, (60,), generator=torch.Generator().manual_seed(1))
    start, end = 3, 59
    hashes = tg.context_hashes(tokens, start, end, 8)
    padded = [0] * 8 + tokens.tolist()
    for order in range(1, 9):
        expected = [reference_hash(padded[8 + i + 1 - order:8 + i + 1], order) for i in range(start, end)]
        assert hashes[order - 1].tolist() == expected
    # The stream start reads as zeros.
    assert tg.context_hashes(tokens, 0, 2, 3)[2].tolist() == [reference_hash([0, 0, int(tokens[0])], 3),
                                                               reference_hash([0] + tokens[:2].tolist(), 3)]


MODES = [(hash_mode, reset) for hash_mode in ("legacy", "mixed") for reset in ("chunk", "doc", "none")]


@pytest.mark.parametrize("hash_mode,reset", MODES)
def test_vectorized_experts_match_the_slow_reference(hash_mode, reset):
    h = config(dc_hash=hash_mode, dc_local_reset=reset)
    tokens = make_stream(700, h.vocab_size, seed=2)
    for chunk_tokens in (37, 300):
        got = tg.ppm_logprobs(tokens, h, chunk_tokens)
        assert got.dtype == torch.float64 and got.shape == (tokens.numel() - 1, 2)
        torch.testing.assert_close(got, reference_logprobs(tokens, h, chunk_tokens), **tolerance(h))


@pytest.mark.parametrize("hash_mode,reset", [("legacy", "chunk"), ("mixed", "doc")])
def test_published_sizes_match_the_slow_reference(hash_mode, reset):
    h = tg.Hyperparameters.from_env({"DC_HASH": hash_mode, "DC_LOCAL_RESET": reset, **PUBLISHED})
    rng = random.Random(3)
    base = [rng.randrange(2, 8192) for _ in range(40)]  # ids above 2^11 exercise the hash's high bits
    tokens = torch.tensor([BOS] + [rng.choice(base) for _ in range(250)] + [BOS] + base * 3)
    got = tg.ppm_logprobs(tokens, h, 100)
    torch.testing.assert_close(got, reference_logprobs(tokens, h, 100), **tolerance(h))


def test_doc_reset_zero_never_resets_the_local_expert():
    tokens = make_stream(300, 50, seed=4)
    never = tg.ppm_logprobs(tokens, config(dc_local_reset="none"), 64)
    assert torch.equal(tg.ppm_logprobs(tokens, config(dc_doc_reset=0, dc_local_reset="doc"), 64), never)
    assert torch.equal(tg.ppm_logprobs(tokens, config(dc_doc_reset=0, dc_local_reset="chunk"), 64), never)


@pytest.mark.parametrize("hash_mode,reset", [("mixed", "doc"), ("mixed", "none"), ("legacy", "doc")])
def test_chunk_size_does_not_change_doc_or_none_results(hash_mode, reset):
    h = config(dc_hash=hash_mode, dc_local_reset=reset)
    tokens = make_stream(260, h.vocab_size, seed=5)
    whole = tg.ppm_logprobs(tokens, h, 4096)
    assert torch.equal(tg.ppm_logprobs(tokens, h, 7), whole)
    assert torch.equal(tg.ppm_logprobs(tokens, h, 1), whole)


@pytest.mark.parametrize("hash_mode,reset", [("legacy", "chunk"), ("mixed", "doc")])
def test_changing_later_tokens_leaves_earlier_targets_unchanged(hash_mode, reset):
    h = config(dc_hash=hash_mode, dc_local_reset=reset)
    tokens = make_stream(300, h.vocab_size, seed=8)
    neural_nll = torch.rand(299, generator=torch.Generator().manual_seed(0)) * 5
    before = tg.ppm_logprobs(tokens, h, 64)
    mixed_before, _ = tg.mix_logprobs(tokens, neural_nll, h, 64)
    for first_changed in (40, 64, 129, 200):
        changed = tokens.clone()
        changed[first_changed:] = make_stream(300 - first_changed, h.vocab_size, seed=first_changed)
        changed[first_changed + 3] = BOS  # a new document boundary inside the changed part
        kept = first_changed - 1  # targets i < first_changed - 1 read only tokens[:first_changed]
        assert torch.equal(tg.ppm_logprobs(changed, h, 64)[:kept], before[:kept])
        assert torch.equal(tg.mix_logprobs(changed, neural_nll, h, 64)[0][:kept], mixed_before[:kept])


def test_a_target_never_counts_toward_its_own_prediction():
    h = config(dc_hash="mixed", dc_local_reset="none")
    tokens = torch.tensor([BOS, 7, 7, 7, 7, 7])
    got = tg.ppm_logprobs(tokens, h, 4096)  # one chunk: all targets scored in parallel
    assert torch.allclose(got[0], torch.full((2,), -math.log(50), dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(got, reference_logprobs(tokens, h, 4096), rtol=0, atol=1e-12)


def test_published_chunk_reset_keeps_no_local_tables():
    h = config(dc_hash="legacy", dc_local_reset="chunk")
    bank = tg.ExpertBank(h, h.vocab_size, torch.device("cpu"))
    tokens = make_stream(200, h.vocab_size, seed=9)
    for start, end in tg.chunk_bounds(199, 50):
        bank.score_and_update(tokens, start, end)
    assert bank.experts[1].table_bytes() == 0 and bank.experts[0].table_bytes() > 0


def test_document_tables_keep_only_the_document_that_continues():
    h = config(dc_local_reset="doc")
    bank = tg.ExpertBank(h, h.vocab_size, torch.device("cpu"))
    local = bank.experts[1]
    tokens = torch.tensor([BOS, 5, BOS, 6, BOS, 8, 9, BOS, 11])
    bank.score_and_update(tokens, 0, 4)  # two documents; the last target is the BOS that ends the second
    assert local.table_bytes() == 0
    bank.score_and_update(tokens, 4, 6)  # the third document goes on after the chunk
    assert local.counts[0].indices.numel() == 2
    bank.score_and_update(tokens, 6, 7)  # one target, the BOS that ends it
    assert local.table_bytes() == 0


@pytest.mark.parametrize("experts", ["hashed", "sharp"])
def test_chunks_must_tile_the_stream_in_order(experts):
    h = config(dc_experts=experts)
    bank = tg.expert_bank(h, h.vocab_size, torch.device("cpu"))
    tokens = make_stream(100, h.vocab_size)
    bank.score_and_update(tokens, 0, 10)
    with pytest.raises(ValueError, match="expected start 10"):
        bank.score_and_update(tokens, 20, 30)
    with pytest.raises(ValueError, match="of a stream of 100 tokens"):  # the last target is tokens[99]
        bank.score_and_update(tokens, 10, 100)


def test_buckets_must_be_a_power_of_two():
    with pytest.raises(ValueError):
        tg.ppm_logprobs(make_stream(20, 50), config(dc_buckets_g=12), 8)


def test_mixer_update_on_a_hand_computed_example():
    mixer = tg.FixedShareMixer((0.90, 0.07, 0.03), 0.005, torch.device("cpu"))
    # Mean chunk losses L = (2, 3, 4) nats: post ∝ (0.9, 0.07·e^-1, 0.03·e^-2)
    #   = (0.9, 0.0257516, 0.0040601) / 0.9298116 = (0.9679380, 0.0276955, 0.0043665);
    # w = 0.995·post + 0.005·prior = (0.9675983, 0.0279070, 0.0044947).
    logprobs = -torch.tensor([[1.0, 2.5, 3.0], [3.0, 3.5, 5.0]], dtype=torch.float64)
    mixer.update(logprobs)
    expected = torch.tensor([0.9675983, 0.0279070, 0.0044947], dtype=torch.float64)
    torch.testing.assert_close(mixer.weights, expected, rtol=0, atol=1e-7)
    assert abs(mixer.weights.sum().item() - 1) < 1e-15


def test_mixer_weights_stay_above_the_prior_floor_and_sum_to_one():
    mixer = tg.FixedShareMixer((0.90, 0.07, 0.03), 0.005, torch.device("cpu"))
    for _ in range(200):  # the network wins every chunk by far
        mixer.update(-torch.tensor([[1.0, 50.0, 50.0]], dtype=torch.float64))
        assert abs(mixer.weights.sum().item() - 1) < 1e-12
        assert (mixer.weights >= 0.005 * mixer.prior - 1e-15).all()
    # The published final state: exactly the fixed-share floor (published).
    torch.testing.assert_close(mixer.weights, torch.tensor([0.9995, 0.00035, 0.00015], dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_each_chunk_is_mixed_with_the_weights_fixed_before_it():
    h = config(dc_hash="mixed", dc_local_reset="doc")
    tokens = make_stream(160, h.vocab_size, seed=10)
    neural_nll = torch.rand(159, generator=torch.Generator().manual_seed(1)) * 4
    stats = {"entropy": torch.rand(159), "top_prob": torch.rand(159)}  # accepted, unused by fixed share
    mixed, mixer = tg.mix_logprobs(tokens, neural_nll, h, 50, network_stats=stats)
    assert mixed.dtype == torch.float64 and mixed.shape == (159,)
    components = torch.cat([-neural_nll.double().unsqueeze(1), tg.ppm_logprobs(tokens, h, 50)], 1)
    weights = prior = torch.tensor(h.dc_prior, dtype=torch.float64)
    for start, end in tg.chunk_bounds(159, 50):  # chunk 0 uses the prior, then the published update
        chunk = components[start:end]
        torch.testing.assert_close(mixed[start:end], (chunk.exp() @ weights).log(), rtol=0, atol=1e-12)
        losses = -chunk.mean(0)
        posterior = weights * torch.exp(-(losses - losses.min()))
        weights = 0.995 * posterior / posterior.sum() + 0.005 * prior
    torch.testing.assert_close(mixer.weights, weights, rtol=0, atol=1e-15)


def test_evaluation_hook_matches_mix_logprobs_and_logs_each_bpb():
    h = config(dc_hash="mixed", dc_local_reset="doc")
    tokens = make_stream(150, h.vocab_size, seed=11)
    neural_nll = torch.rand(149, generator=torch.Generator().manual_seed(2)) * 4
    target_bytes = torch.randint(1, 5, (149,)).double()
    clock = tg.DualClock(h, h.vocab_size, "cpu")
    for start, end in tg.chunk_bounds(149, 40):
        n = end - start
        clock.on_chunk(SimpleNamespace(tokens=tokens, target_start=start, target_end=end,
                                       nll=neural_nll[start:end], entropy=torch.rand(n),
                                       top_prob=torch.rand(n), target_bytes=target_bytes[start:end]))
    fields = clock.log_fields()
    mixed, mixer = tg.mix_logprobs(tokens, neural_nll, h, 40)
    experts = tg.ppm_logprobs(tokens, h, 40)
    bits = lambda nats: nats / math.log(2) / target_bytes.sum().item()
    assert fields["mixed_bpb"] == pytest.approx(bits(-mixed.sum().item()), abs=1e-7)
    assert fields["neural_bpb"] == pytest.approx(bits(neural_nll.double().sum().item()), abs=1e-7)
    assert fields["global_bpb"] == pytest.approx(bits(-experts[:, 0].sum().item()), abs=1e-7)
    assert fields["local_bpb"] == pytest.approx(bits(-experts[:, 1].sum().item()), abs=1e-7)
    assert fields["mixer_weights"] == ",".join(f"{w:.5f}" for w in mixer.weights.tolist())
    assert fields["dc_time_ms"] > 0 and fields["dc_table_mib"] == round(clock.peak_table_bytes / 2**20, 1)
    assert clock.peak_table_bytes >= clock.bank.table_bytes() > 0


# -- sharp experts and the per-token gate ------------------------------------------

SHARP = {"VOCAB_SIZE": "50", "DC_SHARP_ORDERS": "4", "DC_GATE_STEPS": "5", "DC_ESCAPE_STEPS": "3", "DC_GATE_SAMPLE_TOKENS": "32"}


def sharp_config(**overrides) -> tg.Hyperparameters:
    env = dict(SHARP)
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return tg.Hyperparameters.from_env(env)


def initial_escapes(h: tg.Hyperparameters) -> list[list[tuple[float, float, float]]]:
    """(d, b, e) per expert and order as SharpExperts starts them (they stay so with no steps)."""
    experts = tg.SharpExperts(h, h.vocab_size, torch.device("cpu"))
    soft = lambda x: math.log1p(math.exp(x))
    return [[(1 / (1 + math.exp(-r[0])), soft(r[1]), soft(r[2])) for r in e.tolist()] for e in experts.escapes]


def sharp_reference(tokens: torch.Tensor, h: tg.Hyperparameters) -> torch.Tensor:
    """Exact contexts in dictionaries, one token at a time, scored before the counts are updated:
    the global expert never resets, the document expert clears when the document changes (a
    target's document counts the BOS in its context). Escapes at their initial values."""
    tokens, vocab, orders = tokens.tolist(), h.vocab_size, h.dc_sharp_orders
    escapes, padded = initial_escapes(h), [vocab] * orders + tokens
    tables, document, open_document, out = [defaultdict(int), defaultdict(int)], 0, 0, []
    for i in range(len(tokens) - 1):
        document += tokens[i] == BOS
        if document != open_document:
            tables[1].clear()
            open_document = document
        target, q, row = tokens[i + 1], 1 / vocab, []
        contexts = [tuple(padded[orders + i + 1 - k:orders + i + 1]) for k in range(orders + 1)]
        for table, expert_escapes, orders_e in zip(tables, escapes, (orders, h.dc_document_orders)):
            for k, context in enumerate(contexts[:orders_e + 1]):  # the document expert starts from the global q
                count, total, distinct = table["c", context, target], table["n", context], table["t", context]
                d, b, e = expert_escapes[k]
                if total:
                    q = (max(count - d, 0) + ((d + b) * distinct + e) * q) / (total + b * distinct + e)
            row.append(math.log(q))
        out.append(row)
        for table in tables:
            for context in contexts:
                table["t", context] += table["c", context, target] == 0
                table["c", context, target] += 1
                table["n", context] += 1
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("orders, document_orders", [(1, 1), (4, 2), (6, 6)])
def test_sharp_experts_match_the_slow_reference_for_every_chunk_size(orders, document_orders):
    h = sharp_config(dc_sharp_orders=orders, dc_document_orders=document_orders, dc_escape_steps=0)
    tokens = make_stream(500, h.vocab_size, seed=12)
    expected = sharp_reference(tokens, h)
    for chunk_tokens in (1, 7, 64, 4096):
        got = tg.ppm_logprobs(tokens, h, chunk_tokens)
        assert got.dtype == torch.float64 and got.shape == (tokens.numel() - 1, 3)  # global, document, match
        torch.testing.assert_close(got[:, :2], expected, rtol=0, atol=1e-12)


def test_sharp_experts_at_the_published_vocabulary_size():
    h = tg.Hyperparameters.from_env({"DC_ESCAPE_STEPS": "0"})
    rng = random.Random(13)
    base = [rng.randrange(2, 8192) for _ in range(30)]
    tokens = torch.tensor([BOS] + [rng.choice(base) for _ in range(200)] + [BOS] + base * 3)
    torch.testing.assert_close(tg.ppm_logprobs(tokens, h, 50)[:, :2], sharp_reference(tokens, h), rtol=0, atol=1e-12)


def test_pair_table_agrees_with_dictionaries_through_growth_collisions_and_documents():
    table = tg.PairTable(torch.device("cpu"), capacity=8)
    expected, document, entry_of = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0]), {}
    generator = torch.Generator().manual_seed(14)
    for step in range(30):
        # Keys differing only in low bits and runs of neighbours crowd the same slots.
        keys = torch.cat([torch.randint(0, 64, (20,), generator=generator) << 40,
                          torch.randint(0, 1 << 54, (20,), generator=generator), torch.arange(step * 5, step * 5 + 9)])
        keys = keys.unique()
        values = torch.randint(0, 5, (keys.numel(), 2), generator=generator) << torch.tensor([0, 24])
        slot, counts, entries = table.find(keys)  # may grow the table: counts and entries move along
        for k in keys.tolist():  # absent keys are numbered in the order they are given
            entry_of.setdefault(k, len(entry_of))
        assert entries.tolist() == [entry_of[k] for k in keys.tolist()]
        assert counts.tolist() == [expected[k] for k in keys.tolist()]
        assert slot.unique().numel() == keys.numel() and torch.equal(table.keys[slot], keys)
        assert table.document_counts(slot).tolist() == [document[k] for k in keys.tolist()]
        table.add(slot, values)
        if step % 7 == 6:  # a new document
            table.clear_document()
            document.clear()
        chosen = torch.randperm(keys.numel(), generator=generator)[:keys.numel() // 2]
        table.document_add(slot[chosen], values[chosen] % 3)
        for k, (a, b) in zip(keys.tolist(), values.tolist()):
            expected[k][0] += a
            expected[k][1] += b
        for k, (a, b) in zip(keys[chosen].tolist(), (values[chosen] % 3).tolist()):
            document[k][0] += a
            document[k][1] += b
        assert table.size == len(expected) <= tg.TABLE_MAX_LOAD * table.keys.numel()
    assert sorted(table.keys[table.keys != tg.EMPTY].tolist()) == sorted(expected)
    assert max(b for _, b in expected.values()) > 1 << 28  # the second count keeps its high bits
    assert table.keys.numel() > 64  # it did grow


def test_pair_keys_are_exact_pair_values_and_never_the_empty_marker():
    """A key is (context name)·V + token: an entry number (< 2^31) or ROOT + 1 + k (k <= 17) times the
    largest vocabulary, plus a token, stays far below 2^63 and is >= 0, while EMPTY is negative."""
    assert tg.EMPTY < 0 and (tg.ROOT + 18) * 65536 < 1 << 63
    h = sharp_config(dc_sharp_orders=6, dc_document_orders=2)
    experts = tg.SharpExperts(h, h.vocab_size, torch.device("cpu"))
    tokens = make_stream(400, h.vocab_size, seed=23)
    for start, end in tg.chunk_bounds(399, 50):
        experts.score_and_update(tokens, start, end)
    keys = experts.table.keys[experts.table.keys != tg.EMPTY]
    assert keys.numel() == experts.table.size and bool((keys >= 0).all())
    names = keys // h.vocab_size  # every context name is an entry number or one of the fixed roots
    assert bool(((names < experts.table.size) | (names >= tg.ROOT)).all())


def test_grown_table_keeps_the_linear_probing_invariant():
    """Growth places pairs by sorting their new homes (no probing): every key must sit at or after its
    home with no empty slot in between (else find would stop early), wrapping keys included."""
    table = tg.PairTable(torch.device("cpu"), capacity=64)
    generator = torch.Generator().manual_seed(24)
    candidates = torch.randint(0, 1 << 50, (100_000,), generator=generator).unique()
    last = candidates[tg.shift_right(candidates * tg.HASH_MUL, 54) >= 1020][:12]  # homes 1020..1023 of 1024
    keys = torch.cat([last, candidates[:28]])  # the twelve crowd four slots at the end: some wrap around
    table.find(keys)
    table.reserve(400)  # grows from 64 to 1024 slots
    assert table.keys.numel() == 1024
    more = torch.randint(0, 1 << 50, (300,), generator=generator).unique()
    slot, counts, entries = table.find(torch.cat([keys, more]))
    assert torch.equal(table.keys[slot], torch.cat([keys, more])) and table.size == keys.numel() + more.numel()
    assert torch.equal(entries[:keys.numel()], torch.arange(keys.numel()))  # the old pairs kept their names
    capacity, occupied = table.keys.numel(), table.keys != tg.EMPTY
    for key, at in zip(table.keys[occupied].tolist(), occupied.nonzero().squeeze(1).tolist()):
        home = table._home(torch.tensor([key])).item()
        gap = [(home + i) % capacity for i in range((at - home) % capacity)]
        assert all(occupied[s] for s in gap), (key, home, at)


def network_pass(length: int, vocab: int, seed: int) -> torch.Tensor:
    """(length, V) a made-up network's normalized distribution at each position."""
    return torch.softmax(torch.randn(length, vocab, generator=torch.Generator().manual_seed(seed)).double() * 2, 1)


def network_scores(network: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Per-target NLL of tokens[1:] and the context-only statistics (entropy, top probability)."""
    n = tokens.numel() - 1
    nll = -network[:n].gather(1, tokens[1:].unsqueeze(1))[:, 0].log()
    stats = {"entropy": -(network[:n] * network[:n].log()).sum(1).float(), "top_prob": network[:n].max(1).values.float()}
    return nll, stats  # float64, so that the network part sums to 1 as exactly as the rest


@pytest.fixture
def gate_record(monkeypatch):
    """Every TokenGate.mix call's per-position weights, as the mixer used them, and its gate parameters."""
    calls, mix = [], tg.TokenGate.mix

    def recording_mix(self, logprobs, features):
        gate = self.gate.detach().clone()
        mixed = mix(self, logprobs, features)
        calls.append((self.used.clone(), gate))
        return mixed

    monkeypatch.setattr(tg.TokenGate, "mix", recording_mix)
    return calls


@pytest.mark.parametrize("experts", ["sharp", "hashed"])
def test_gated_mixture_over_all_candidates_sums_to_one_and_the_gate_ignores_the_target(experts, gate_record):
    h = sharp_config(dc_experts=experts, dc_local_reset="doc")
    tokens, chunk_tokens = make_stream(230, h.vocab_size, seed=15), 64
    network = network_pass(tokens.numel(), h.vocab_size, seed=16)
    full_nll, full_stats = network_scores(network, tokens)
    reference, _ = tg.mix_logprobs(tokens, full_nll, h, chunk_tokens, full_stats)
    bos_target = next(i for i in range(100, 229) if tokens[i] == BOS)
    for i in (0, 5, 63, 64, 130, bos_target, 228):  # chunk starts and ends, a first target of a document
        start = i - i % chunk_tokens
        clock = tg.DualClock(h, h.vocab_size, "cpu")
        for chunk_start, chunk_end in tg.chunk_bounds(start, chunk_tokens):
            clock.mix_chunk(tokens, chunk_start, chunk_end, full_nll[chunk_start:chunk_end],
                            {k: v[chunk_start:chunk_end] for k, v in full_stats.items()})
        probabilities, weights = [], []
        for candidate in range(h.vocab_size):  # the stream up to i, then each candidate for i + 1
            stream = torch.cat([tokens[:i + 1], torch.tensor([candidate])])
            nll, stats = network_scores(network, stream)
            branch = copy.deepcopy(clock)
            _, mixed = branch.mix_chunk(stream, start, i + 1, nll[start:], {k: v[start:] for k, v in stats.items()})
            probabilities.append(mixed[-1].exp().item())
            weights.append(gate_record[-1][0][-1])
        assert abs(sum(probabilities) - 1) < 1e-12
        assert math.log(probabilities[int(tokens[i + 1])]) == pytest.approx(reference[i].item(), abs=1e-12)
        assert all(torch.equal(w, weights[0]) for w in weights)  # the weights never see the target


def test_gate_and_escapes_for_a_chunk_learn_only_from_earlier_chunks(gate_record):
    h = sharp_config()
    tokens, chunk_tokens = make_stream(300, h.vocab_size, seed=17), 60
    nll, stats = network_scores(network_pass(300, h.vocab_size, seed=18), tokens)
    mixed, _ = tg.mix_logprobs(tokens, nll, h, chunk_tokens, stats)
    experts = tg.ppm_logprobs(tokens, h, chunk_tokens)
    gates = [gate for _, gate in gate_record]
    assert not torch.equal(gates[0], gates[-1])  # the gate does learn
    for first_changed in (61, 120, 200):  # a token inside chunk 1, the first target of chunk 2, ...
        changed = tokens.clone()
        changed[first_changed:] = make_stream(300 - first_changed, h.vocab_size, seed=first_changed)
        changed_nll, changed_stats = nll.clone(), {k: v.clone() for k, v in stats.items()}
        changed_nll[first_changed - 1:] = torch.rand(300 - first_changed) * 6
        changed_stats["entropy"][first_changed - 1:] = torch.rand(300 - first_changed)
        gate_record.clear()
        kept = first_changed - 1  # targets i < first_changed - 1 read only tokens[:first_changed]
        assert torch.equal(tg.mix_logprobs(changed, changed_nll, h, chunk_tokens, changed_stats)[0][:kept], mixed[:kept])
        assert torch.equal(tg.ppm_logprobs(changed, h, chunk_tokens)[:kept], experts[:kept])
        for chunk in range(kept // chunk_tokens + 1):  # every chunk up to the changed one: the same gate
            assert torch.equal(gate_record[chunk][1], gates[chunk])


def test_sharp_hook_matches_mix_logprobs_and_logs_each_bpb():
    h = sharp_config()
    tokens = make_stream(150, h.vocab_size, seed=19)
    neural_nll, stats = network_scores(network_pass(150, h.vocab_size, seed=20), tokens)
    target_bytes = torch.randint(1, 5, (149,)).double()
    clock = tg.DualClock(h, h.vocab_size, "cpu")
    for start, end in tg.chunk_bounds(149, 40):
        clock.on_chunk(SimpleNamespace(tokens=tokens, target_start=start, target_end=end,
                                       nll=neural_nll[start:end], entropy=stats["entropy"][start:end],
                                       top_prob=stats["top_prob"][start:end], target_bytes=target_bytes[start:end]))
    fields = clock.log_fields()
    mixed, mixer = tg.mix_logprobs(tokens, neural_nll, h, 40, stats)
    experts = tg.ppm_logprobs(tokens, h, 40)
    bits = lambda nats: nats / math.log(2) / target_bytes.sum().item()
    assert fields["mixed_bpb"] == pytest.approx(bits(-mixed.sum().item()), abs=1e-7)
    assert fields["global_bpb"] == pytest.approx(bits(-experts[:, 0].sum().item()), abs=1e-7)
    assert fields["local_bpb"] == pytest.approx(bits(-experts[:, 1].sum().item()), abs=1e-7)
    assert fields["match_bpb"] == pytest.approx(bits(-experts[:, 2].sum().item()), abs=1e-7)
    assert fields["mixer_weights"] == ",".join(f"{w:.5f}" for w in mixer.weights.tolist())
    assert abs(mixer.weights.sum().item() - 1) < 1e-12 and clock.peak_table_bytes > 0


def test_document_expert_keeps_only_the_document_that_continues():
    h = sharp_config(dc_sharp_orders=1, dc_document_orders=1, dc_escape_steps=0)
    experts = tg.SharpExperts(h, h.vocab_size, torch.device("cpu"))
    entries = lambda: experts.table.document_slots.numel() - 1  # the open document's pairs (a sentinel first)
    tokens = torch.tensor([BOS, 5, BOS, 6, BOS, 8, 9, BOS, 11])
    experts.score_and_update(tokens, 0, 4)  # two documents; the last target is the BOS that ends the second
    assert entries() == 0
    experts.score_and_update(tokens, 4, 6)  # the third document goes on after the chunk
    assert entries() == 5  # the empty pair (one per target), (8|BOS), (9|8) at orders 0, 1
    experts.score_and_update(tokens, 6, 7)  # one target, the BOS that ends it
    assert entries() == 0
