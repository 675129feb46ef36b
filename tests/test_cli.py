"""``python -m qstar_lib`` end to end on a tiny model at tiny sizes (subprocesses, seconds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from qstar_lib.__main__ import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str, cwd: str) -> str:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "QSTAR_SCALE": "ci"}
    proc = subprocess.run(
        [sys.executable, "-m", "qstar_lib", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def tiny_folder(tiny_lm, tmp_path):
    """The conftest tiny model saved as a Hugging Face folder, usable as ``--model <folder>``."""
    model, tokenizer = tiny_lm
    folder = tmp_path / "tiny"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def data_file(pair_records, tmp_path):
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for record in pair_records * 2:
            f.write(json.dumps(record) + "\n")
    return str(path)


def test_help_lists_every_subcommand_with_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("make-data", "sft", "dpo", "score"):
        assert name in out
    for name in ("dpo", "sft", "score", "make-data"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "--" in text and "default" in text
    dpo_help = build_parser().parse_args(["dpo", "--model", "m", "--data", "d"])
    assert not hasattr(dpo_help, "beta")  # unset flags fall back to the config's (or the paper's) defaults


def test_paper_flag_and_overrides():
    from qstar_lib.__main__ import _config
    from qstar_lib.lm.train_config import DPOConfig

    args = build_parser().parse_args(["dpo", "--model", "m", "--data", "d", "--paper", "--max-steps", "7"])
    config = _config(args, DPOConfig)
    assert (config.optim, config.learning_rate, config.warmup_steps, config.max_steps) == ("rmsprop", 5e-7, 150, 7)
    args = build_parser().parse_args(["dpo", "--model", "m", "--data", "d", "--max-grad-norm", "0"])
    assert _config(args, DPOConfig).max_grad_norm is None


def test_sft_dpo_resume_and_score_end_to_end(tiny_folder, data_file, tmp_path):
    sft_dir, dpo_dir = tmp_path / "sft", tmp_path / "dpo"
    common = ["--data", data_file, "--per-device-train-batch-size", "2", "--max-length", "64", "--disable-tqdm"]
    # in-process for speed; the dpo run below goes through a real `python -m qstar_lib` subprocess
    assert (
        main(
            [
                "sft",
                "--model",
                tiny_folder,
                "--output-dir",
                str(sft_dir),
                "--max-steps",
                "2",
                "--learning-rate",
                "1e-3",
                *common,
            ]
        )
        == 0
    )
    sft_ckpt = sft_dir / "checkpoint-2"
    assert (sft_ckpt / "model.safetensors").is_file() and (sft_ckpt / "training_state.safetensors").is_file()
    assert len(_jsonl(sft_dir / "history.jsonl")) == 2

    _run(
        "dpo",
        "--model",
        str(sft_ckpt),
        "--output-dir",
        str(dpo_dir),
        "--max-steps",
        "4",
        "--save-steps",
        "2",
        "--learning-rate",
        "1e-3",
        "--optim",
        "rmsprop",
        *common,
        cwd=str(tmp_path),
    )
    history = _jsonl(dpo_dir / "history.jsonl")
    assert [row["step"] for row in history] == [1, 2, 3, 4]
    assert abs(history[0]["loss"] - math.log(2)) < 1e-4
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "learning_rate",
    ):
        assert key in history[0]

    # resume from step 2 into a fresh folder copy: same final metrics as the straight run
    import shutil

    resumed_dir = tmp_path / "dpo_resumed"
    shutil.copytree(dpo_dir / "checkpoint-2", resumed_dir / "checkpoint-2")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the straight run's subprocess (OMP_NUM_THREADS=1): the same computation, bitwise
    try:
        assert (
            main(
                [
                    "dpo",
                    "--model",
                    str(sft_ckpt),
                    "--output-dir",
                    str(resumed_dir),
                    "--resume-from",
                    "latest",
                    "--max-steps",
                    "4",
                    "--save-steps",
                    "2",
                    "--learning-rate",
                    "1e-3",
                    "--optim",
                    "rmsprop",
                    *common,
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    resumed = _jsonl(resumed_dir / "history.jsonl")
    assert resumed[-1]["step"] == 4
    assert resumed[-1]["loss"] == pytest.approx(history[-1]["loss"], abs=1e-6)  # observed 0 (1 or 2 threads here)

    out = tmp_path / "scores.jsonl"
    assert (
        main(
            [
                "score",
                "--model",
                str(dpo_dir / "checkpoint-4"),
                "--ref-model",
                str(sft_ckpt),
                "--data",
                data_file,
                "--out",
                str(out),
                "--beta",
                "0.1",
                "--max-length",
                "64",
                "--disable-tqdm",
                "--html",
                str(tmp_path / "report.html"),
            ]
        )
        == 0
    )
    rows = _jsonl(out)
    assert len(rows) == 8
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count('class="pair"') == 8 and "qstarSort" in page and "http" not in page  # self-contained
    row = rows[0]
    assert len(row["chosen_rewards"]) == len(row["chosen_tokens"]) == len(row["chosen_ids"])
    assert row["chosen_reward"] == pytest.approx(sum(row["chosen_rewards"]), abs=1e-5)  # eq. 10 sums to the reward
    assert row["margin"] == pytest.approx(row["chosen_reward"] - row["rejected_reward"])


def test_make_data_writes_records(tmp_path):
    pytest.importorskip("qstar_lib.data", reason="qstar_lib.data (synthetic_tldr) is written by another helper")
    out = tmp_path / "train.jsonl"
    _run("make-data", "--n", "5", "--seed", "3", "--out", str(out), cwd=str(tmp_path))
    rows = _jsonl(out)
    assert len(rows) == 5
    assert all({"prompt", "chosen", "rejected"} <= set(row) for row in rows)


def test_make_data_converts_a_local_tldr_file(tmp_path, capsys):
    """--source tldr reads the hub's schema (here a local copy the test writes) and drops CNN/DM rows loudly."""
    from qstar_lib.data import synthetic_tldr, write_jsonl

    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in synthetic_tldr(4, seed=2, split="test")]
    rows.insert(1, {"prompt": "Article:\nA storm.\n\nTL;DR:", "chosen": " storm", "rejected": " sun"})
    src, out = write_jsonl(rows, str(tmp_path / "tldr.jsonl")), tmp_path / "out.jsonl"
    with pytest.warns(UserWarning, match="removed 1 of 5"):
        assert (
            main(
                ["make-data", "--source", "tldr", "--split", "validation", "--path", src, "--n", "0", "--out", str(out)]
            )
            == 0
        )
    got = _jsonl(out)
    assert [r["prompt"] for r in got] == [r["prompt"] for r in rows if r["prompt"].startswith("SUBREDDIT:")]
    capsys.readouterr()
    assert main(["make-data", "--path", src, "--out", str(out)]) == 2
    assert "--path is for --source tldr" in capsys.readouterr().err


