"""Proxy tuning (eq. 14-15): the log-space identities and the LogitsProcessor inside ``generate``.

The models are tiny seeded random ``LlamaForCausalLM`` (vocab 64, 2 layers, hidden 32) sharing one
vocabulary: the processor is checked against greedy decoding on the explicitly combined distribution,
recomputed from scratch at every step (no KV cache), with and without left padding.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from qstar_lib.lm.proxy import ProxyTuningLogitsProcessor, implicit_advantage, proxy_distribution, proxy_logits

VOCAB = 64
PAD, EOS = 0, 1
MAX_NEW = 8


def _tiny_llama(seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        # random init is nearly uniform over 64 tokens; a larger head makes the three models disagree
        model.lm_head.weight.data.mul_(20.0)
    return model.float().eval()


@pytest.fixture(scope="module")
def models():
    """(base, proxy, ref): three different seeded tiny models over one vocabulary."""
    return _tiny_llama(0), _tiny_llama(1), _tiny_llama(2)


def _left_padded_batch():
    """Two prompts of lengths 5 and 2 (token ids 2..63), left-padded with PAD: ids and mask, (2, 5)."""
    gen = torch.Generator().manual_seed(7)
    long = torch.randint(2, VOCAB, (5,), generator=gen)
    short = torch.randint(2, VOCAB, (2,), generator=gen)
    input_ids = torch.stack([long, torch.cat([torch.full((3,), PAD), short])])  # (2, 5)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])  # (2, 5)
    return input_ids, attention_mask


@torch.no_grad()
def _last_logits(model, ids, mask):
    """Next-token logits recomputed from the whole prefix, positions counted over real tokens, (B, V)."""
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).logits[:, -1]


def _greedy_reference(base, proxy, ref, beta, input_ids, attention_mask, n_new=MAX_NEW):
    """Greedy decoding on eq. 14 written out step by step; returns (tokens (B, n_new), scores list of (B, V))."""
    ids, mask = input_ids.clone(), attention_mask.clone()
    unfinished = torch.ones(ids.shape[0], dtype=torch.long)  # (B,)
    tokens, scores = [], []
    for _ in range(n_new):
        combined = proxy_logits(
            _last_logits(base, ids, mask), _last_logits(proxy, ids, mask), _last_logits(ref, ids, mask), beta
        )  # (B, V), eq. 14
        nxt = combined.argmax(-1) * unfinished + PAD * (1 - unfinished)  # (B,), as generate() pads finished rows
        unfinished = unfinished * (nxt != EOS).long()
        ids = torch.cat([ids, nxt[:, None]], dim=-1)
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=-1)
        tokens.append(nxt)
        scores.append(combined)
        if unfinished.sum() == 0:
            break
    return torch.stack(tokens, dim=1), scores


def _generate(base, input_ids, attention_mask, processors=None, **kw):
    return base.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        logits_processor=LogitsProcessorList(processors or []),
        do_sample=False,
        max_new_tokens=MAX_NEW,
        pad_token_id=PAD,
        eos_token_id=EOS,
        return_dict_in_generate=True,
        output_scores=True,
        **kw,
    )


# ----------------------------------------------------------------------------------------- identities


def test_log_space_sum_is_the_normalised_product_of_eq14():
    gen = torch.Generator().manual_seed(0)
    base, proxy, ref = (3.0 * torch.randn(4, VOCAB, generator=gen) for _ in range(3))  # (B, V) each
    # The combined logits reach |40| (beta 2.5): float32 rounds them to ~40 x 6e-8 = 2.4e-6, a relative error of the
    # probabilities, so 1e-5 (observed 3.3e-7: 30x); float64 (eps 2.2e-16): 1e-12 (observed 6e-16).
    for dtype, atol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        for beta in (0.0, 0.1, 0.5, 1.0, 2.5):
            combined = torch.softmax(proxy_logits(base.to(dtype), proxy.to(dtype), ref.to(dtype), beta), dim=-1)
            naive = proxy_distribution(base, proxy, ref, beta)  # (B, V), float64
            assert combined.dtype == dtype and torch.allclose(combined.double(), naive, atol=atol, rtol=0)


def test_implicit_advantage_is_the_optimal_advantage_of_eq15():
    """Proxy logits built from Q* (plus an arbitrary per-state shift) give exactly beta * (Q* - V*)."""
    gen = torch.Generator().manual_seed(1)
    q_star = torch.randn(3, VOCAB, generator=gen, dtype=torch.float64)  # (B, V)
    ref_logits = torch.randn(3, VOCAB, generator=gen, dtype=torch.float64)  # (B, V)
    log_pi_ref = torch.log_softmax(ref_logits, -1)  # (B, V)
    v_star = torch.logsumexp(log_pi_ref + q_star, dim=-1, keepdim=True)  # (B, 1), soft value under pi_ref
    shift = 100.0 * torch.randn(3, 1, generator=gen, dtype=torch.float64)  # (B, 1), per-state constant
    proxy = q_star + log_pi_ref + shift  # (B, V): logits of pi_proxy = pi_ref * exp(Q* - V*)
    beta = 0.7
    advantage = implicit_advantage(proxy, ref_logits, beta)  # (B, V)
    assert torch.allclose(advantage, beta * (q_star - v_star), atol=1e-9)
    # eq. 15: softmax(base + advantage) = pi_base * exp(beta (Q* - V*)), normalised
    base = torch.randn(3, VOCAB, generator=gen, dtype=torch.float64)  # (B, V)
    eq15 = torch.softmax(base, -1) * torch.exp(beta * (q_star - v_star))  # (B, V)
    eq15 = eq15 / eq15.sum(-1, keepdim=True)
    assert torch.allclose(torch.softmax(proxy_logits(base, proxy, ref_logits, beta), -1), eq15, atol=1e-12)


def test_per_state_shifts_do_not_change_the_advantage():
    gen = torch.Generator().manual_seed(2)
    proxy, ref = torch.randn(2, 5, VOCAB, generator=gen, dtype=torch.float64)  # (B, V) each
    shift_p, shift_r = torch.randn(2, 5, 1, generator=gen, dtype=torch.float64)  # (B, 1) each
    assert torch.allclose(implicit_advantage(proxy + shift_p, ref + shift_r, 1.3), implicit_advantage(proxy, ref, 1.3))


def test_beta_zero_and_masked_tokens():
    gen = torch.Generator().manual_seed(3)
    base, proxy, ref = torch.randn(3, 2, VOCAB, generator=gen)  # (B, V) each
    assert torch.equal(proxy_logits(base, proxy, ref, 0.0), base)
    base[:, 5] = float("-inf")  # a token another processor forbade stays forbidden
    assert torch.isinf(proxy_logits(base, proxy, ref, 1.0)[:, 5]).all()


def test_mismatched_vocabularies_are_refused():
    with pytest.raises(ValueError, match="shared vocabulary"):
        proxy_logits(torch.zeros(1, 8), torch.zeros(1, 9), torch.zeros(1, 8), 1.0)
    with pytest.raises(ValueError, match="beta"):
        ProxyTuningLogitsProcessor(None, None, -1.0)


# ------------------------------------------------------------------------------------ inside generate


@pytest.mark.parametrize("use_cache", [True, False])
def test_processor_matches_greedy_on_the_combined_distribution(models, use_cache):
    base, proxy, ref = models
    input_ids, attention_mask = _left_padded_batch()
    beta = 1.0
    processor = ProxyTuningLogitsProcessor(proxy, ref, beta, attention_mask=attention_mask, use_cache=use_cache)
    out = _generate(base, input_ids, attention_mask, [processor])
    tokens, scores = _greedy_reference(base, proxy, ref, beta, input_ids, attention_mask)
    assert torch.equal(out.sequences[:, input_ids.shape[1] :], tokens)
    for got, want in zip(out.scores, scores):
        assert torch.allclose(got, want, atol=1e-4)
    # the proxy changes the outcome: otherwise this test would not distinguish anything
    plain = _generate(base, input_ids, attention_mask)
    assert not torch.equal(plain.sequences, out.sequences)


def test_left_padding_gives_each_row_its_unpadded_answer(models):
    base, proxy, ref = models
    input_ids, attention_mask = _left_padded_batch()
    processor = ProxyTuningLogitsProcessor(proxy, ref, 1.0, attention_mask=attention_mask)
    batch = _generate(base, input_ids, attention_mask, [processor])
    for row in range(input_ids.shape[0]):
        ids = input_ids[row, attention_mask[row].bool()][None]  # (1, T_row)
        mask = torch.ones_like(ids)
        alone = _generate(base, ids, mask, [ProxyTuningLogitsProcessor(proxy, ref, 1.0)])
        new_alone = alone.sequences[0, ids.shape[1] :]
        new_batch = batch.sequences[row, input_ids.shape[1] :][: new_alone.shape[0]]
        assert torch.equal(new_batch, new_alone)


def test_pad_token_id_infers_left_padding(models):
    base, proxy, ref = models
    input_ids, attention_mask = _left_padded_batch()
    from_mask = ProxyTuningLogitsProcessor(proxy, ref, 0.5, attention_mask=attention_mask)
    from_pad = ProxyTuningLogitsProcessor(proxy, ref, 0.5, pad_token_id=PAD)
    explicit = _generate(base, input_ids, attention_mask, [from_mask])
    inferred = _generate(base, input_ids, attention_mask, [from_pad])
    assert torch.equal(explicit.sequences, inferred.sequences)


def test_beta_zero_leaves_generation_unchanged(models):
    base, proxy, ref = models
    input_ids, attention_mask = _left_padded_batch()
    plain = _generate(base, input_ids, attention_mask)
    steered = _generate(base, input_ids, attention_mask, [ProxyTuningLogitsProcessor(proxy, ref, 0.0)])
    assert torch.equal(plain.sequences, steered.sequences)


def test_same_model_as_proxy_and_ref_changes_nothing(models):
    """pi_proxy = pi_ref means a zero advantage at every step, for any beta."""
    base, proxy, _ = models
    input_ids, attention_mask = _left_padded_batch()
    plain = _generate(base, input_ids, attention_mask)
    processor = ProxyTuningLogitsProcessor(proxy, proxy, 3.0, attention_mask=attention_mask)
    steered = _generate(base, input_ids, attention_mask, [processor])
    assert torch.equal(plain.sequences, steered.sequences)
    for got, want in zip(steered.scores, plain.scores):
        assert torch.allclose(got, want, atol=1e-5)


def test_processor_is_reusable_and_works_with_beams(models):
    """A second generate call (new prefix) and beam search (reordered rows) drop the cache correctly."""
    base, proxy, ref = models
    input_ids, attention_mask = _left_padded_batch()
    cached = ProxyTuningLogitsProcessor(proxy, ref, 1.0, attention_mask=attention_mask)
    naive = ProxyTuningLogitsProcessor(proxy, ref, 1.0, attention_mask=attention_mask, use_cache=False)
    first = _generate(base, input_ids, attention_mask, [cached])
    again = _generate(base, input_ids, attention_mask, [cached])
    assert torch.equal(first.sequences, again.sequences)
    beams_cached = _generate(base, input_ids, attention_mask, [cached], num_beams=3)
    beams_naive = _generate(base, input_ids, attention_mask, [naive], num_beams=3)
    assert torch.equal(beams_cached.sequences, beams_naive.sequences)


# ----------------------------------------------------------------------------------------------- batched summaries


def test_steered_summaries_batch_like_one_prompt_at_a_time(tiny_lm, random_lm):
    """Left-padded batches steer each prompt exactly as it is steered alone, and match a hand-made generate."""
    from qstar_lib.lm.decoding import first_paragraph, generate_summaries
    from qstar_lib.lm.proxy import steered_summaries

    base, tok = tiny_lm
    proxy, ref = (random_lm(tok, seed) for seed in (11, 12))
    prompts = ["POST: He earns 38k. TL;DR:", "The quick brown fox", "Q:", "A much longer prompt about a cat and a hat"]
    kw = dict(max_new_tokens=10, progress=False, stop_at_newline=False)
    batched = steered_summaries(base, proxy, ref, tok, prompts, 1.0, batch_size=3, **kw)
    alone = [steered_summaries(base, proxy, ref, tok, [p], 1.0, batch_size=1, **kw)[0] for p in prompts]
    assert batched == alone
    ids = tok(prompts[2], add_special_tokens=False, return_tensors="pt").input_ids  # (1, P)
    with torch.inference_mode():
        out = base.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=10,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            logits_processor=LogitsProcessorList([ProxyTuningLogitsProcessor(proxy, ref, 1.0)]),
        )
    assert batched[2] == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).rstrip()
    plain = generate_summaries(base, tok, prompts, batch_size=3, **kw)
    assert steered_summaries(base, proxy, ref, tok, prompts, 0.0, batch_size=3, **kw) == plain  # beta 0: unsteered
    assert batched != plain  # the steering changes something, so the test can tell
    assert (
        first_paragraph(batched[0])
        == steered_summaries(base, proxy, ref, tok, prompts[:1], 1.0, max_new_tokens=10, progress=False)[0]
    )  # newline stop: same first paragraph


def test_steering_the_base_by_sft_minus_base_is_the_sft_model(tiny_lm, random_lm):
    """Chapter 8's control: base + 1 * (log pi_sft - log pi_base) is log pi_sft, so steering the base model with
    the SFT-minus-base delta at strength 1 decodes what the SFT model decodes on its own."""
    from qstar_lib.lm.decoding import decode_summaries
    from qstar_lib.lm.proxy import steered_decodes

    base, tok = tiny_lm
    sft = random_lm(tok, 13)
    prompts = ["POST: He earns 38k. TL;DR:", "The quick brown fox", "Q:", "A much longer prompt about a cat and a hat"]
    kw = dict(max_new_tokens=12, progress=False, batch_size=2)
    steered = steered_decodes(base, sft, base, tok, prompts, 1.0, **kw)
    alone = decode_summaries(sft, tok, prompts, **kw)
    assert steered == alone  # same texts, token counts and stop reasons
    assert steered != decode_summaries(base, tok, prompts, **kw)  # and not the base model's
