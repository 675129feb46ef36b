"""The command line: ``python -m qstar_lib {make-data,sft,dpo,score} ...``.

Runs the book's experiments on a machine without notebooks (a cluster node, a GPU server without a model
hub). Every subcommand explains itself with ``--help``. Training also runs on several devices with
``accelerate launch -m qstar_lib dpo ...`` (DDP/FSDP as configured by ``accelerate config``); on CPUs only,
``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m qstar_lib dpo ...`` (DDP over gloo).

Examples::

    python -m qstar_lib make-data --n 2000 --out data/train.jsonl
    python -m qstar_lib sft --model smollm2-135m --data data/train.jsonl --output-dir runs/sft --max-steps 200
    python -m qstar_lib dpo --model runs/sft/checkpoint-200 --data data/train.jsonl --output-dir runs/dpo --paper
    python -m qstar_lib score --model runs/dpo/checkpoint-500 --ref-model runs/sft/checkpoint-200 \\
        --data data/test.jsonl --out runs/dpo/rewards.jsonl --html runs/dpo/report.html

Size exception: build_parser -- one add_argument per flag, declared in one place so --help and the code read alike
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

#: Help strings of the training flags (one per config field; the defaults are added from the dataclass).
FIELD_HELP = {
    "output_dir": "folder for checkpoint-{step}/ (Hugging Face weights + safetensors training state) and history.jsonl",
    "learning_rate": "peak learning rate",
    "per_device_train_batch_size": "sequences (sft) or preference pairs (dpo) per micro-batch and device",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "max_steps": "number of optimizer steps; > 0 overrides --num-train-epochs",
    "num_train_epochs": "passes over the data when --max-steps <= 0",
    "warmup_steps": "linear warm-up steps from 0 to the peak learning rate",
    "lr_scheduler_type": "after warm-up: constant (the DPO reference code) or linear decay to 0",
    "max_grad_norm": "clip the gradient norm to this value (<= 0: no clipping)",
    "optim": "optimizer (the paper used RMSprop)",
    "weight_decay": "decoupled weight decay",
    "max_length": "truncate prompt + completion to this many tokens",
    "max_prompt_length": "truncate the prompt (from the left) to this many tokens",
    "seed": "seed of the data order and the initial RNG state",
    "logging_steps": "log the mean metrics of every this many steps",
    "save_steps": "save a checkpoint every this many steps (0: only at the end)",
    "save_total_limit": "keep only the newest this many checkpoint-*/ folders (TRL's name; default: all)",
    "mixed_precision": "autocast precision; default: accelerate launch's --mixed_precision / config file, else bf16 "
    "on a GPU with native bf16 (compute capability >= 8), else no (fp16 overflows in the reference model)",
    "global_train_batch_size": "pairs (sequences) per optimizer step over ALL processes: the accumulation is derived "
    "from it and the number of processes (--paper sets the paper's)",
    "gradient_checkpointing": "recompute activations in the backward pass (less memory, ~1/3 slower)",
    "disable_tqdm": "hide the progress bar",
    "completion_field": "record field trained on (the chosen summary by default)",
    "beta": "KL weight beta of the DPO objective (0.1 in the paper)",
    "loss_type": "sigmoid: DPO (eq. 4); ipo: the IPO squared loss",
    "label_smoothing": "probability that a preference label is flipped (conservative DPO)",
    "precompute_ref_batch_size": "pairs per batch when precomputing reference log-probs (default 2 x batch size)",
}
CHOICES = {
    "optim": ("adamw", "rmsprop"),
    "lr_scheduler_type": ("constant_with_warmup", "linear"),
    "mixed_precision": ("no", "bf16", "fp16"),
    "loss_type": ("sigmoid", "ipo"),
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class InputError(Exception):
    """Bad input to the command line: printed as one line, exit status 2 (``--traceback`` shows the trace)."""


def _read_jsonl(path: str) -> tuple[list, list[int]]:
    """The records of a jsonl file and the line number of each (blank lines skipped)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    records, lines = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{line_no}: not valid JSON ({err})") from err
            lines.append(line_no)
    if not records:
        raise InputError(f"{path}: no records")
    return records, lines


