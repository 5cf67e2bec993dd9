"""DualClock (SPEC §7): PPM experts and the fixed-share mixer.

The vectorized experts are checked against a slow dictionary-based reference that scores one
token at a time, in every hash and reset mode; plus normalization over all V ids, causality,
chunk-size invariance and the mixer's update. Small vocabularies and bucket counts make hash
collisions frequent; one case uses the published sizes and large token ids.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import train_gpt as tg

BOS = 1
MASK = (1 << 63) - 1
# The published hash constants, written out independently of train_gpt (SPEC §7.3).
MUL, OFF, SALT, ORDM = 0x9E3779B185EBCA87, 1469598103934665603, 0x9E3779B97F4A7C15, 0xA0761D6478BD642F

SMALL = {"VOCAB_SIZE": "50", "DC_BUCKETS_G": "16", "DC_BUCKETS_L": "16"}


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


# -- the full distribution over all V ids, from the experts' own tables ----------------------


def full_distributions(tokens: torch.Tensor, h: tg.Hyperparameters, chunk_tokens: int, targets: list[int]):
    """{target i: (V, experts) probabilities of every candidate for tokens[i+1]}: counts of each
    candidate from the expert's table plus earlier same-segment targets of the chunk, through
    train_gpt's back-off, with the bank's state as it is when the chunk is scored."""
    bank, vocab, out = tg.ExpertBank(h, h.vocab_size, tokens.device), h.vocab_size, {}
    for start, end in tg.chunk_bounds(tokens.numel() - 1, chunk_tokens):
        view = bank.view(tokens, start, end)
        for i in (i for i in targets if start <= i < end):
            j, earlier_targets = i - start, view.targets[:i - start]
            unigram = (bank.unigram.counts + torch.bincount(earlier_targets, minlength=vocab),
                       torch.tensor(bank.unigram.total + j))
            columns = []
            for expert in bank.experts:
                segments = view.segments(expert.reset)
                ids = segments.ids if segments.ids is not None else torch.full((end - start,), segments.first)
                counts = []
                for order in range(1, expert.orders + 1):
                    buckets = view.buckets(order, expert.buckets)
                    earlier = (buckets[:j] == buckets[j]) & (ids[:j] == ids[j])
                    count = torch.bincount(earlier_targets[earlier], minlength=vocab)
                    total = earlier.sum()
                    if expert.open_segment == int(ids[j]):
                        candidates = buckets[j] * vocab + torch.arange(vocab)
                        count = count + expert.counts[order - 1].lookup(candidates)
                        total = total + expert.totals[order - 1].lookup(buckets[j:j + 1])[0]
                    counts.append((count, total))
                columns.append(tg.backoff_probability(unigram, counts, expert.alpha, expert.eps, vocab,
                                                      expert.dtype))
            out[i] = torch.stack(columns, 1).double()
        bank.update(view)
    return out


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
    h = tg.Hyperparameters.from_env({"DC_HASH": hash_mode, "DC_LOCAL_RESET": reset})
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


@pytest.mark.parametrize("hash_mode,reset", [("legacy", "chunk"), ("mixed", "doc"), ("mixed", "none")])
def test_every_expert_distribution_sums_to_one_and_scores_the_target(hash_mode, reset):
    h = config(dc_hash=hash_mode, dc_local_reset=reset)
    tokens = make_stream(400, h.vocab_size, seed=6)
    chunk_tokens = 64
    targets = [0, 1, 5, 63, 64, 65, 100, 127, 128, 250, 333, 398]
    targets += [i for i in range(398) if tokens[i] == BOS][:4]  # first targets of documents
    scored = tg.ppm_logprobs(tokens, h, chunk_tokens)
    full = full_distributions(tokens, h, chunk_tokens, targets)
    for i in targets:
        sums = full[i].sum(0)
        torch.testing.assert_close(sums, torch.ones(2, dtype=torch.float64),
                                   rtol=0, atol=1e-5 if hash_mode == "legacy" else 1e-9)
        torch.testing.assert_close(full[i][int(tokens[i + 1])].log(), scored[i], rtol=0, atol=1e-12)


def test_mixture_of_full_distributions_is_normalized():
    h = config(dc_hash="mixed", dc_local_reset="doc")
    tokens = make_stream(200, h.vocab_size, seed=7)
    experts = full_distributions(tokens, h, 50, [120])[120]  # (V, 2)
    network = torch.softmax(torch.randn(h.vocab_size, dtype=torch.float64), 0)
    mixer = tg.FixedShareMixer((0.5, 0.3, 0.2), 0.005, torch.device("cpu"))
    mixed = mixer.mix(torch.cat([network.unsqueeze(1), experts], 1).log())
    assert abs(mixed.exp().sum().item() - 1) < 1e-12


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
        # The distribution of the first changed token itself is fixed before it is read.
        i = first_changed - 1
        assert torch.equal(full_distributions(changed, h, 64, [i])[i],
                           full_distributions(tokens, h, 64, [i])[i])


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


def test_chunks_must_tile_the_stream_in_order():
    h = config()
    bank = tg.ExpertBank(h, h.vocab_size, torch.device("cpu"))
    tokens = make_stream(100, h.vocab_size)
    bank.score_and_update(tokens, 0, 10)
    with pytest.raises(ValueError):
        bank.score_and_update(tokens, 20, 30)


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
    # The published final state: exactly the fixed-share floor (SPEC §7.5).
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
    for start, end in tg.chunk_bounds(159, 50):  # chunk 0 uses the prior, then SPEC §7.3's update
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
