"""Tests of qstar_lib.data: the synthetic planted-error set, validation, token labels and loaders.

Nothing here touches the network or a model hub: the tokenizer is trained in memory with `tokenizers`,
and the hub loader is tested through monkeypatched ``datasets.load_dataset``.
"""

from __future__ import annotations

import collections
import json
import re

import pytest

from qstar_lib import data
from qstar_lib.data import (
    ERROR_MIX,
    FAMILIES,
    DropReport,
    RecordError,
    extract_numbers,
    fig1_example,
    load_tldr_preference,
    normalise_number,
    synthetic_tldr,
    to_hf_dataset,
    token_labels,
    validate_records,
    write_jsonl,
)
from qstar_lib.data.family import CLAIM_KEYS
from qstar_lib.data.synthetic import DATA_VERSION, HELDOUT_FAMILIES
from qstar_lib.data.values import TYPES, text_key

N = 600  # records per check: 14 training families x 6 kinds, every combination several times


@pytest.fixture(scope="module")
def train():
    return synthetic_tldr(N, seed=0, split="train")


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE trained in memory on synthetic texts, wrapped as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [r["prompt"] + r["chosen"] + r["rejected"] for r in synthetic_tldr(300, seed=5, split="test")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(  # digits one by one, as SmolLM2 splits them
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _localised(rec):
    return [e for e in rec["errors"] if e["start"] >= 0]


# ------------------------------------------------------------------------------------------ the set
def test_schema_and_prompt_layout(train):
    for r in train:
        assert set(r) >= {"id", "prompt", "chosen", "rejected", "errors", "n_errors", "family", "facts", "post_values"}
        assert re.fullmatch(r"SUBREDDIT: r/\w+\n\nTITLE: .+\n\nPOST: .+\n\nTL;DR:", r["prompt"], re.S)
        for key in ("chosen", "rejected"):
            assert r[key].startswith(" ") and not r[key].startswith("  ")
        assert r["chosen"] != r["rejected"]
        assert r["n_errors"] == len(_localised(r)) and r["n_errors"] in (0, 1, 2)
    assert len({r["id"] for r in train}) == len(train)
    assert validate_records(train) is train


def test_determinism_by_seed_and_split():
    a, b = synthetic_tldr(40, seed=3), synthetic_tldr(40, seed=3)
    assert a == b
    assert synthetic_tldr(40, seed=4) != a
    assert synthetic_tldr(40, seed=3, split="validation") != a


def test_splits_are_disjoint():
    prompts = {s: {r["prompt"] for r in synthetic_tldr(400, seed=0, split=s)} for s in ("train", "validation", "test")}
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    other_seed = {r["prompt"] for r in synthetic_tldr(400, seed=9, split="test")}
    assert not other_seed & prompts["train"]  # disjoint across seeds as well: a prompt's split is fixed by its text
    with pytest.raises(ValueError, match="split"):
        synthetic_tldr(1, split="dev")


def test_families_and_same_type_values(train):
    assert len(FAMILIES) >= 16
    assert {r["family"] for r in train} == set(FAMILIES) - set(HELDOUT_FAMILIES)
    for fam in FAMILIES.values():
        types = collections.Counter(s.type for s in fam.slots.values())
        assert max(types.values()) >= 2, f"{fam.name}: no two values of one type"
        assert len(fam.posts) >= 4 and len(fam.summaries) >= 4, fam.name
        assert all(len(fam.claims_for(split)) >= 2 for split in ("train", "validation", "test")), fam.name
    from qstar_lib.data import values as ds

    for pool in (
        ds.FEMALE_NAMES,
        ds.MALE_NAMES,
        ds.PET_NAMES,
        ds.US_CITIES,
        ds.WORLD_CITIES,
        ds.CARS,
        ds.CAMERAS,
        ds.SCHOOLS,
        ds.ROLES,
    ):
        assert len(set(pool)) >= 30


def test_post_and_summary_lengths(train):
    for r in train:
        post = r["prompt"].split("POST: ", 1)[1].rsplit("\n\nTL;DR:", 1)[0]
        assert 80 <= len(post.split()) <= 200, post
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", post.strip()) if s]
        assert 3 <= len(sentences) <= 8, post
        assert 15 <= len(r["chosen"].split()) <= 40, r["chosen"]


def test_mix_of_kinds_is_exact_and_selectable():
    recs = synthetic_tldr(1000, seed=1)
    counts = collections.Counter(r["kind"] for r in recs)
    assert counts == {k: round(1000 * w) for k, w in ERROR_MIX.items()}
    only = synthetic_tldr(60, seed=1, kinds=["in_post_swap"])
    assert all(r["kind"] == "in_post_swap" and [e["kind"] for e in r["errors"]] == ["in_post_swap"] for r in only)
    two = synthetic_tldr(60, seed=1, kinds={"two_errors": 1.0})
    assert all(r["n_errors"] == 2 for r in two)
    with pytest.raises(ValueError, match="kinds"):
        synthetic_tldr(5, kinds=["typo"])


def test_spans_point_at_the_planted_value(train):
    n_checked = 0
    for r in train:
        for e in _localised(r):
            text = r["rejected"][e["start"] : e["end"]]
            assert text and e["planted"].endswith(text)
            assert not text[0].isspace()
            if e["kind"] != "inserted_claim":
                k = len(e["planted"]) - len(text)  # the shared prefix with the true value
                assert e["planted"][:k] == e["true"][:k]
                assert k >= len(e["true"]) or e["planted"][k] != e["true"][k]  # the span starts where they differ
                assert r["chosen"].count(e["true"]) >= 1
            n_checked += 1
    assert n_checked > N // 2


def test_swapped_values_are_in_the_post_and_absent_values_are_not(train):
    for r in train:
        numbers = {round(v, 6) for v, _, _ in extract_numbers(r["prompt"])}
        for e in _localised(r):
            if e["kind"] == "inserted_claim":
                key = next(k for k in CLAIM_KEYS if k.lower() in e["planted"].lower())
                assert key.lower() not in r["prompt"].lower()
                continue
            kind = TYPES[FAMILIES[r["family"]].slots[e["slot"]].type].kind
            if kind == "number":
                value = round(normalise_number(e["planted"]), 6)
                in_post = value in numbers
                other_roles = [
                    s
                    for s, v in r["post_values"].items()
                    if s != e["slot"] and normalise_number(v) is not None and round(normalise_number(v), 6) == value
                ]
            else:
                in_post = (
                    re.search(r"(?<![A-Za-z0-9])" + re.escape(text_key(e["planted"])) + r"(?![A-Za-z0-9])", r["prompt"])
                    is not None
                )
                other_roles = [s for s, v in r["post_values"].items() if s != e["slot"] and v == e["planted"]]
            if e["kind"] == "in_post_swap":
                assert in_post and other_roles, (e, r["post_values"])
                assert all(r["post_values"][s] in r["prompt"] for s in other_roles)
            else:
                assert not in_post and not other_roles, (e, r["prompt"])


def test_facts_and_post_values_are_in_the_texts(train):
    for r in train:
        for s, v in r["post_values"].items():
            assert v in r["prompt"], (s, v)
        for s, v in r["facts"].items():
            assert v in r["chosen"], (s, v)


def test_fig1_example():
    r = fig1_example()
    assert "38k" in r["chosen"] and "250k" not in r["chosen"]
    assert "250k" in r["rejected"] and "management position" in r["rejected"]
    assert [e["kind"] for e in r["errors"]] == ["absent_value", "inserted_claim"] and r["n_errors"] == 2
    assert [r["rejected"][e["start"] : e["end"]] for e in r["errors"]] == ["250k", "for a management position"]
    assert "$38,000" in r["prompt"] and "250" not in r["prompt"]
    validate_records([r])


def test_twenty_thousand_pairs():
    recs = synthetic_tldr(20_000, seed=0)  # no time assertion (about 4 s CPU, see synthetic_tldr's docstring)
    assert len(recs) == 20_000 and len({r["prompt"] for r in recs}) == 20_000


# ------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize(
    "text, value",
    [
        ("38k", 38000),
        ("$38,000", 38000),
        ("38 000", 38000),
        ("$38k", 38000),
        ("38K", 38000),
        ("14.5k", 14500),
        ("$1.2M", 1_200_000),
        ("2 million", 2_000_000),
        ("40 grand", 40000),
        ("$1,250", 1250),
        ("27F", 27),
        ("(31M)", 31),
        ("2015", 2015),
        ("$ 41,000", 41000),
    ],
)
def test_number_normalisation(text, value):
    assert normalise_number(text) == value


def test_numbers_in_free_text():
    got = [
        v for v, _, _ in extract_numbers("Asked 38-45k, offered 38 000; my 2nd offer, a Canon EOS 80D, Sony A7 III.")
    ]
    assert got == [38000, 45000, 38000]


# ------------------------------------------------------------------------------------------ token labels
def _naive_labels(completion, spans, tokenizer):
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for a, b in enc["offset_mapping"]:
        out.append(int(any(not completion[i].isspace() and any(s <= i < e for s, e in spans) for i in range(a, b))))
    return out


def test_token_labels_rule(bpe_tokenizer):
    tok = bpe_tokenizer
    completion = " I asked for 38k and was offered 250k for a management position."
    start = completion.index("250k")
    labels = token_labels(completion, [(start, start + 4)], tok)
    enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
    assert len(labels) == len(enc["input_ids"])
    pieces = [completion[a:b] for a, b in enc["offset_mapping"]]
    labelled = "".join(p for p, lab in zip(pieces, labels) if lab)
    assert labelled.strip() == "250k"
    assert sum(labels) >= 3  # digits are split one by one, as in SmolLM2
    # a token whose only contact with the span is its leading space is not labelled
    assert token_labels(completion, [(start - 1, start)], tok) == [0] * len(labels)
    ws = completion.index(" was")
    assert pieces[[a for a, _ in enc["offset_mapping"]].index(ws)] == " was"  # the space is glued to "was"
    assert token_labels(completion, [(ws, ws + 1)], tok) == [0] * len(labels)
    assert sum(token_labels(completion, [(ws, ws + 2)], tok)) == 1
    # a span that starts at a space: the token before the value is not labelled for its space alone
    labels_space = token_labels(completion, [(start - 1, start + 4)], tok)
    assert labels_space == labels
    # dict spans, and the -1 spans of non-localised errors, are accepted
    assert token_labels(completion, [{"start": start, "end": start + 4}, {"start": -1, "end": -1}], tok) == labels
    assert token_labels(completion, [], tok) == [0] * len(labels)


def test_token_labels_match_naive_reference_on_records(bpe_tokenizer, train):
    for r in train[:150]:
        spans = [(e["start"], e["end"]) for e in _localised(r)]
        labels = token_labels(r["rejected"], r["errors"], bpe_tokenizer)
        assert labels == _naive_labels(r["rejected"], spans, bpe_tokenizer)
        assert sum(labels) >= r["n_errors"]  # every planted error covers at least one token


def test_token_labels_needs_a_fast_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        token_labels(" x", [(1, 2)], Slow())


# ------------------------------------------------------------------------------------------ validation
def _good():
    return [dict(r) for r in synthetic_tldr(5, seed=2, split="validation")]


def _mutate(case):
    recs = _good()
    r = recs[3]
    if case == "missing":
        del r["chosen"]
    elif case == "not_string":
        r["rejected"] = 7
    elif case == "empty_prompt":
        r["prompt"] = "  \n"
    elif case == "empty_chosen":
        r["chosen"] = "   "
    elif case == "identical":
        r["rejected"] = r["chosen"]
    elif case == "span_out_of_range":
        r["errors"] = [dict(kind="absent_value", start=5, end=10_000, slot="x", true="a", planted="b")]
        r["n_errors"] = 1
    elif case == "span_text":
        r["errors"] = [dict(kind="absent_value", start=1, end=3, slot="x", true="a", planted="zz")]
        r["n_errors"] = 1
    elif case == "bad_kind":
        r["errors"] = [dict(kind="typo", start=1, end=3)]
    elif case == "n_errors":
        r["n_errors"] = r["n_errors"] + 1
    elif case == "duplicate_id":
        r["id"] = recs[1]["id"]
    elif case == "not_dict":
        recs[3] = "prompt chosen rejected"
    return recs


CASES = {  # case -> (field named in the message, reason)
    "missing": ("chosen", "missing"),
    "not_string": ("rejected", "not_string"),
    "empty_prompt": ("prompt", "empty"),
    "empty_chosen": ("chosen", "empty"),
    "identical": ("rejected", "identical"),
    "span_out_of_range": ("errors[0]", "bad_span"),
    "span_text": ("errors[0]", "bad_span"),
    "bad_kind": ("errors[0]", "bad_span"),
    "n_errors": ("n_errors", "bad_span"),
    "duplicate_id": ("id", "duplicate_id"),
    "not_dict": ("<record>", "not_dict"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_record_raises_naming_index_and_field(case):
    recs = _mutate(case)
    field, reason = CASES[case]
    with pytest.raises(RecordError) as info:
        validate_records(recs)
    msg = str(info.value)
    assert msg.startswith("record 3") and f"field '{field}'" in msg
    if case != "not_dict":
        assert f"(id {recs[3]['id']})" in msg
    assert info.value.index == 3 and info.value.field == field and info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_prompt_too_long(bpe_tokenizer):
    recs = _good()
    n_tok = len(bpe_tokenizer(recs[2]["prompt"], add_special_tokens=False)["input_ids"])
    validate_records(recs[2:3], tokenizer=bpe_tokenizer, max_prompt_tokens=n_tok)
    with pytest.raises(RecordError, match=r"record 0 .*field 'prompt' has \d+ tokens"):
        validate_records(recs[2:3], tokenizer=bpe_tokenizer, max_prompt_tokens=n_tok - 1)


def test_prompt_must_leave_room_for_a_completion_token(bpe_tokenizer):
    """A prompt of max_length tokens or more would be cut silently; it is refused unless prompts may be cut."""
    rec = _good()[2]
    n_tok = len(bpe_tokenizer(rec["prompt"], add_special_tokens=False)["input_ids"])
    validate_records([rec], tokenizer=bpe_tokenizer, max_length=n_tok + 1)  # one completion token fits
    with pytest.raises(RecordError, match=r"field 'prompt' has \d+ tokens and leaves no room .*max_length"):
        validate_records([rec], tokenizer=bpe_tokenizer, max_length=n_tok)
    validate_records([rec], tokenizer=bpe_tokenizer, max_length=n_tok, max_prompt_length=n_tok - 1)  # asked to cut


def test_sft_fields_and_the_entry_points_validate(bpe_tokenizer):
    sft_only = [{"prompt": "POST: a. TL;DR:", "chosen": " a"}]
    assert validate_records(sft_only, fields=("prompt", "chosen")) is sft_only
    with pytest.raises(RecordError, match="'rejected' is missing"):
        validate_records(sft_only)
    with pytest.raises(TypeError, match="list of dicts"):
        validate_records({"prompt": "x"})

    from qstar_lib.lm.logps import pair_logps
    from qstar_lib.lm.train import train_dpo, train_sft
    from qstar_lib.lm.train_config import DPOConfig, SFTConfig

    same = [{"prompt": "POST: a. TL;DR:", "chosen": " a", "rejected": " a"}]
    for call in (
        lambda: train_dpo(None, None, bpe_tokenizer, same, DPOConfig(max_steps=1)),
        lambda: train_sft(None, bpe_tokenizer, [{"prompt": "", "chosen": " a"}], SFTConfig(max_steps=1)),
        lambda: pair_logps(None, bpe_tokenizer, same),
    ):
        with pytest.raises(RecordError, match="record 0"):  # before the model is touched (it is None here)
            call()


def test_drop_invalid_reports_counts():
    recs = _good()
    recs[1]["chosen"] = ""
    recs[3]["rejected"] = recs[3]["chosen"]
    recs[4]["chosen"] = ""
    with pytest.warns(UserWarning, match="dropped 3 of 5"):
        kept, report = validate_records(recs, drop_invalid=True)
    assert isinstance(report, DropReport)
    assert [r["id"] for r in kept] == [recs[0]["id"], recs[2]["id"]]
    assert report.counts == {"empty": 2, "identical": 1} and report.indices == [1, 3, 4]
    assert report.n_total == 5 and report.n_kept == 2 and report.n_dropped == 3
    clean, clean_report = validate_records(_good(), drop_invalid=True)
    assert len(clean) == 5 and clean_report.counts == {}


# ------------------------------------------------------------------------------------------ loaders
def _hub_like_rows():
    reddit = [
        {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
        for r in synthetic_tldr(6, seed=7, split="test")
    ]
    cnn = {
        "prompt": "Article:\nA storm hit the coast on Monday.\n\nTL;DR:",
        "chosen": " storm hits",
        "rejected": " sun",
    }
    return reddit[:3] + [cnn] + reddit[3:]


def test_load_local_jsonl_and_parquet(tmp_path):
    rows = _hub_like_rows()
    path = write_jsonl(rows, str(tmp_path / "sub" / "tldr.jsonl"))
    with pytest.warns(UserWarning, match="removed 1 of 7"):
        got = load_tldr_preference("validation", path=path)
    assert [r["prompt"] for r in got] == [r["prompt"] for r in rows if r["prompt"].startswith("SUBREDDIT:")]
    assert got[0]["id"] == "validation-000000"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "tldr.parquet"))
    with pytest.warns(UserWarning):
        got_pq = load_tldr_preference("validation", path=str(tmp_path / "tldr.parquet"), n=2)
    assert [r["prompt"] for r in got_pq] == [r["prompt"] for r in got[:2]]


def test_load_local_reports_invalid_rows(tmp_path):
    rows = _hub_like_rows()[:3]
    rows[1] = dict(rows[1], rejected=rows[1]["chosen"])
    path = write_jsonl(rows, str(tmp_path / "bad.jsonl"))
    with pytest.warns(UserWarning, match="identical: 1"):
        got = load_tldr_preference(path=path)
    assert len(got) == 2
    with pytest.raises(ValueError, match="jsonl or .parquet"):
        load_tldr_preference(path=write_jsonl(rows, str(tmp_path / "x.txt")))


def test_hub_loader_offline_error_names_the_default(monkeypatch, no_network):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'trl-lib/tldr-preference' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="synthetic_tldr"):
        load_tldr_preference("train")
    with pytest.raises(ValueError, match="splits train, validation"):
        load_tldr_preference("test")


def test_hub_loader_filters_cnn_dm(monkeypatch):
    import datasets

    calls = []

    def fake(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(_hub_like_rows())

    monkeypatch.setattr(datasets, "load_dataset", fake)
    with pytest.warns(UserWarning, match="CNN/DailyMail"):
        got = load_tldr_preference("validation", n=4)
    assert calls == [(data.HUB_DATASET, "validation")]
    assert len(got) == 4 and all(r["prompt"].startswith("SUBREDDIT:") for r in got)


def test_to_hf_dataset_and_jsonl_round_trip(tmp_path, train):
    recs = train[:20]
    ds = to_hf_dataset(recs)
    assert ds.num_rows == 20 and ds[0]["prompt"] == recs[0]["prompt"]
    assert json.loads(ds[3]["facts"]) == recs[3]["facts"]
    assert ds[5]["errors"] == recs[5]["errors"]
    path = write_jsonl(recs, str(tmp_path / "r.jsonl"))
    with open(path, encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == recs


# ---------------------------------------------------------------------------------------------------
# The families as data (qstar_lib/data/families/*.json): the published records, pinned
# ---------------------------------------------------------------------------------------------------
# sha256 of json.dumps(records, sort_keys=True) for data v2 (2026-12-02: 16 families, held-out families and
# templates, shortcut-free errors). A change here is a change of the published data set: bump DATA_VERSION.
SYNTHETIC_DIGESTS = {
    (0, "train", None, None): "b0bd2e9aaa56afd1321d3d4a74d35b3b7e8a03d13576a78c3581bdf86017f3b3",
    (0, "validation", None, None): "26088a03c6e826012fc47e956ce7434916d59165d5121b3e34ba63da037bd056",
    (0, "test", None, None): "8a952983586febc333c5d693b6249045c46b5ac46f54b1e6fe6a42ea9225a447",
    (1, "train", None, None): "57bf0eca646df787c80af5b527dad0c944d1cb82419fc37b05016511a89cff68",
    (7, "test", None, None): "58ff8cdf042e8a28e5a9653d890e9538ed4898cbc53aff04744b3ba8baf912d8",
    (
        3,
        "train",
        ("in_post_swap", "omission"),
        None,
    ): "65183b8698a67ccf0a384ef9f471b106ede9e8e92f34e85cf8788830c6e55234",
    (
        4,
        "validation",
        (("two_errors", 2.0), ("verbosity", 1.0), ("absent_value", 1.0)),
        None,
    ): "5b4fcb844912967c7da44ca9e29259434e095bcecb2d09c25bacd5616563a8bb",
    (
        5,
        "train",
        None,
        ("job_offer", "pets", "travel_budget"),
    ): "29559e7280beececb02ec134923a0db34b0926ffe844a648cd3b35babad09710",
}
FIG1_DIGEST = "74993038f491c429454af3e563defe2a3893685148008a318a63e8c5b5b9ed1d"


def _sha256(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize(
    "case",
    list(SYNTHETIC_DIGESTS),
    ids=lambda c: f"seed{c[0]}-{c[1]}" + "-kinds" * bool(c[2]) + "-families" * bool(c[3]),
)
def test_synthetic_records_are_pinned_by_digest(case):
    seed, split, kinds, families = case
    kinds = dict(kinds) if kinds and isinstance(kinds[0], tuple) else list(kinds) if kinds else None
    recs = synthetic_tldr(1000, seed=seed, split=split, kinds=kinds, families=list(families) if families else None)
    assert _sha256(recs) == SYNTHETIC_DIGESTS[case]


def test_fig1_example_is_pinned_by_digest():
    assert _sha256(fig1_example()) == FIG1_DIGEST


def test_every_family_is_one_shipped_json_file():
    import importlib.resources

    folder = importlib.resources.files("qstar_lib.data") / "families"
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
    assert names == sorted(FAMILIES)
    for name in names:
        assert json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))["family"] == name


@pytest.mark.parametrize(
    "break_it, where",
    [
        (lambda o: o["slots"]["old_dog"].update(type="dog"), "slots.old_dog.type"),
        (lambda o: o["slots"]["old_age"].pop("range"), "slots.old_age.range"),
        (lambda o: o["slots"]["new_pup"].update(pool="DOGS"), "slots.new_pup.pool"),
        (lambda o: o["titles"].append("My {dog} is sick"), "titles[3]"),
        (lambda o: o["summaries"][1].update(omits=["nope"]), "summaries[1].omits"),
        (lambda o: o["claims"][0].update(key="not in the text"), "claims[0].key"),
        (lambda o: o.pop("posts"), "(top level)"),
    ],
)
def test_a_broken_family_file_names_the_file_and_the_key(break_it, where):
    import importlib.resources

    from qstar_lib.data.family import FamilyFileError, read_family

    obj = json.loads((importlib.resources.files("qstar_lib.data") / "families" / "pets.json").read_text("utf-8"))
    break_it(obj)
    with pytest.raises(FamilyFileError, match=re.escape(f"families/pets.json: {where}:")):
        read_family("pets", json.dumps(obj))


def test_samplers_draw_what_the_family_files_declare():
    """Each file's ``range``/``pool`` documents its sampler; hold the samplers to it."""
    import random

    from qstar_lib.data.values import POOLS, STYLES

    rng = random.Random(0)
    for fam in FAMILIES.values():
        for _ in range(2000):
            values = fam.sample(rng, dict(rng.choice(STYLES)))
            assert list(values) == list(fam.slots), fam.name
            for s, v in values.items():
                slot = fam.slots[s]
                number = v[0] if isinstance(v, tuple) else v  # a car is (model year, model)
                if slot.range is not None:
                    assert slot.range[0] <= number <= slot.range[1], (fam.name, s, v)
                if slot.pool is not None:
                    assert (v[1] if isinstance(v, tuple) else v) in POOLS[slot.pool], (fam.name, s, v)


# ---------------------------------------------------------------------------------------------------
# Data v2: errors a string rule cannot find, held-out text, disjoint claims
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def v2():
    return {split: synthetic_tldr(2000, seed=0, split=split) for split in ("train", "validation", "test")}


def _errors(records, kind):
    return [(r, e) for r in records for e in r["errors"] if e["kind"] == kind]


def test_every_record_says_its_version(v2):
    assert DATA_VERSION == 2
    assert all(r["version"] == 2 for recs in v2.values() for r in recs)
    assert fig1_example()["version"] == 2


def _count(text: str, value: str) -> int:
    """Occurrences of a value as a whole value ("$80" is not in "$800", "8" not in "1,850")."""
    return len(re.findall(r"(?<![0-9A-Za-z,.])" + re.escape(value) + r"(?![0-9A-Za-z]|[,.][0-9])", text))


def test_swaps_take_a_post_value_the_summary_does_not_already_write(v2):
    swaps = _errors(v2["test"] + v2["train"], "in_post_swap")
    fresh = [_count(r["chosen"], e["planted"]) == 0 for r, e in swaps]
    print(f"{sum(fresh)} of {len(swaps)} swapped-in values are new to the summary")
    assert len(swaps) > 1000 and sum(fresh) / len(swaps) >= 0.95
    for r, e in swaps:
        post = {normalise_number(v) or v for v in r["post_values"].values()}
        assert (normalise_number(e["planted"]) or e["planted"]) in post and _count(r["rejected"], e["planted"]) == 1


def test_swaps_and_absent_values_sit_among_values_of_their_type(v2):
    for kind in ("in_post_swap", "absent_value"):
        for r, e in _errors(v2["test"], kind):
            ty = next(v["type"] for v in r["rejected_values"] if v["slot"] == e["slot"])
            assert sum(v["type"] == ty for v in r["rejected_values"]) >= 2, (kind, r["id"])
            span = next(v for v in r["rejected_values"] if v["slot"] == e["slot"])
            assert span["start"] <= e["start"] < e["end"] == span["end"]


def test_absent_values_come_from_the_slots_own_distribution(v2):
    """Each absent value is a value the family's sampler gives that slot (v1 drew salaries from 15-28k or
    100-305k while true salaries were 29-90k), and their mean is that of the true values."""
    import random

    from qstar_lib.data.values import STYLES, TYPES

    support: dict = {}
    rng = random.Random(1)
    for fam in FAMILIES.values():
        for _ in range(4000):
            style = dict(rng.choice(STYLES))
            for slot, raw in fam.sample(rng, style).items():
                support.setdefault((fam.name, slot), set()).add(TYPES[fam.slots[slot].type].summary(raw, style))
    absent = _errors(v2["test"] + v2["train"], "absent_value")
    assert len(absent) > 500
    outside = [
        (r["family"], e["slot"], e["planted"])
        for r, e in absent
        if e["planted"] not in support[(r["family"], e["slot"])]
    ]
    assert not outside, outside[:5]
    true_n = [normalise_number(e["true"]) for _, e in absent]
    planted_n = [normalise_number(e["planted"]) for _, e in absent]
    pairs = [(t, p) for t, p in zip(true_n, planted_n) if t is not None and p is not None]
    t_mean = sum(t for t, _ in pairs) / len(pairs)
    p_mean = sum(p for _, p in pairs) / len(pairs)
    assert abs(p_mean - t_mean) / t_mean < 0.15, (t_mean, p_mean)


def test_inserted_claims_of_the_three_splits_are_disjoint(v2):
    keys = {}
    for split, recs in v2.items():
        keys[split] = {
            next(k for _, k in FAMILIES[r["family"]].claims if k in e["planted"])
            for r, e in _errors(recs, "inserted_claim")
            if not r["heldout_family"]
        }
    assert keys["train"] and keys["validation"] and keys["test"]
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


def test_the_test_split_holds_out_families_and_templates(v2):
    assert len(HELDOUT_FAMILIES) >= 2
    for split in ("train", "validation"):
        for r in v2[split]:
            fam = FAMILIES[r["family"]]
            assert not r["heldout_family"] and not r["heldout_template"] and r["family"] not in HELDOUT_FAMILIES
            assert r["templates"]["post"] not in fam.heldout_posts()
            assert r["templates"]["summary"] not in fam.heldout_summaries()
    test = v2["test"]
    held = [r for r in test if r["heldout_family"]]
    assert {r["family"] for r in held} == set(HELDOUT_FAMILIES) and 0.4 <= len(held) / len(test) <= 0.6
    for r in test:
        fam = FAMILIES[r["family"]]
        new = r["templates"]["post"] in fam.heldout_posts() or r["templates"]["summary"] in fam.heldout_summaries()
        assert r["heldout_template"] == (r["heldout_family"] or new)
    seen = [r for r in test if not r["heldout_family"]]
    assert 0.4 <= sum(r["heldout_template"] for r in seen) / len(seen) <= 0.6  # half new text, half seen
    for fam in FAMILIES.values():  # at least 30% of the templates are held out
        assert len(fam.heldout_posts()) >= 0.3 * len(fam.posts) and len(fam.heldout_summaries()) >= 0.3 * len(
            fam.summaries
        )
    with pytest.raises(ValueError, match="held out for the test split only"):
        synthetic_tldr(3, split="train", families=list(HELDOUT_FAMILIES))
