"""Replay buffer: preallocated tensors on the training device, uint8 kept as uint8."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """Transitions; every field has leading dims [n_batches, batch_size]."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """Ring buffer of transitions. `terminated` is true only for real terminal states, never time-outs."""

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated")

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        self.capacity = capacity
        self.device = torch.device(device)
        dtype = torch.from_numpy(np.zeros(0, dtype=obs_dtype)).dtype
        self.obs = torch.empty((capacity, *obs_shape), dtype=dtype, device=self.device)
        self.next_obs = torch.empty_like(self.obs)
        self.actions = torch.empty(capacity, dtype=torch.long, device=self.device)
        self.rewards = torch.empty(capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.empty(capacity, dtype=torch.float32, device=self.device)
        self.pos = 0
        self.size = 0
        self._fields = [getattr(self, name) for name in self.FIELDS]
        self._views = [f.numpy() for f in self._fields] if self.device.type == "cpu" else None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray | torch.Tensor,
        actions: np.ndarray | torch.Tensor,
        rewards: np.ndarray | torch.Tensor,
        next_obs: np.ndarray | torch.Tensor,
        terminated: np.ndarray | torch.Tensor,
    ) -> None:
        """Append a batch of transitions (one per vector env), wrapping around at capacity."""
        n = obs.shape[0]
        if self.pos + n <= self.capacity:
            idx: slice | np.ndarray = slice(self.pos, self.pos + n)
        else:
            idx = np.arange(self.pos, self.pos + n) % self.capacity
        values = (obs, next_obs, actions, rewards, terminated)  # in FIELDS order
        if self._views is not None:
            # CPU storage: write through NumPy views of the tensors, ~5x cheaper per call than torch
            # indexing for the one-transition writes of a single env (measured).
            for view, value in zip(self._views, values, strict=True):
                view[idx] = value.numpy() if isinstance(value, torch.Tensor) else value
        else:
            t_idx = idx if isinstance(idx, slice) else torch.from_numpy(idx).to(self.device)
            for field, value in zip(self._fields, values, strict=True):
                field[t_idx] = torch.as_tensor(value).to(self.device, field.dtype, non_blocking=True)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, n_batches: int = 1) -> Batch:
        """Uniform sample with replacement, all batches in one gather."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (n_batches, batch_size), device=self.device, generator=self.generator)
        return Batch(self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx])

    def nbytes(self) -> int:
        """Bytes of the filled part: what a checkpoint of this buffer costs."""
        return sum(f[: self.size].nbytes for f in self._fields)

    def state_dict(self) -> dict[str, object]:
        """The filled part only (copied, so torch.save does not write the empty capacity too)."""

        def filled(t: torch.Tensor) -> torch.Tensor:
            return t.cpu() if self.size == self.capacity else t[: self.size].cpu().clone()

        return {
            "capacity": self.capacity,
            "pos": self.pos,
            "size": self.size,
            "generator": self.generator.get_state(),
            **{name: filled(field) for name, field in zip(self.FIELDS, self._fields, strict=True)},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        size = int(state["size"])  # type: ignore[arg-type]
        if int(state["capacity"]) != self.capacity or state["obs"].shape[1:] != self.obs.shape[1:]:  # type: ignore[union-attr,arg-type]
            raise ValueError(
                f"saved buffer (capacity {state['capacity']}, obs {tuple(state['obs'].shape[1:])}) does not fit "  # type: ignore[union-attr]
                f"this one (capacity {self.capacity}, obs {tuple(self.obs.shape[1:])})"
            )
        for name, field in zip(self.FIELDS, self._fields, strict=True):
            field[:size] = state[name].to(self.device)  # type: ignore[union-attr]
        self.pos, self.size = int(state["pos"]), size  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
