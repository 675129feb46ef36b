"""qstar_lib.lm.logps against naive references: log-softmax gather, per-token log-probs, sums and rewards."""

from __future__ import annotations

import math

import pytest
import torch

from qstar_lib.dpo import dpo_loss
from qstar_lib.lm.collate import collate_pairs, encode_pairs, pad_batch
from qstar_lib.lm.logps import (
    eq16_per_state,
    forward_accepts,
    logits_as_soft_q,
    pair_logps,
    per_token_logps,
    per_token_rewards,
    prompt_shared_sequence_logps,
    score_pairs,
    selective_log_softmax,
    sequence_logps,
)
from qstar_lib.lm.models import clone_model


def naive_selective(logits, index):
    return torch.gather(logits.log_softmax(-1), dim=-1, index=index.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_selective_log_softmax_equals_the_naive_gather(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=g) * 4).to(dtype)  # (B, T, V)
    index = torch.randint(0, 50, (3, 7), generator=g)  # (B, T)
    got = selective_log_softmax(logits, index)
    assert got.dtype == dtype and got.shape == (3, 7)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(got.double(), naive_selective(logits, index).double(), atol=tol, rtol=0)


def naive_completion_logps(model, input_ids: list[int], completion_mask: list[int]) -> list[float]:
    """One unpadded sequence, full logits, a python loop over positions: the definition itself."""
    with torch.no_grad():
        logits = model(torch.tensor([input_ids])).logits[0].double()  # (T, V)
    out = [0.0] * len(input_ids)
    for t in range(1, len(input_ids)):
        if completion_mask[t]:
            out[t] = float(logits[t - 1].log_softmax(-1)[input_ids[t]])
    return out


def rows(encoded_pairs):
    """Chosen and rejected of every pair as separate encoded completions."""
    return [
        {"input_ids": p[f"{s}_input_ids"], "completion_mask": p[f"{s}_completion_mask"]}
        for p in encoded_pairs
        for s in ("chosen", "rejected")
    ]


def unpad(values, attention_mask):
    return [v[m.bool()].tolist() for v, m in zip(values, attention_mask)]


def scored_rows(model, encoded, pad_token_id, side="right"):
    """per_token_logps of one padded batch, returned per row without the padding."""
    batch = pad_batch(encoded, pad_token_id, side)
    return unpad(per_token_logps(model, **batch), batch["attention_mask"])


@pytest.fixture
def encoded(tiny_lm, pair_records):
    return rows(encode_pairs(pair_records, tiny_lm[1]))


def test_per_token_logps_equals_the_naive_reference(tiny_lm, encoded):
    model, tok = tiny_lm
    batch = pad_batch(encoded, tok.pad_token_id)
    with torch.no_grad():
        got = per_token_logps(model, **batch)  # (B, T)
    assert got.shape == batch["input_ids"].shape
    assert bool((got[:, 0] == 0).all()) and bool((got[batch["completion_mask"] == 0] == 0).all())
    for values, e in zip(unpad(got, batch["attention_mask"]), encoded):
        ref = naive_completion_logps(model, e["input_ids"], e["completion_mask"])
        assert max(abs(a - b) for a, b in zip(values, ref)) <= 1e-5


def test_prompt_shared_sequence_logps_equal_one_row_per_completion(tiny_lm):
    """One prompt, completions of different lengths (right padding inside the shared batch): each summed
    log-prob equals the full [prompt; completion] row scored alone."""
    from qstar_lib.lm.collate import encode_completion

    model, tok = tiny_lm
    prompt = "POST: my landlord kept the deposit after I moved out.\nTL;DR:"
    texts = [" He kept it.", " A landlord kept my deposit of two months after I left.", " no", " He kept it."]
    enc = [encode_completion(prompt, t, tok) for t in texts]
    n_prompt = enc[0]["n_prompt"]
    assert len({len(e["input_ids"]) for e in enc}) > 2  # padding is exercised
    got = prompt_shared_sequence_logps(model, enc[0]["input_ids"][:n_prompt], [e["input_ids"][n_prompt:] for e in enc])
    assert got.dtype == torch.float64 and got.shape == (len(texts),)
    for value, e in zip(got.tolist(), enc):
        batch = pad_batch([e], tok.pad_token_id)
        with torch.no_grad():
            alone = float(sequence_logps(per_token_logps(model, **batch).double(), batch["completion_mask"])[0])
        assert value == pytest.approx(alone, abs=1e-4)
    assert got[0] == got[3]
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        prompt_shared_sequence_logps(model, [], [[1]])
    with pytest.raises(ValueError, match="at least one token"):
        prompt_shared_sequence_logps(model, [1, 2], [[]])


