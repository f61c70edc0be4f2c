"""A sum-tree over transition priorities for prioritised replay (Schaul et al., 2016), vectorised:
updates and samples touch whole batches of leaves per tree level, no per-item Python loop."""

from __future__ import annotations

import torch


class SumTree:
    """Leaves hold priorities; each inner node the sum of its two children; the root the total."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu"):
        self.capacity = capacity
        self.depth = max(1, (capacity - 1).bit_length())
        self.n_leaves = 1 << self.depth
        self.tree = torch.zeros(2 * self.n_leaves, dtype=torch.float64, device=device)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def leaves(self) -> torch.Tensor:
        return self.tree[self.n_leaves : self.n_leaves + self.capacity]

    def set(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        """Set the priorities of leaves `index` (duplicates: the last value wins), then fix the sums above."""
        node = index.to(self.tree.device, torch.long) + self.n_leaves
        self.tree[node] = priority.to(self.tree.device, torch.float64)
        for _ in range(self.depth):
            node = torch.unique(node // 2)
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """Leaf index whose cumulative-priority interval holds each value of `mass` (in [0, total))."""
        mass = mass.to(self.tree.device, torch.float64).clone()
        node = torch.ones_like(mass, dtype=torch.long)
        for _ in range(self.depth):
            left = 2 * node
            left_sum = self.tree[left]
            go_right = mass >= left_sum
            mass = torch.where(go_right, mass - left_sum, mass)
            node = torch.where(go_right, left + 1, left)
        return (node - self.n_leaves).clamp(max=self.capacity - 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"leaves": self.leaves().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.tree.zero_()
        self.set(torch.arange(self.capacity), state["leaves"])
