"""Preference records: validation, the hub/local TL;DR loader, the synthetic planted-error generator.

Modules: ``records`` (validation, token labels, writing), ``tldr`` (the hub loader), ``synthetic`` (the
planted-error generator's engine), ``family`` (the synthetic families, read from ``families/*.json``),
``values`` (vocabularies and value types), ``numbers`` (the number parser shared with the gold judge).

Imports nothing of ``lm`` or ``eval``: a tokenizer is only handed in, never loaded here.

Names are exported lazily (PEP 562): ``from qstar_lib.data import X`` loads only the module that
defines ``X``."""

from __future__ import annotations

from qstar_lib.lazy import lazy_exports

#: exported name -> the module of this package that defines it
_EXPORTS = {
    "DropReport": "records",
    "RecordError": "records",
    "synthetic_tldr": "records",
    "to_hf_dataset": "records",
    "token_labels": "records",
    "validate_records": "records",
    "write_jsonl": "records",
    "CLAIM_KEYS": "family",
    "FAMILIES": "family",
    "FAMILY_TEXTS": "family",
    "Family": "family",
    "FamilyFileError": "family",
    "S": "family",
    "Slot": "family",
    "Summary": "family",
    "read_family": "family",
    "extract_numbers": "numbers",
    "normalise_number": "numbers",
    "ERROR_KINDS": "synthetic",
    "ERROR_MIX": "synthetic",
    "FILLERS": "synthetic",
    "LOCALISED_KINDS": "synthetic",
    "NONLOCAL_KINDS": "synthetic",
    "PAIR_KINDS": "synthetic",
    "PROMPT_TEMPLATE": "synthetic",
    "SPLITS": "synthetic",
    "TWO_ERROR_COMBOS": "synthetic",
    "fig1_example": "synthetic",
    "generate": "synthetic",
    "CAMERAS": "values",
    "CARS": "values",
    "FEMALE_NAMES": "values",
    "MALE_NAMES": "values",
    "PET_NAMES": "values",
    "POOLS": "values",
    "ROLES": "values",
    "SCHOOLS": "values",
    "TYPES": "values",
    "US_CITIES": "values",
    "VOCABULARY": "values",
    "ValueType": "values",
    "WORLD_CITIES": "values",
    "text_key": "values",
    "HUB_DATASET": "tldr",
    "HUB_SPLITS": "tldr",
    "REDDIT_PREFIX": "tldr",
    "load_tldr_preference": "tldr",
}
_SUBMODULES = ("records", "tldr", "synthetic", "family", "numbers", "values")
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
