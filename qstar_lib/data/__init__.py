"""Preference records: validation, the hub/local TL;DR loader, the synthetic planted-error generator.

Imports nothing of ``lm`` or ``eval``: a tokenizer is only handed in, never loaded here.

Names are exported lazily (PEP 562): ``from qstar_lib.data import X`` loads only the module that
defines ``X``."""

from __future__ import annotations

import importlib

#: exported name -> the module of this package that defines it
_EXPORTS = {
    "DropReport": "records",
    "RecordError": "records",
    "synthetic_tldr": "records",
    "to_hf_dataset": "records",
    "token_labels": "records",
    "validate_records": "records",
    "write_jsonl": "records",
    "CAMERAS": "synthetic",
    "CARS": "synthetic",
    "CLAIM_KEYS": "synthetic",
    "ERROR_KINDS": "synthetic",
    "ERROR_MIX": "synthetic",
    "FAMILIES": "synthetic",
    "FAMILY_TEXTS": "synthetic",
    "FEMALE_NAMES": "synthetic",
    "FILLERS": "synthetic",
    "Family": "synthetic",
    "LOCALISED_KINDS": "synthetic",
    "MALE_NAMES": "synthetic",
    "NONLOCAL_KINDS": "synthetic",
    "PAIR_KINDS": "synthetic",
    "PET_NAMES": "synthetic",
    "PROMPT_TEMPLATE": "synthetic",
    "ROLES": "synthetic",
    "S": "synthetic",
    "SCHOOLS": "synthetic",
    "SPLITS": "synthetic",
    "Slot": "synthetic",
    "Summary": "synthetic",
    "TWO_ERROR_COMBOS": "synthetic",
    "TYPES": "synthetic",
    "US_CITIES": "synthetic",
    "VOCABULARY": "synthetic",
    "ValueType": "synthetic",
    "WORLD_CITIES": "synthetic",
    "extract_numbers": "synthetic",
    "fig1_example": "synthetic",
    "generate": "synthetic",
    "normalise_number": "synthetic",
    "text_key": "synthetic",
    "HUB_DATASET": "tldr",
    "HUB_SPLITS": "tldr",
    "REDDIT_PREFIX": "tldr",
    "load_tldr_preference": "tldr",
}
__all__ = sorted(_EXPORTS) + ['records', 'tldr', 'synthetic']


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in ('records', 'tldr', 'synthetic'):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
