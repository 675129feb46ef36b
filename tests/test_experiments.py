"""The experiment pipeline: cached SFT -> DPO runs, interrupted runs retrained, checkpoints, histories.

Everything runs at ci scale on the tiny model, in a temporary ``$QSTAR_CACHE`` shared by this module's
tests (the stages are trained once, by whichever test comes first), on a preset shrunk further so the
whole file trains in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from qstar_lib import experiments as ex

TRL_DPO_KEYS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "grad_norm",
    "learning_rate",
    "num_tokens",
    "epoch",
}


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return tmp_path_factory.mktemp("qstar_cache")


@pytest.fixture
def p(cache_path, monkeypatch):
    """A ci preset small enough to train three stages in seconds, cached under a temporary QSTAR_CACHE."""
    monkeypatch.setenv("QSTAR_CACHE", str(cache_path))
    monkeypatch.setenv("QSTAR_SCALE", "ci")
    return dataclasses.replace(ex.preset("ci"), n_train_pairs=8, n_eval_pairs=4, sft_steps=2, dpo_steps=4, save_steps=2)


def _weights(model) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in model.state_dict().values()])


def test_presets_per_scale():
    assert ex.preset("ci").model_name == "tiny"
    assert ex.preset("cpu").model_name == ex.preset("gpu").model_name == "smollm2-135m"
    cpu = ex.preset("cpu")
    saved = {ex.pairs_seen(s, cpu) for s in range(cpu.save_steps, cpu.dpo_steps + 1, cpu.save_steps)}
    assert len(saved) >= 4 and {128, 256, 512} <= saved  # the credit-vs-pairs curve: checkpoints at 128, 256, ...
    assert cpu.n_train_pairs >= cpu.dpo_steps * cpu.dpo_batch_size  # each DPO pair seen once
    control = cpu.control_steps or cpu.dpo_steps
    # the controls may stop early, but each of their checkpoints has a DPO checkpoint at equal pairs seen
    assert control <= cpu.dpo_steps and control % cpu.save_steps == 0
    assert ex.pairs_seen(control, cpu) >= 256
    assert cpu.key() != dataclasses.replace(cpu, seed=1).key()  # any field changes the cache folder
    assert cpu.sft_key() == dataclasses.replace(cpu, beta=0.5, dpo_steps=1).sft_key()  # but SFT's only its own
    assert cpu.sft_key() != dataclasses.replace(cpu, sft_lr=1.0).sft_key()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cpu.seed = 1


def test_cache_round_trip(p):
    before = dict(ex.TRAIN_COUNTS)
    folders = ex.ensure_all(p)
    trained = {s: ex.TRAIN_COUNTS[s] - before.get(s, 0) for s in ex.STAGES}
    assert all(n <= 1 for n in trained.values())  # 0 when an earlier test of this module built it
    mtimes = {s: (f / ex.DONE).stat().st_mtime_ns for s, f in folders.items()}
    counts = dict(ex.TRAIN_COUNTS)
    model, tokenizer = ex.sft_model(p)
    ex.dpo_model(True, p=p), ex.dpo_model(False, p=p), ex.history("dpo_sft", p)
    assert dict(ex.TRAIN_COUNTS) == counts  # second calls load, they do not train
    assert {s: (f / ex.DONE).stat().st_mtime_ns for s, f in ex.ensure_all(p).items()} == mtimes
    assert all(str(f).startswith(str(ex.stage_dir(s, p).parent)) for s, f in folders.items())
    assert (folders["sft"] / ex.RUN_INFO).exists() and ex.run_info("sft", p)["seconds"] > 0
    for folder in folders.values():  # built in a temporary folder, renamed: no file names the temporary path
        texts = [path.read_text() for path in folder.rglob("*.json")]
        assert texts and not any(".tmp-" in text for text in texts), folder
        for state in folder.glob("checkpoint-*/training_state.json"):
            assert json.loads(state.read_text())["config"]["output_dir"] == str(folder)


def test_another_beta_is_one_more_dpo_run_from_the_same_sft(p):
    """Fig. 2 compares betas: each is its own DPO run, started from (and referenced to) the one SFT model."""
    ex.ensure_all(p)
    other = p.with_beta(p.beta * 5)
    assert other.sft_key() == p.sft_key() and other.key() != p.key()
    assert ex.stage_dir("sft", other) == ex.stage_dir("sft", p)
    assert ex.stage_dir("dpo_sft", other) != ex.stage_dir("dpo_sft", p)
    sft_runs = ex.TRAIN_COUNTS["sft"]
    five, _ = ex.dpo_model(True, p=p, beta=other.beta)
    assert ex.TRAIN_COUNTS["sft"] == sft_runs  # no second SFT run
    assert not torch.equal(_weights(five), _weights(ex.dpo_model(True, p=p)[0]))
    assert ex.run_info("dpo_sft", other)["preset"]["beta"] == other.beta
    assert torch.equal(_weights(ex.reference_for(True, other)[0]), _weights(ex.sft_model(p)[0]))
    assert ex.history("dpo_sft", other)["loss"].iloc[0] == pytest.approx(math.log(2), abs=1e-4)
    with pytest.raises(ValueError, match="beta must be > 0"):
        p.with_beta(0.0)


def test_sft_cached_under_the_full_key_is_adopted(p, tmp_path, monkeypatch):
    """A cache from before SFT folders had their own key: the SFT run is renamed into place, not retrained."""
    monkeypatch.setenv("QSTAR_CACHE", str(tmp_path))
    q = dataclasses.replace(p, seed=p.seed + 7)
    built = ex.stage_dir("sft", q)
    ex.sft_model(q)
    legacy = built.parent / f"sft-{q.key()}"
    built.rename(legacy)
    runs = ex.TRAIN_COUNTS["sft"]
    ex.sft_model(q)
    assert ex.TRAIN_COUNTS["sft"] == runs and (built / ex.DONE).exists() and not legacy.exists()


def test_interrupted_run_is_retrained(p):
    folder = ex.ensure_all(p)["dpo_base"]
    (folder / ex.DONE).unlink()  # as if killed before the marker was written
    (folder / "leftover.txt").write_text("half a run")
    n = ex.TRAIN_COUNTS["dpo_base"]
    frame = ex.history("dpo_base", p)
    assert ex.TRAIN_COUNTS["dpo_base"] == n + 1
    assert (folder / ex.DONE).exists() and not (folder / "leftover.txt").exists()
    assert len(frame) == p.dpo_steps


def test_dpo_checkpoints_listed_and_loadable(p):
    steps = ex.dpo_checkpoint_steps(True, p)
    assert steps == list(range(p.save_steps, p.dpo_steps + 1, p.save_steps))
    early, _ = ex.dpo_model(True, step=steps[0], p=p)
    final, _ = ex.dpo_model(True, p=p)
    last, _ = ex.dpo_model(True, step=steps[-1], p=p)
    sft, _ = ex.sft_model(p)
    assert torch.equal(_weights(final), _weights(last))
    assert not torch.equal(_weights(early), _weights(final))
    assert not torch.equal(_weights(sft), _weights(early))  # DPO moved away from its start
    with pytest.raises(ValueError, match="saved steps"):
        ex.dpo_model(True, step=steps[0] + 1, p=p)


def test_reference_is_the_start_of_each_run(p):
    ref_sft, _ = ex.reference_for(True, p)
    ref_base, _ = ex.reference_for(False, p)
    assert torch.equal(_weights(ref_sft), _weights(ex.sft_model(p)[0]))
    assert torch.equal(_weights(ref_base), _weights(ex.base_model(p)[0]))
    assert not any(t.requires_grad for t in ref_sft.parameters()) and not ref_sft.training


def test_histories_have_trl_keys_and_start_at_ln2(p):
    sft = ex.history("sft", p)
    assert list(sft.index) == list(range(1, p.sft_steps + 1)) and "loss" in sft
    for stage in ("dpo_sft", "dpo_base"):
        frame = ex.history(stage, p)
        assert TRL_DPO_KEYS <= set(frame.columns), stage
        assert abs(frame.loc[1, "loss"] - math.log(2)) < 1e-4  # policy == reference at step 1
        assert abs(frame.loc[1, "rewards/margins"]) < 1e-4
    with pytest.raises(ValueError, match="stage"):
        ex.history("ppo", p)


def test_eval_records_are_held_out(p):
    train, held_out = ex.train_records(p), ex.eval_records(p)
    assert len(train) == p.n_train_pairs and len(held_out) == p.n_eval_pairs
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}


def test_validation_records_are_their_own_split(p):
    val = ex.validation_records(p)
    assert len(val) == p.n_val_pairs and all(r["id"].startswith("validation-") for r in val)
    others = {r["prompt"] for r in ex.train_records(p) + ex.eval_records(p)}
    assert not {r["prompt"] for r in val} & others


def test_shuffled_records_reverse_exactly_half_and_keep_the_texts(p):
    train = ex.train_records(p)
    shuffled = ex.shuffled_records(train, p.seed)
    flipped = [s["chosen"] == r["rejected"] and s["rejected"] == r["chosen"] for r, s in zip(train, shuffled)]
    kept = [s["chosen"] == r["chosen"] and s["rejected"] == r["rejected"] for r, s in zip(train, shuffled)]
    assert sum(flipped) == len(train) // 2 and all(f != k for f, k in zip(flipped, kept))
    assert all(s["prompt"] == r["prompt"] and "errors" not in s for r, s in zip(train, shuffled))
    assert ex.shuffled_records(train, p.seed) == shuffled and ex.shuffled_records(train, p.seed + 1) != shuffled


def test_control_runs_start_from_sft_and_save_like_dpo(p):
    p = dataclasses.replace(p, control_steps=2)
    for name, stage in ex.CONTROL_STAGES.items():
        steps = ex.checkpoint_steps(stage, p)
        assert steps == [2], (name, steps)
        assert ex.run_info(stage, p)["steps"] == 2
        model, _ = ex.control_model(name, p=p)
        assert not torch.equal(_weights(model), _weights(ex.sft_model(p)[0]))  # it trained
    shuffled = ex.history("dpo_shuffled", p)
    assert abs(shuffled.loc[1, "loss"] - math.log(2)) < 1e-4  # from the SFT model, which is its reference
    assert "rewards/chosen" not in ex.history("sft_continued", p)  # an SFT loss, not a preference
    with pytest.raises(ValueError, match="choose one of continued_sft, shuffled_dpo"):
        ex.control_model("ppo", p=p)
    assert ex.pairs_seen(3, p) == 3 * p.dpo_batch_size


def test_shuffled_reference_is_dpo_sfts_with_the_reversed_pairs_swapped(p):
    """dpo_shuffled reuses dpo_sft's reference log-probs instead of computing them again: they must equal a
    fresh computation with the SFT model on the shuffled records (to float32 summation noise)."""
    from qstar_lib.lm.collate import encode_pairs, pad_token_id
    from qstar_lib.lm.train import precompute_ref_logps

    sft, tok = ex.sft_model(p)
    records = ex.shuffled_records(ex.train_records(p), p.seed)
    encoded = encode_pairs(records, tok, max_length=p.max_length)
    fresh = precompute_ref_logps(sft, encoded, pad_token_id(tok), progress=False)
    reused = ex.shuffled_ref_logps(p)
    flipped = sum(r["chosen"] != o["chosen"] for r, o in zip(records, ex.train_records(p)))
    assert flipped == len(records) // 2  # the swap is not a no-op
    for a, b in zip(fresh, reused):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), (a - b).abs().max()


def test_the_ci_preset_truncates_no_record():
    """Every record the ci pipeline trains and evaluates on fits max_length (with its EOS): a cut record would
    lose error tokens and print a truncation warning into the rendered book."""
    from qstar_lib.lm.models import load_tokenizer

    tok, p = load_tokenizer("tiny"), ex.preset("ci")
    records = ex.train_records(p) + ex.eval_records(p) + ex.validation_records(p)
    longest = max(len(tok(r["prompt"] + r[s]).input_ids) for r in records for s in ("chosen", "rejected"))
    assert longest + 1 <= p.max_length, longest
