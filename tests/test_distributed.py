"""Two CPU processes (DDP over gloo) train what one process trains on the same global batch; a launch that
accelerate would silently run as independent copies is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"


def _dpo(
    tmp_path: Path, name: str, launcher: list[str], *flags: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = launcher + [
        "-m",
        "qstar_lib",
        "dpo",
        "--model",
        "tiny",
        "--data",
        str(tmp_path / "d.jsonl"),
        "--output-dir",
        str(tmp_path / name),
        "--max-steps",
        "2",
        "--per-device-train-batch-size",
        "4",
        "--learning-rate",
        "1e-3",
        "--disable-tqdm",
        *flags,
    ]
    # QSTAR_TEST_THREADS=2 reruns the processes on two threads each (the tolerances below hold for both)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("QSTAR_TEST_THREADS", "1"), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)


def _history(tmp_path: Path, name: str) -> list[dict]:
    with open(tmp_path / name / "history.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def _weights(tmp_path: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(tmp_path / name / "checkpoint-2" / "model.safetensors")


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    from qstar_lib.__main__ import main

    assert main(["make-data", "--n", "16", "--out", str(tmp_path / "d.jsonl")]) == 0
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    # Two processes x 4 pairs = a global batch of 8 (TRL's per-device semantics), split by rank. (`accelerate launch
    # --config_file <a yaml with use_cpu: true>` starts ONE process under accelerate 1.x: use_cpu picks its
    # simple launcher; torchrun with ACCELERATE_USE_CPU, as qstar_lib/__main__.py documents, starts two.)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _dpo(tmp_path, "two", torchrun, env={"ACCELERATE_USE_CPU": "true"})
    split = _dpo(tmp_path, "split", [sys.executable], "--gradient-accumulation-steps", "2")  # the same 8 in one process
    doubled = _dpo(tmp_path, "doubled", [sys.executable], "--gradient-accumulation-steps", "4")  # each process taking 8
    for run in (two, split, doubled):
        assert run.returncode == 0, run.stderr[-2000:]
    assert two.stdout.count("step=2") == 1  # only the main process reports
    h_two, h_split = _history(tmp_path, "two"), _history(tmp_path, "split")
    for a, b in zip(h_two, h_split, strict=True):
        # the same records per step: a run of 1 process (global batch 4) or of 16 per step fails here exactly
        assert (a["step"], a["epoch"], a["num_tokens"]) == (b["step"], b["epoch"], b["num_tokens"])
        # Gradient and forward metrics, float32: the two halves are all-reduced where one process adds micro-batches,
        # the same terms in another order, rounding ~1e-7 of them (observed <= 5e-7 on 1 and 2 threads); 1e-5 leaves
        # 20x. A doubled batch moves grad_norm by 0.6 and logps by 1e-2, a gradient summed instead of averaged: x 2.
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["logps/chosen"] == pytest.approx(b["logps/chosen"], rel=1e-5)
        assert a["logps/rejected"] == pytest.approx(b["logps/rejected"], rel=1e-5)
    # after one update: d loss / d logps <= beta / 2, logps round to ~3e-5 of ~300: ~1.5e-6 (observed 0); doubled: 0.1
    assert h_two[1]["loss"] == pytest.approx(h_split[1]["loss"], abs=1e-5)
    # Weights after 2 AdamW steps in float32: Adam turns rounding into moves up to ~lr on the few coordinates whose
    # gradient is ~0 (max gap 6e-5 here, another on the next CPU), so no max-abs tolerance; over all weights the gap
    # is 1e-4 of what a doubled batch moves (which changes nearly every coordinate), asserted below 1e-2 (100x).
    w_two, w_split, w_doubled = (_weights(tmp_path, name) for name in ("two", "split", "doubled"))
    assert w_two.keys() == w_split.keys() == w_doubled.keys()
    flat = lambda w: torch.cat([w[k].double().flatten() for k in sorted(w)])  # noqa: E731
    gap_split = (flat(w_two) - flat(w_split)).norm().item()
    gap_doubled = (flat(w_doubled) - flat(w_split)).norm().item()
    assert gap_split <= 1e-2 * gap_doubled, (gap_split, gap_doubled)  # the batch is global: split, not doubled

    fsdp_on_cpu = CONFIGS.parent.parent / "tests" / "data" / "fsdp_cpu.yaml"
    # accelerate launches 2 processes for it. Before the Accelerator was told cpu=True, each set up a separate
    # single-process job (two silent copies), which train_dpo refused; now they form one CPU group (DDP, not
    # FSDP): the same global batch of 8 as the torchrun launch, split by rank. Either way no copies train.
    launched = _dpo(tmp_path, "fsdp_cpu", accelerate + ["--config_file", str(fsdp_on_cpu)])
    refused = launched.returncode != 0 and "processes were launched but accelerate set up 1" in launched.stderr
    grouped = launched.returncode == 0 and "global_batch=8" in launched.stdout and "processes=2" in launched.stdout
    assert refused or grouped, (launched.returncode, launched.stdout[-500:], launched.stderr[-2000:])
