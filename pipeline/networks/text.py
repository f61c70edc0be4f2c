"""Q(s, a) over text states and text commands: the DRRN head (He et al., 2016) on a text encoder.

A text game offers a different list of commands in every state, so there is no fixed output layer: the
state and each command are embedded separately (the same encoder), projected, and scored together; a
batch of states with command lists of different sizes is one flat batch of (state, command) pairs with
an `owner` index. The network is also the policy that evaluation runs and MLflow serves (`act_text`).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.backbones.text import EmbeddingCache, TextEncoder


class DRRNHead(nn.Module):
    """(state embedding, command embedding) → Q. Separate projections, then an MLP on [h_s, h_a, h_s·h_a]:
    DRRN's inner product, plus the capacity to learn interactions it cannot express."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.state = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.action = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.score = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, state_emb: torch.Tensor, action_emb: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        hs = self.state(state_emb).index_select(0, owner)
        ha = self.action(action_emb)
        return self.score(torch.cat([hs, ha, hs * ha], dim=-1)).squeeze(-1)


class DRRN(nn.Module):
    """Text encoder + DRRN head. Texts go through an `EmbeddingCache`: a frozen encoder encodes each
    distinct text once per run; a trained one once per weight update, whenever no gradient is needed
    (acting, evaluation, bootstrap targets) and dropout is off."""

    def __init__(
        self, encoder: TextEncoder, hidden: int = 128, prior: nn.Module | None = None, prior_weight: float = 0.0
    ):
        super().__init__()
        self.encoder = encoder
        self.head = DRRNHead(encoder.out_dim, hidden)
        self.cache = EmbeddingCache(encoder)
        self.prior = prior  # a frozen causal LM scoring commands (pipeline/algos/text_prior.py), or None
        self.prior_weight = prior_weight

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of `texts`, each distinct text encoded once in this call (and cached when it can be)."""
        if self.encoder.frozen or not (torch.is_grad_enabled() or self.encoder.training):
            return self.cache(texts)
        unique = list(dict.fromkeys(texts))
        rows = {t: i for i, t in enumerate(unique)}
        vectors = self.encoder(unique)
        return vectors.index_select(0, torch.tensor([rows[t] for t in texts], device=vectors.device))

    def embed_pairs(
        self, states: list[str], action_sets: list[list[str]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """State embeddings, the flat command embeddings and each command's state index: one `embed` call
        for the states and all their commands, which any head (online, target, critic) can then score."""
        emb = self.embed([*states, *(a for actions in action_sets for a in actions)])
        owner = owner_index([len(a) for a in action_sets], emb.device)
        return emb[: len(states)], emb[len(states) :], owner

    def q_values(self, states: list[str], action_sets: list[list[str]]) -> tuple[torch.Tensor, list[int]]:
        """Q of every (state, command) pair, flat in order, and the number of commands of each state."""
        return self.head(*self.embed_pairs(states, action_sets)), [len(a) for a in action_sets]

    def forward(self, states: list[str], action_sets: list[list[str]]) -> torch.Tensor:
        return self.q_values(states, action_sets)[0]

    @torch.no_grad()
    def act_text(self, states: list[str], action_sets: list[list[str]]) -> list[int]:
        """The greedy command's index in each state's list (0 where a list is empty: nothing to choose),
        by Q plus the weighted language-model prior when there is one."""
        q, counts = self.q_values(states, action_sets)
        if self.prior is not None and self.prior_weight > 0:
            q = q + self.prior_weight * self.prior.log_probs(states, action_sets).to(q.device)
        return [int(part.argmax()) if part.numel() else 0 for part in torch.split(q, counts)]


def owner_index(counts: list[int], device: torch.device) -> torch.Tensor:
    """For a flat batch of commands: the index of the state each belongs to."""
    return torch.repeat_interleave(torch.arange(len(counts), device=device), torch.tensor(counts, device=device))


def _best_per_state(q: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Each of `n` states' highest Q over its commands; -inf for a state with none."""
    return q.new_full((n,), float("-inf")).scatter_reduce(0, owner, q, reduce="amax")


def set_max(q: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """max_a Q(s, a) for each of `n` states of a flat batch; 0 for a state with no commands (a terminal one)."""
    best = _best_per_state(q, owner, n)
    return best.masked_fill(best == float("-inf"), 0.0)


def set_argmax(q: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Flat index of each state's best command (the first on ties); -1 for a state with no commands.
    Vectorised: a Python loop over the states cost more than the head's forward pass."""
    best = _best_per_state(q, owner, n)
    size = q.numel()
    position = torch.arange(size, device=q.device)
    candidates = torch.where(q == best.index_select(0, owner), position, size)
    first = torch.full((n,), size, device=q.device).scatter_reduce(0, owner, candidates, reduce="amin")
    return first.masked_fill(first == size, -1)
