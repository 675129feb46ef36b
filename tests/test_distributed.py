"""`accelerate launch` with two CPU processes (DDP over gloo) trains what one process trains; a launch that
accelerate would silently run as independent copies is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"


def _dpo(tmp_path: Path, name: str, launcher: list[str]) -> subprocess.CompletedProcess:
    cmd = launcher + ["-m", "qstar_lib", "dpo", "--model", "tiny", "--data", str(tmp_path / "d.jsonl"),
                      "--output-dir", str(tmp_path / name), "--max-steps", "2", "--per-device-train-batch-size", "4",
                      "--disable-tqdm"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    from qstar_lib.__main__ import main

    assert main(["make-data", "--n", "16", "--out", str(tmp_path / "d.jsonl")]) == 0
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    one = _dpo(tmp_path, "one", [sys.executable])
    two = _dpo(tmp_path, "two", accelerate + ["--config_file", str(CONFIGS / "multi_cpu.yaml")])
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("step=2") == 1  # only the main process reports
    a = load_file(tmp_path / "one" / "checkpoint-2" / "model.safetensors")
    b = load_file(tmp_path / "two" / "checkpoint-2" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5  # the batch is global: split, not doubled

    fsdp_on_cpu = CONFIGS.parent.parent / "tests" / "data" / "fsdp_cpu.yaml"
    bad = _dpo(tmp_path, "bad", accelerate + ["--config_file", str(fsdp_on_cpu)])
    assert bad.returncode != 0 and "processes were launched but accelerate set up 1" in bad.stderr