def _checked_records(
    args, tokenizer, fields=("prompt", "chosen", "rejected"), max_length=None, max_prompt_length=None
) -> list:
    """Read ``--data`` and validate it before any work: one line naming file, line, record id and field.

    With ``--drop-invalid`` the bad records are left out and the counts by reason are printed instead.
    """
    from qstar_lib.data import RecordError, validate_records

    records, lines = _read_jsonl(args.data)
    check = dict(tokenizer=tokenizer, max_length=max_length, max_prompt_length=max_prompt_length, fields=fields)
    if getattr(args, "drop_invalid", False):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the report is printed below, once
            kept, report = validate_records(records, drop_invalid=True, **check)
        if report.dropped:
            i, rid, message = report.dropped[0]
            print(f"{args.data}: {report}; first: line {lines[i]}: {message}", file=sys.stderr)
        if not kept:
            raise InputError(f"{args.data}: no valid records left after --drop-invalid")
        return kept
    try:
        return validate_records(records, **check)
    except RecordError as err:
        raise InputError(f"{args.data}:{lines[err.index]}: {err} (--drop-invalid skips such records)") from err


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One ``--flag`` per config field. Defaults are SUPPRESSed so that --paper can tell what was given."""
    group = parser.add_argument_group(f"{config_cls.__name__} fields (TRL names)")
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{FIELD_HELP.get(f.name, f.name)} (default: {default})"
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=f.name, action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], None)
        if kind is None:  # "int | None", "float | None", "str | None"
            kind = int if str(f.type).startswith("int") else float if str(f.type).startswith("float") else str
        group.add_argument(
            flag, dest=f.name, type=kind, choices=CHOICES.get(f.name), default=argparse.SUPPRESS, help=help_text
        )


def _config(args: argparse.Namespace, config_cls):
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    if given.get("max_grad_norm") is not None and given["max_grad_norm"] <= 0:
        given["max_grad_norm"] = None
    if args.paper and "gradient_accumulation_steps" in given and "global_train_batch_size" not in given:
        given["global_train_batch_size"] = None  # an explicit accumulation: TRL's per-device semantics
    return config_cls.paper(**given) if args.paper else config_cls(**given)


def _load(name: str):
    import torch

    from qstar_lib.lm.models import load_model

    return load_model(name, dtype=torch.float32, device="cpu")  # accelerate moves it to the device


def _tokenizer(name: str):
    from qstar_lib.lm.models import load_tokenizer

    return load_tokenizer(name)


def _resume_path(args) -> str | None:
    if args.resume_from is None:
        return None
    if args.resume_from == "latest":
        from qstar_lib.lm.checkpoint import latest_checkpoint

        if not args.output_dir:
            raise InputError("--resume-from latest needs --output-dir")
        path = latest_checkpoint(args.output_dir)
        if path is None:
            raise InputError(f"no checkpoint-*/ under {args.output_dir} to resume from")
        return path
    return args.resume_from


def _finish(args, history, config=None) -> None:
    from accelerate import PartialState

    if config is not None and PartialState().is_main_process:
        world = PartialState().num_processes
        used = config.resolve_batch(world)
        from accelerate.state import AcceleratorState

        print(
            f"global_batch={used.global_batch(world)} per_device_train_batch_size={used.per_device_train_batch_size} "
            f"gradient_accumulation_steps={used.gradient_accumulation_steps} processes={world} "
            f"mixed_precision={AcceleratorState().mixed_precision}"
        )

    if getattr(args, "output_dir", None) and PartialState().is_main_process:
        _write_jsonl(os.path.join(args.output_dir, "history.jsonl"), history)
    if PartialState().is_main_process and history:
        last = history[-1]
        print(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))


# ----------------------------------------------------------------------------- subcommands


def cmd_make_data(args) -> int:
    from qstar_lib.data import load_tldr_preference, synthetic_tldr

    if args.source == "synthetic":
        if args.path:
            raise InputError("--path is for --source tldr (a local file in the trl-lib/tldr-preference schema)")
        records = synthetic_tldr(args.n, seed=args.seed, split=args.split)
    else:  # the paper's data: Reddit TL;DR preferences, from the hub (network) or a local copy
        records = load_tldr_preference(args.split, n=args.n or None, path=args.path)
    _write_jsonl(args.out, records)
    print(f"wrote {len(records)} records to {args.out}")
    return 0


def cmd_sft(args) -> int:
    from qstar_lib.lm.train import train_sft
    from qstar_lib.lm.train_config import SFTConfig

    config = _config(args, SFTConfig)
    records = _checked_records(
        args,
        _tokenizer(args.model),
        fields=("prompt", config.completion_field),
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )
    model, tokenizer = _load(args.model)
    history = train_sft(model, tokenizer, records, config, resume_from=_resume_path(args))
    _finish(args, history, config)
    return 0


def cmd_dpo(args) -> int:
    from qstar_lib.lm.train import train_dpo
    from qstar_lib.lm.train_config import DPOConfig

    config = _config(args, DPOConfig)
    records = _checked_records(
        args, _tokenizer(args.model), max_length=config.max_length, max_prompt_length=config.max_prompt_length
    )
    resume = _resume_path(args)
    model, tokenizer = _load(args.model)
    ref_model = None
    if args.ref_model and resume is None:
        ref_model, _ = _load(args.ref_model)
    history = train_dpo(model, ref_model, tokenizer, records, config, resume_from=resume)
    _finish(args, history, config)
    return 0


def cmd_score(args) -> int:
    from qstar_lib.lm.logps import score_pairs

    records = _checked_records(
        args, _tokenizer(args.model), max_length=args.max_length, max_prompt_length=args.max_prompt_length
    )
    from qstar_lib import scale

    model, tokenizer = _load(args.model)
    ref_model, _ = _load(args.ref_model)
    model, ref_model = model.to(scale.device()), ref_model.to(scale.device())  # float32 on the GPU when there is one
    scores = score_pairs(
        model,
        ref_model,
        tokenizer,
        records,
        beta=args.beta,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_prompt_length=args.max_prompt_length,
        progress=not args.disable_tqdm,
    )
    rows = []
    for i, (record, score) in enumerate(zip(records, scores)):
        row = {"index": i, **{k: record[k] for k in ("id", "prompt", "chosen", "rejected") if k in record}, **score}
        for side in ("chosen", "rejected"):
            row[f"{side}_tokens"] = [tokenizer.decode([t]) for t in score[f"{side}_ids"]]
        rows.append(row)
    _write_jsonl(args.out, rows)
    accuracy = sum(r["margin"] > 0 for r in rows) / len(rows)
    print(f"wrote per-token rewards of {len(rows)} pairs to {args.out}; rewards/accuracies={accuracy:.4g}")
    if args.html:
        from qstar_lib.eval.report import report_html

        page = report_html(scores, tokenizer, title=f"{args.model} vs {args.ref_model}")
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"wrote the HTML report to {args.html}")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from qstar_lib.lm.train_config import DPOConfig, SFTConfig

    parser = argparse.ArgumentParser(
        prog="python -m qstar_lib",
        description=__doc__,
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{make-data,sft,dpo,score}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback",
        action="store_true",
        help="on bad input show the Python traceback instead of one line (for debugging)",
    )
    records = argparse.ArgumentParser(add_help=False)
    records.add_argument(
        "--drop-invalid",
        action="store_true",
        help="leave out malformed records (and print the counts by reason) instead of stopping",
    )

    p = sub.add_parser(
        "make-data",
        formatter_class=_Formatter,
        parents=[common],
        help="write preference records (synthetic or TL;DR) as jsonl",
        description="Write TL;DR preference records (prompt/chosen/rejected) to a jsonl file, one record "
        "per line: the synthetic planted-error set (offline; with the planted error spans "
        "and facts), or the paper's Reddit TL;DR pairs from trl-lib/tldr-preference "
        "(needs a network, or --path to a local copy).",
    )
    p.add_argument(
        "--source",
        choices=("synthetic", "tldr"),
        default="synthetic",
        help="synthetic planted-error pairs, or the paper's TL;DR pairs (CNN/DM rows removed)",
    )
    p.add_argument("--n", type=int, default=1000, help="number of records (with --source tldr, 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator (same seed, same records)")
    p.add_argument(
        "--split",
        default="train",
        help="split name (synthetic: train/validation/test draw disjoint posts; tldr: train/validation)",
    )
    p.add_argument("--path", default=None, help="with --source tldr: a local .jsonl/.parquet file in the hub's schema")
    p.add_argument("--out", required=True, help="output jsonl path")
    p.set_defaults(func=cmd_make_data)

    model_help = "model alias (tiny, smollm2-135m), local folder (e.g. a checkpoint-*/) or hub id"
    for name, cls, func, what in (
        ("sft", SFTConfig, cmd_sft, "supervised fine-tuning on the chosen summaries (prompt tokens masked)"),
        ("dpo", DPOConfig, cmd_dpo, "DPO training with reference log-probs precomputed once"),
    ):
        p = sub.add_parser(
            name,
            formatter_class=_Formatter,
            help=what,
            parents=[common, records],
            description=f"{what[0].upper()}{what[1:]}. Writes checkpoint-{{step}}/ folders and "
            "history.jsonl (TRL metric keys) under --output-dir. Use `accelerate launch -m "
            f"qstar_lib {name} ...` for several devices.",
        )
        p.add_argument("--model", required=True, help=model_help)
        if name == "dpo":
            p.add_argument(
                "--ref-model",
                default=None,
                help="reference model (alias/folder/hub id); default: the initial --model itself",
            )
        p.add_argument("--data", required=True, help="jsonl with prompt/chosen/rejected records (see make-data)")
        p.add_argument(
            "--paper",
            action="store_true",
            help="start from the paper's settings (RMSprop, lr 5e-7, warm-up 150, clip 10, 512 tokens"
            + (", beta 0.1, batch 32 x 2" if name == "dpo" else ", batch 64 x 2")
            + "; that global batch on any number of processes); flags override",
        )
        p.add_argument(
            "--resume-from",
            default=None,
            help="a checkpoint-*/ folder, or 'latest' (the newest under --output-dir), to continue exactly",
        )
        _add_config_flags(p, cls)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "score",
        formatter_class=_Formatter,
        parents=[common, records],
        help="per-token implicit rewards (eq. 10) to jsonl",
        description="Score preference records: for every completion token, the implicit reward "
        "beta * log(pi(token)/pi_ref(token)) (paper eq. 10), plus sums and margins.",
    )
    p.add_argument("--model", required=True, help="the trained policy: " + model_help)
    p.add_argument("--ref-model", required=True, help="the reference policy: " + model_help)
    p.add_argument("--data", required=True, help="jsonl with prompt/chosen/rejected records")
    p.add_argument("--out", required=True, help="output jsonl: one row per record with per-token rewards and tokens")
    p.add_argument("--beta", type=float, default=0.1, help="beta the policy was trained with")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    p.add_argument("--max-length", type=int, default=512, help="truncate prompt + completion to this many tokens")
    p.add_argument("--max-prompt-length", type=int, default=None, help="truncate the prompt to this many tokens")
    p.add_argument("--disable-tqdm", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--html", default=None, help="also write one self-contained HTML page: every pair's heatmaps, the credit table"
    )
    p.set_defaults(func=cmd_score)
    return parser


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Bad input (a malformed record, a missing file, a model that cannot be loaded)
    ends with one line on stderr and exit status 2, before any output is written; ``--traceback`` re-raises."""
    import warnings

    args = build_parser().parse_args(argv)
    if args.traceback:
        return args.func(args)
    warnings.formatwarning = _warning_line  # truncation counts and the like: one line each
    try:
        return args.func(args)
    except (InputError, ValueError, TypeError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        hint = "" if isinstance(err, InputError) else " (--traceback shows where)"
        print(f"python -m qstar_lib {args.command}: error: {message}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
