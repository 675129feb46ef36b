"""The disk cache of per-token log-probs (qstar_lib.lm.logps_cache): same values, computed once, keyed right."""

from __future__ import annotations

import gzip

import torch

from qstar_lib.lm import logps_cache
from qstar_lib.lm.logps import pair_logps, score_pairs
from qstar_lib.lm.logps_cache import cached_pair_logps, cached_score_pairs, weights_digest
from qstar_lib.lm.models import clone_model


def test_cached_equals_computed_and_is_read_back(tiny_lm, pair_records, isolated_cache):
    model, tok = tiny_lm
    plain = pair_logps(model, tok, pair_records, max_length=64, progress=False)
    before = logps_cache.COMPUTED["count"]
    first = cached_pair_logps(model, tok, pair_records, max_length=64, progress=False)
    again = cached_pair_logps(model, tok, pair_records, max_length=64, progress=False, batch_size=1)
    assert logps_cache.COMPUTED["count"] == before + 1  # the second call read the file
    assert first == plain and again == plain  # exact: JSON keeps every float
    assert len(list((isolated_cache / "logps").glob("*.json.gz"))) == 1


def test_the_key_follows_weights_records_and_lengths(tiny_lm, pair_records, isolated_cache):
    model, tok = tiny_lm
    opts = dict(max_length=64, progress=False)
    cached_pair_logps(model, tok, pair_records, **opts)
    before = logps_cache.COMPUTED["count"]
    cached_pair_logps(model, tok, pair_records, max_length=128, progress=False)  # another length
    cached_pair_logps(model, tok, pair_records[:2], **opts)  # other records
    other = clone_model(model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3  # one weight
    assert weights_digest(other) != weights_digest(model)
    assert weights_digest(clone_model(model)) == weights_digest(model)  # equal weights, equal digest
    changed = cached_pair_logps(other, tok, pair_records, **opts)
    assert logps_cache.COMPUTED["count"] == before + 3
    assert changed == pair_logps(other, tok, pair_records, **opts)


def test_an_unreadable_file_is_computed_again(tiny_lm, pair_records, isolated_cache):
    model, tok = tiny_lm
    opts = dict(max_length=64, progress=False)
    cached_pair_logps(model, tok, pair_records, **opts)
    (path,) = (isolated_cache / "logps").glob("*.json.gz")
    path.write_bytes(gzip.compress(b"[1, 2"))  # truncated JSON
    before = logps_cache.COMPUTED["count"]
    rows = cached_pair_logps(model, tok, pair_records, **opts)
    assert logps_cache.COMPUTED["count"] == before + 1 and rows == pair_logps(model, tok, pair_records, **opts)


def test_cached_score_pairs_equals_score_pairs(tiny_lm, pair_records, isolated_cache):
    model, tok = tiny_lm
    ref = clone_model(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(0.9)
    opts = dict(max_length=64, progress=False)
    plain = score_pairs(model, ref, tok, pair_records, 0.1, **opts)
    ref_rows = cached_pair_logps(ref, tok, pair_records, **opts)
    cached = cached_score_pairs(model, tok, pair_records, 0.1, ref_rows, **opts)
    assert cached == plain
    before = logps_cache.COMPUTED["count"]
    assert cached_score_pairs(model, tok, pair_records, 0.1, ref_rows, **opts) == plain
    assert logps_cache.COMPUTED["count"] == before  # read from disk