# ----------------------------------------------------------------------------- malformed input

GOOD = {"id": "a", "prompt": "POST: He earns 38k. TL;DR:", "chosen": " he earns 38k", "rejected": " he earns 250k"}
#: (name, the bad line of the data file, the field the message must name). Each file is a good record, then the
#: bad one on line 2, so the message must carry the line number, not only the index.
MALFORMED = [
    ("missing_rejected", {"id": "b", "prompt": "POST: x. TL;DR:", "chosen": " x"}, "'rejected' is missing"),
    (
        "identical",
        {"id": "b", "prompt": "POST: x. TL;DR:", "chosen": " x", "rejected": " x"},
        "'rejected' is identical to 'chosen'",
    ),
    (
        "chosen_number",
        {"id": "b", "prompt": "POST: x. TL;DR:", "chosen": 38000, "rejected": " x"},
        "'chosen' is not a string (got int)",
    ),
    ("empty_prompt", {"id": "b", "prompt": "", "chosen": " x", "rejected": " y"}, "'prompt' is empty"),
    ("long_prompt", {"id": "b", "prompt": "word " * 5000, "chosen": " x", "rejected": " y"}, "'prompt' has"),
    ("duplicate_id", {**GOOD, "chosen": " he earns 38k a year"}, "'id' repeats the id of record 0"),
]


