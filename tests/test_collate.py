"""qstar_lib.lm.collate: the prompt + completion + EOS contract, truncation, padding and pair batches."""

from __future__ import annotations

import pytest
import torch

from qstar_lib.lm.collate import collate_pairs, encode_completion, encode_pairs, encode_sft, pad_batch


def ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_completion_tokens_are_the_separately_tokenised_completion(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt, completion = "POST: He earns 38k. TL;DR:", " he earns 250k"
    enc = encode_completion(prompt, completion, tok)
    n = enc["n_prompt"]
    assert enc["input_ids"][:n] == ids(tok, prompt)
    assert enc["input_ids"][n:] == ids(tok, completion) + [tok.eos_token_id]
    assert enc["completion_mask"] == [0] * n + [1] * (len(ids(tok, completion)) + 1)
    assert enc["n_completion"] == len(ids(tok, completion)) and enc["has_eos"]
    assert enc["n_prompt_truncated"] == enc["n_completion_truncated"] == 0


def test_prompt_is_cut_from_the_left_completion_from_the_right(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt = "The quick brown fox jumps over the lazy dog. " * 3
    completion = " boyfriend got a job offer in another city, should I move with him?"
    p, c = ids(tok, prompt), ids(tok, completion)
    enc = encode_completion(prompt, completion, tok, max_length=len(c) // 2 + 5, max_prompt_length=5)
    assert enc["input_ids"][:5] == p[-5:]  # the end of the prompt survives
    assert len(enc["input_ids"]) == len(c) // 2 + 5
    assert enc["input_ids"][5:] == c[: len(c) // 2]  # a prefix of the completion, so labels still line up
    assert not enc["has_eos"] and enc["n_completion"] == len(c) // 2
    assert enc["n_prompt_truncated"] == len(p) - 5
    assert enc["n_completion_truncated"] == len(c) + 1 - len(c) // 2


def test_a_prompt_longer_than_max_length_leaves_one_completion_token(tiny_tokenizer):
    enc = encode_completion("The quick brown fox jumps over the lazy dog. " * 5, " yes", tiny_tokenizer, max_length=8)
    assert len(enc["input_ids"]) == 8 and sum(enc["completion_mask"]) == 1 and enc["n_prompt"] == 7


def test_truncation_is_reported_with_a_warning(tiny_tokenizer, pair_records):
    with pytest.warns(UserWarning, match="truncated"):
        encoded = encode_pairs(pair_records, tiny_tokenizer, max_length=12)
    assert len(encoded) == len(pair_records)  # nothing dropped
    assert all(len(e["chosen_input_ids"]) <= 12 and len(e["rejected_input_ids"]) <= 12 for e in encoded)


def test_bad_records_name_the_record_and_field(tiny_tokenizer, pair_records):
    with pytest.raises(KeyError, match=r"record 1 .*'rejected'"):
        encode_pairs([pair_records[0], {"prompt": "a", "chosen": "b"}], tiny_tokenizer)
    with pytest.raises(TypeError, match=r"record 0 field 'chosen'"):
        encode_sft([{"prompt": "a", "chosen": 3}], tiny_tokenizer)
    with pytest.raises(ValueError, match="prompt tokenises to 0 tokens"):
        encode_completion("", " yes", tiny_tokenizer)


def test_encode_pairs_shares_the_prompt_and_encode_sft_uses_chosen(tiny_tokenizer, pair_records):
    pairs = encode_pairs(pair_records, tiny_tokenizer)
    sft = encode_sft(pair_records, tiny_tokenizer)
    for pair, single, record in zip(pairs, sft, pair_records):
        n = pair["chosen_n_prompt"]
        assert n == pair["rejected_n_prompt"]
        assert pair["chosen_input_ids"][:n] == pair["rejected_input_ids"][:n]
        assert single["input_ids"] == pair["chosen_input_ids"]
        assert single == encode_completion(record["prompt"], record["chosen"], tiny_tokenizer)


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_batch(side):
    encoded = [
        {"input_ids": [5, 6, 7, 8], "completion_mask": [0, 0, 1, 1]},
        {"input_ids": [5, 9], "completion_mask": [0, 1]},
    ]
    batch = pad_batch(encoded, pad_token_id=0, padding_side=side)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {k: (2, 4) for k in batch}
    row = {"right": [5, 9, 0, 0], "left": [0, 0, 5, 9]}[side]
    assert batch["input_ids"][1].tolist() == row
    assert batch["attention_mask"][1].tolist() == [int(t != 0) for t in row]
    assert batch["completion_mask"][1].tolist() == {"right": [0, 1, 0, 0], "left": [0, 0, 0, 1]}[side]
    assert batch["completion_mask"][0].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="padding_side"):
        pad_batch(encoded, 0, padding_side="middle")


def test_collate_pairs_stacks_chosen_then_rejected(tiny_tokenizer, pair_records):
    pairs = encode_pairs(pair_records, tiny_tokenizer)
    batch = collate_pairs(pairs, tiny_tokenizer.pad_token_id)
    B = len(pairs)
    T = max(max(len(p["chosen_input_ids"]), len(p["rejected_input_ids"])) for p in pairs)
    assert batch["input_ids"].shape == (2 * B, T)
    for i, p in enumerate(pairs):
        for side, row in (("chosen", i), ("rejected", B + i)):
            n = len(p[f"{side}_input_ids"])
            assert batch["input_ids"][row, :n].tolist() == p[f"{side}_input_ids"]
            assert batch["completion_mask"][row].sum() == sum(p[f"{side}_completion_mask"])
            assert batch["attention_mask"][row].sum() == n
    assert batch["input_ids"].dtype == torch.long


def test_span_labels_line_up_with_the_completion_positions(tiny_tokenizer):
    """data.token_labels labels tokens of the completion alone; they must index the batch's completion part."""
    data = pytest.importorskip("qstar_lib.data")
    record = data.fig1_example()
    labels = data.token_labels(record["rejected"], record["errors"], tiny_tokenizer)
    enc = encode_completion(record["prompt"], record["rejected"], tiny_tokenizer, max_length=4096)
    assert len(labels) == enc["n_completion"] and enc["has_eos"]
    completion_ids = enc["input_ids"][enc["n_prompt"] : enc["n_prompt"] + enc["n_completion"]]
    flagged = tiny_tokenizer.decode([t for t, y in zip(completion_ids, labels) if y])
    for error in record["errors"]:
        if error["start"] >= 0:
            assert error["planted"].replace(" ", "") in flagged.replace(" ", "")
