"""A causal language model as an action prior on text envs (CALM: Yao et al., 2020; SayCan: Ahn et al., 2022).

The LM reads the state and scores each admissible command by its mean token log-likelihood as the
continuation (mean, not sum: a long command is not penalised for its length). The policy acts on
Q(s, a) + `algo.prior.weight` · log p(a | s); the TD target stays a pure value estimate, so the prior
steers exploration and early play while Q learns. Scores are cached by (state, command): the LM is
frozen, and both repeat.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.config.algo import PriorConfig
from pipeline.core.errors import ConfigError, one_line

PROMPT_END = "\n>"  # the state, then a command prompt: the text-game convention


class CausalLMPrior(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, max_tokens: int):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.scores: dict[tuple[str, str], float] = {}

    def train(self, mode: bool = True) -> CausalLMPrior:
        return super().train(False)  # frozen: no dropout, ever

    @torch.no_grad()
    def log_probs(self, states: list[str], action_sets: list[list[str]]) -> torch.Tensor:
        """Flat [N]: mean log p(command tokens | state) for every (state, command), in order."""
        pairs = [(s, a) for s, actions in zip(states, action_sets, strict=True) for a in actions]
        todo = list(dict.fromkeys(p for p in pairs if p not in self.scores))
        for i in range(0, len(todo), 32):
            self.scores.update(zip(todo[i : i + 32], self._score(todo[i : i + 32]), strict=True))
        return torch.tensor([self.scores[p] for p in pairs], dtype=torch.float32)

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        tok = self.tokenizer
        rows, spans = [], []
        for state, action in pairs:
            context = tok(state + PROMPT_END, add_special_tokens=False)["input_ids"][-self.max_tokens :]
            command = tok(" " + action, add_special_tokens=False)["input_ids"] or [tok.eos_token_id or 0]
            rows.append(context + command)
            spans.append((len(context), len(command)))
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t + 1
        out = []
        for b, (start, n) in enumerate(spans):
            targets = ids[b, start : start + n].to(device)
            out.append(float(logp[b, start - 1 : start - 1 + n].gather(1, targets[:, None]).mean()))
        return out


def build_prior(cfg: PriorConfig) -> CausalLMPrior | None:
    """The prior `algo.prior` names (None without one); a hub id offline fails in seconds with the fix."""
    if not cfg.model:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from pipeline.backbones.text import hub_guard

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source = str(Path(cfg.model).expanduser()) if Path(cfg.model).expanduser().is_dir() else cfg.model
    hub_guard(source, "algo.prior.model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except Exception as ex:
        raise ConfigError(
            f"algo.prior.model={cfg.model}: cannot load a causal LM from it ({one_line(ex)}); pass a local folder "
            "with config.json, the weights and the tokenizer files"
        ) from None
    return CausalLMPrior(model, tokenizer, cfg.max_tokens)