def _run_bad(cmd: list[str], cwd, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "QSTAR_SCALE": "ci"}
    return subprocess.run(
        [sys.executable, "-m", "qstar_lib", *cmd, *extra],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _write_lines(path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("name,bad,field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_dpo_refuses_a_malformed_record_in_one_line(name, bad, field, tiny_folder, tmp_path):
    data = _write_lines(tmp_path / f"{name}.jsonl", json.dumps(GOOD), json.dumps(bad))
    out = tmp_path / "run"
    proc = _run_bad(
        [
            "dpo",
            "--model",
            tiny_folder,
            "--data",
            data,
            "--output-dir",
            str(out),
            "--max-steps",
            "1",
            "--max-length",
            "64",
            "--disable-tqdm",
        ],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{data}:2: record 1 (id b" in lines[0] or f"{data}:2: record 1 (id a" in lines[0], lines[0]
    assert field in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()  # nothing written: no checkpoint, no history


def test_broken_json_line_and_missing_file(tiny_folder, tmp_path):
    data = _write_lines(tmp_path / "broken.jsonl", json.dumps(GOOD), json.dumps(GOOD)[:20])
    proc = _run_bad(["dpo", "--model", tiny_folder, "--data", data, "--output-dir", str(tmp_path / "run")], tmp_path)
    assert proc.returncode == 2 and f"{data}:2: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
    proc = _run_bad(
        [
            "score",
            "--model",
            tiny_folder,
            "--ref-model",
            tiny_folder,
            "--data",
            str(tmp_path / "nope.jsonl"),
            "--out",
            str(tmp_path / "s.jsonl"),
        ],
        tmp_path,
    )
    assert proc.returncode == 2 and "nope.jsonl: no such file" in proc.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_sft_and_score_validate_too_and_traceback_flag(tiny_folder, tmp_path):
    bad = {"id": "b", "prompt": "POST: x. TL;DR:", "chosen": ["not", "text"], "rejected": " y"}
    data = _write_lines(tmp_path / "bad.jsonl", json.dumps(GOOD), json.dumps(bad))
    sft = _run_bad(["sft", "--model", tiny_folder, "--data", data, "--output-dir", str(tmp_path / "sft")], tmp_path)
    assert sft.returncode == 2 and "bad.jsonl:2: record 1 (id b): field 'chosen' is not a string" in sft.stderr
    no_rejected = _write_lines(tmp_path / "sft_ok.jsonl", json.dumps({"prompt": "POST: x. TL;DR:", "chosen": " x"}))
    ok = _run_bad(
        ["sft", "--model", tiny_folder, "--data", no_rejected, "--max-steps", "1", "--disable-tqdm"], tmp_path
    )
    assert ok.returncode == 0, ok.stderr[-2000:]  # SFT needs no 'rejected'
    score = _run_bad(
        [
            "score",
            "--model",
            tiny_folder,
            "--ref-model",
            tiny_folder,
            "--data",
            data,
            "--out",
            str(tmp_path / "s.jsonl"),
            "--traceback",
        ],
        tmp_path,
    )
    assert score.returncode == 1 and "Traceback" in score.stderr and "RecordError" in score.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_drop_invalid_keeps_going_and_prints_the_counts(tiny_folder, tmp_path):
    lines = [json.dumps(GOOD)] + [
        json.dumps({**bad, "id": f"bad{i}"})
        for i, (_, bad, _) in enumerate(MALFORMED)
        if "id" in bad and bad.get("id") != "a"
    ]
    data = _write_lines(tmp_path / "mixed.jsonl", *lines)
    out = tmp_path / "s.jsonl"
    proc = _run_bad(
        [
            "score",
            "--model",
            tiny_folder,
            "--ref-model",
            tiny_folder,
            "--data",
            data,
            "--out",
            str(out),
            "--max-length",
            "64",
            "--drop-invalid",
            "--disable-tqdm",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dropped 5 of 6 records (empty: 1, identical: 1, missing: 1, not_string: 1, too_long: 1)" in proc.stderr
    assert len(_jsonl(out)) == 1


def test_truncated_completions_are_counted(tiny_folder, tmp_path):
    long = {**GOOD, "chosen": " he earns" + " a lot" * 40}
    data = _write_lines(tmp_path / "long.jsonl", json.dumps(long))
    proc = _run_bad(
        [
            "score",
            "--model",
            tiny_folder,
            "--ref-model",
            tiny_folder,
            "--data",
            data,
            "--out",
            str(tmp_path / "s.jsonl"),
            "--max-length",
            "32",
            "--disable-tqdm",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: 1 of 2 completions were truncated to max_length=32" in proc.stderr
