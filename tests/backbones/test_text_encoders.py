"""Text encoders: the packaged MiniLM offline with real semantics, the embedding cache (exact, never
recomputing a text, valid until a trained encoder's weights change), a hub id offline failing fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from pipeline.backbones.packaged import extract_minilm
from pipeline.backbones.text import EmbeddingCache, apply_freeze, build_text_encoder
from pipeline.config.backbone import BackboneConfig
from pipeline.core.errors import ConfigError
from pipeline.networks.text import DRRN

MINILM = BackboneConfig(name="minilm", library="transformers", weights="packaged:all-minilm-l6-v2", freeze="all")


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def minilm(weights_cache: Path):
    encoder = build_text_encoder(MINILM, str(extract_minilm(weights_cache)), weights_cache)
    apply_freeze(encoder, MINILM)
    return encoder


def test_packaged_minilm_loads_offline_and_its_semantics_are_real(minilm, weights_cache: Path) -> None:
    assert minilm.frozen and not minilm.training
    assert sum(p.numel() for p in minilm.parameters()) > 22_000_000  # the real 6-layer model, not a stub
    e = minilm(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply."])
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)  # normalised, as its config says
    paraphrase, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert paraphrase > 0.6 and unrelated < 0.2, (paraphrase, unrelated)
    assert (weights_cache / "all-MiniLM-L6-v2" / ".complete").is_file()  # extracted once, reused


def test_embedding_cache_is_exact_and_never_recomputes_a_text(minilm) -> None:
    seen: list[int] = []
    hook = minilm.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    try:
        cache = EmbeddingCache(minilm)
        first = cache(["go north", "take key", "go north"])
        second = cache(["take key", "open door", "go north"])
    finally:
        hook.remove()
    assert seen == [2, 1]  # "go north" and "take key" once, then only "open door"
    assert (cache.hits, cache.misses) == (3, 3) and cache.hit_rate == 0.5
    assert torch.equal(first[0], second[2]) and torch.equal(first[1], second[0])
    assert torch.equal(second[1], minilm(["open door"])[0])


def test_a_trained_encoders_cache_lasts_until_its_weights_change() -> None:
    """Fine-tuning: between two optimiser steps a text is encoded once; after a step, never a stale vector."""
    torch.manual_seed(0)
    encoder = build_text_encoder(BackboneConfig(name="bow", vocab_buckets=64, features_dim=8), None, Path())
    net = DRRN(encoder, hidden=8).eval()
    assert not encoder.frozen
    with torch.no_grad():
        before = net.embed(["go north", "take key"])
        again = net.embed(["take key", "go north"])
    assert (net.cache.hits, net.cache.misses) == (2, 2) and torch.equal(before[0], again[1])
    loss = net.embed(["go north"]).sum()  # with gradients: the encoder itself, not the cache
    assert loss.requires_grad
    optimizer = torch.optim.SGD(encoder.parameters(), lr=1.0)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = net.embed(["go north", "take key"])
        fresh = encoder(["go north", "take key"])
    assert torch.equal(after, fresh) and not torch.equal(after[0], before[0])  # re-encoded, not stale
    assert net.cache.misses == 4


def test_hub_model_offline_fails_fast_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = BackboneConfig(name="sentence-transformers/all-mpnet-base-v2", library="transformers", pretrained=True)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="folder") as err:
        build_text_encoder(cfg, None, tmp_path)
    assert time.perf_counter() - start < 2.0
    assert "\n" not in str(err.value)