def test_values_do_not_depend_on_padding_side_batch_composition_or_size(tiny_lm, encoded):
    model, tok = tiny_lm
    with torch.no_grad():
        right = scored_rows(model, encoded, tok.pad_token_id, "right")
        left = scored_rows(model, encoded, tok.pad_token_id, "left")
        alone = [scored_rows(model, [e], tok.pad_token_id)[0] for e in encoded]
        shuffled_order = [3, 0, 6, 1]
        mixed_rows = scored_rows(model, [encoded[i] for i in shuffled_order], tok.pad_token_id, "left")
        mixed = dict(zip(shuffled_order, mixed_rows))
    for i in range(len(encoded)):
        for other in (left[i], alone[i]) + ((mixed[i],) if i in mixed else ()):
            assert len(other) == len(right[i])
            assert max(abs(a - c) for a, c in zip(right[i], other)) <= 1e-5


class _NoLogitsToKeep(torch.nn.Module):
    """The same model, hiding ``logits_to_keep`` so per_token_logps takes the full-logits path."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


def test_logits_to_keep_path_equals_full_logits(tiny_lm, encoded):
    model, tok = tiny_lm
    batch = pad_batch(encoded, tok.pad_token_id)
    with torch.no_grad():
        full = per_token_logps(_NoLogitsToKeep(model), **batch)
        torch.testing.assert_close(full, per_token_logps(model, **batch), atol=1e-6, rtol=0)


def test_sequence_logps_are_sums_and_gradients_flow(tiny_lm, encoded):
    model, tok = tiny_lm
    batch = pad_batch(encoded, tok.pad_token_id)
    policy = clone_model(model).requires_grad_(True)
    logps = per_token_logps(policy, **batch)
    seq = sequence_logps(logps, batch["completion_mask"])  # (B,)
    for s, e in zip(seq.tolist(), encoded):
        naive = sum(naive_completion_logps(model, e["input_ids"], e["completion_mask"]))
        # a float32 sum of n per-token values reaching |naive| ~100: <= n x 1.2e-7 x |naive| (at most 1.5e-4 here,
        # observed <= 1.2e-5 with 1 and 2 threads: >= 13x); a dropped or extra token moves it by ~5
        n = sum(e["completion_mask"])
        assert math.isclose(s, naive, abs_tol=n * 1.2e-7 * abs(naive)), (s, naive, n)
    seq.sum().backward()
    assert policy.model.embed_tokens.weight.grad is not None


def test_rewards_are_zero_when_policy_equals_reference(tiny_lm, pair_records):
    model, tok = tiny_lm
    ref = clone_model(model)
    batch = collate_pairs(encode_pairs(pair_records, tok), tok.pad_token_id)
    with torch.no_grad():
        policy_logps, ref_logps = per_token_logps(model, **batch), per_token_logps(ref, **batch)
        r = per_token_rewards(policy_logps, ref_logps, batch["completion_mask"], 0.1)
    assert bool((r == 0).all())
    scored = score_pairs(model, ref, tok, pair_records, beta=0.1, batch_size=3, progress=False)
    assert all(s["chosen_reward"] == 0 and s["rejected_reward"] == 0 and s["margin"] == 0 for s in scored)


def test_score_pairs_sums_match_dpo_rewards_and_ref_scores(tiny_lm, pair_records):
    model, tok = tiny_lm
    policy = clone_model(model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    beta = 0.1
    scored = score_pairs(policy, model, tok, pair_records, beta=beta, batch_size=3, progress=False)
    ref_scores = pair_logps(model, tok, pair_records, batch_size=2, progress=False)
    again = score_pairs(policy, None, tok, pair_records, beta=beta, ref_scores=ref_scores, progress=False)
    t = lambda key, rows_: torch.tensor([r[key] for r in rows_], dtype=torch.float64)  # noqa: E731
    keys = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    _, chosen_r, rejected_r = dpo_loss(*(t(k, scored) for k in keys), beta)
    torch.testing.assert_close(t("chosen_reward", scored), chosen_r)
    torch.testing.assert_close(t("rejected_reward", scored), rejected_r)
    for s, a, record in zip(scored, again, pair_records):
        n = len(tok(record["chosen"], add_special_tokens=False).input_ids)
        assert len(s["chosen_rewards"]) == n + 1 and s["chosen_ids"][-1] == tok.eos_token_id
        assert math.isclose(sum(s["chosen_rewards"]), s["chosen_reward"], abs_tol=1e-9)
        assert s["chosen_reward"] != 0
        assert max(abs(x - y) for x, y in zip(s["rejected_rewards"], a["rejected_rewards"])) <= 1e-6
    with pytest.raises(ValueError, match="exactly one of ref_model and ref_scores"):
        score_pairs(policy, None, tok, pair_records, beta=beta)


def test_logits_as_soft_q_is_eq_5_to_7():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 30, generator=g, dtype=torch.float64)  # (B, V)
    for beta in (0.1, 1.0, 3.0):
        q, v, pi = logits_as_soft_q(logits, beta)
        torch.testing.assert_close(pi, torch.exp((q - v.unsqueeze(-1)) / beta))  # pi = exp((Q - V) / beta)
        torch.testing.assert_close(pi.sum(-1), torch.ones(4, dtype=torch.float64))
        shift = torch.randn(4, 1, generator=g, dtype=torch.float64)
        q2, v2, pi2 = logits_as_soft_q(logits + shift, beta)
        torch.testing.assert_close(pi2, pi)  # a per-state shift leaves the policy unchanged
        torch.testing.assert_close(v2 - v, shift.squeeze(-1))  # and moves V by the same amount
    torch.testing.assert_close(logits_as_soft_q(logits, 1.0)[2], logits.softmax(-1))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_pair_logps_shared_prompt_equals_the_concatenated_batch(tiny_lm, pair_records, attn):
    """The packed [prompt | chosen | rejected] path gives every per-token value of the naive path (<= 1e-5)."""
    model, tok = tiny_lm
    old = model.config._attn_implementation
    model.config._attn_implementation = attn
    try:
        naive = pair_logps(model, tok, pair_records, batch_size=len(pair_records), progress=False, share_prompt=False)
        for batch_size in (1, 3):
            packed = pair_logps(model, tok, pair_records, batch_size=batch_size, progress=False)
            for a, b in zip(naive, packed):
                for side in ("chosen", "rejected"):
                    assert a[f"{side}_ids"] == b[f"{side}_ids"] and a[f"{side}_has_eos"] == b[f"{side}_has_eos"]
                    gap = max(abs(x - y) for x, y in zip(a[f"{side}_per_token_logps"], b[f"{side}_per_token_logps"]))
                    assert gap <= 1e-5, (attn, batch_size, side, gap)
    finally:
        model.config._attn_implementation = old


def test_eq16_per_state_matches_kl_and_score_pairs(tiny_lm, pair_records):
    reference, tokenizer = tiny_lm
    policy = clone_model(reference)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for t in policy.parameters():
            t.add_(0.05 * torch.randn_like(t))  # some other policy over the same vocabulary
    rows = eq16_per_state(policy, reference, tokenizer, pair_records, beta=0.1)
    scored = score_pairs(policy, reference, tokenizer, pair_records, beta=0.1, progress=False)
    for row, s in zip(rows, scored):
        assert abs(row["expected"] - row["neg_beta_kl"]).max() < 1e-10  # eq. 16 at every state
        assert (row["expected"] <= 1e-12).all() and row["expected"].mean() < 0
        assert len(row["realised"]) == len(s["chosen_rewards"])
        assert abs(row["realised"].sum() - s["chosen_reward"]) < 1e-4  # eq. 10 summed = rewards/chosen


def test_score_pairs_carries_the_token_labels_of_planted_errors(tiny_lm):
    """Labels are computed once, by planted_labels, and travel in the scored row (no record matched by index)."""
    from qstar_lib.data import fig1_example, synthetic_tldr, token_labels
    from qstar_lib.lm.collate import planted_labels

    model, tok = tiny_lm
    records = [fig1_example()] + synthetic_tldr(3, seed=0, split="test", kinds=["absent_value", "omission"])
    rows = score_pairs(model, model, tok, records, beta=0.1, max_length=1024, progress=False)
    for rec, row in zip(records, rows):
        assert {k: row[k] for k in planted_labels(rec, tok)} == planted_labels(rec, tok)
        assert len(row["rejected_labels"]) == len(tok(rec["rejected"], add_special_tokens=False).input_ids)
        assert row["rejected_labels"] == token_labels(rec["rejected"], rec["errors"], tok)
        assert len(row["rejected_error_labels"]) == len(row["rejected_errors"]) == rec["n_errors"]
        assert row["kind"] == rec["kind"] and row["id"] == rec["id"]
    assert sum(rows[0]["rejected_labels"]) > 0 and [e["kind"] for e in rows[0]["rejected_errors"]] == [
        e["kind"] for e in sorted(records[0]["errors"], key=lambda e: e["start"])
    ]
    plain = score_pairs(
        model,
        model,
        tok,
        [{k: records[0][k] for k in ("prompt", "chosen", "rejected")}],
        beta=0.1,
        max_length=1024,
        progress=False,
    )
    assert "rejected_labels" not in plain[0]  # no planted errors, no labels


def test_forward_accepts_reads_the_signature_through_wrappers(tiny_lm):
    model, _ = tiny_lm

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert forward_accepts(model, "logits_to_keep") and forward_accepts(Wrapper(model), "position_ids")
    assert not forward_accepts(model, "no_such_argument")
