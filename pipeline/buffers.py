"""Replay buffer: preallocated tensors on the training device, each observation stored once.

Layout: rows are vector-env steps, columns are the vector envs, so each column is one env's stream
and consecutive rows are consecutive observations. A transition stores only its observation `item`
(for frame stacks: the newest frame; for a frozen-feature cache: the features); its next observation
is the next row's item, or — when the episode was cut by a time limit — a final item kept aside.
Frame stacks are rebuilt at sample time from the last `frame_stack` rows of the same episode, padded
with the episode's first frame exactly as gymnasium's FrameStackObservation pads. So one Atari
transition costs one 84x84 frame plus a few bytes, not two stacks of four.
"""

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


def _torch_dtype(dtype: np.dtype | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class ReplayBuffer:
    """Ring buffer of transitions. `terminated` is true only for real terminal states, never time-outs."""

    FIELDS = ("items", "actions", "rewards", "terminated", "truncated", "hist")

    def __init__(
        self,
        capacity: int,
        item_shape: tuple[int, ...],
        item_dtype: np.dtype | torch.dtype,
        num_envs: int = 1,
        frame_stack: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        self.num_envs = num_envs
        self.k = frame_stack
        self.rows = max(-(-capacity // num_envs), frame_stack + 1)
        self.capacity = self.rows * num_envs
        self.device = torch.device(device)
        shape = (self.rows, num_envs)
        # For frame stacks the item is one frame: obs[:, -1] of a [k, H, W] observation.
        self.item_shape = tuple(item_shape[1:]) if frame_stack > 1 else tuple(item_shape)
        self.items = torch.empty((*shape, *self.item_shape), dtype=_torch_dtype(item_dtype), device=self.device)
        self.actions = torch.empty(shape, dtype=torch.long, device=self.device)
        self.rewards = torch.empty(shape, dtype=torch.float32, device=self.device)
        self.terminated = torch.empty(shape, dtype=torch.float32, device=self.device)
        self.truncated = torch.zeros(shape, dtype=torch.bool, device=self.device)  # cut by a time limit
        self.hist = torch.zeros(shape, dtype=torch.uint8, device=self.device)  # earlier frames in the episode (<k)
        self._fields = [getattr(self, name) for name in self.FIELDS]
        self._views = [f.numpy() for f in self._fields] if self.device.type == "cpu" else None
        self.finals: dict[int, torch.Tensor] = {}  # row * num_envs + env -> final item of a truncated episode
        self.pos = 0  # next row to write
        self.filled = 0  # rows written (up to self.rows)
        self._ep_hist = np.zeros(num_envs, dtype=np.uint8)  # history length of each env's current obs
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._offsets = torch.arange(-(self.k - 1), 1, device=self.device)

    def __len__(self) -> int:
        """Transitions that can be sampled (their next observation and their stack's history are present)."""
        return self._sampleable_rows() * self.num_envs

    def stored(self) -> int:
        """Transitions held (the newest one becomes sampleable once its next observation arrives)."""
        return self.filled * self.num_envs

    def _sampleable_rows(self) -> int:
        if self.filled < self.rows:
            return max(self.filled - 1, 0)
        return self.rows - self.k

    def bytes_per_transition(self) -> float:
        """Allocated bytes / capacity: what one stored transition costs."""
        return sum(f.nbytes for f in self._fields) / self.capacity

    def nbytes(self) -> int:
        """Bytes of the filled part: what a checkpoint of this buffer costs."""
        return int(sum(f[: self.filled].nbytes for f in self._fields))

    def add(
        self,
        obs: np.ndarray | torch.Tensor,
        actions: np.ndarray | torch.Tensor,
        rewards: np.ndarray | torch.Tensor,
        terminated: np.ndarray,
        truncated: np.ndarray,
        final_obs: dict[int, np.ndarray | torch.Tensor] | None = None,
    ) -> None:
        """One vector step: the observations acted on (one per env), what happened, and for envs whose
        episode was truncated (time limit, not terminal) the final observation, keyed by env index."""
        row = self.pos
        items = obs[:, -1] if self.k > 1 else obs
        cut = np.asarray(truncated, dtype=bool) & ~np.asarray(terminated, dtype=bool)
        values = (items, actions, rewards, terminated, cut, self._ep_hist)  # in FIELDS order
        if self._views is not None:
            # CPU storage: write through NumPy views of the tensors, ~5x cheaper per call than torch
            # indexing for the one-transition writes of a single env (measured).
            for view, value in zip(self._views, values, strict=True):
                view[row] = value.cpu().numpy() if isinstance(value, torch.Tensor) else value
        else:
            for field, value in zip(self._fields, values, strict=True):
                field[row] = torch.as_tensor(value).to(self.device, field.dtype, non_blocking=True)
        base = row * self.num_envs
        if self.finals:
            for env in range(self.num_envs):
                self.finals.pop(base + env, None)
        for env in np.flatnonzero(cut):
            final = final_obs[int(env)]  # type: ignore[index]
            final = final[-1] if self.k > 1 else final
            self.finals[base + int(env)] = torch.as_tensor(final).to(self.device, self.items.dtype).clone()
        done = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        self._ep_hist = np.where(done, 0, np.minimum(self._ep_hist + 1, self.k - 1)).astype(np.uint8)
        self.pos = (row + 1) % self.rows
        self.filled = min(self.filled + 1, self.rows)

    def _stack(self, rows: torch.Tensor, cols: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return self.items[rows % self.rows, cols]
        offsets = torch.maximum(self._offsets.unsqueeze(0), -hist.long().unsqueeze(1))  # [B, k]
        return self.items[(rows.unsqueeze(1) + offsets) % self.rows, cols.unsqueeze(1)]

    def sample(self, batch_size: int, n_batches: int = 1) -> Batch:
        """Uniform sample with replacement, all batches in one gather."""
        n_rows = self._sampleable_rows()
        if n_rows == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        start = 0 if self.filled < self.rows else self.pos + self.k - 1  # oldest row with a full history
        count = n_batches * batch_size
        g = self.generator
        rows = (torch.randint(0, n_rows, (count,), device=self.device, generator=g) + start) % self.rows
        cols = torch.randint(0, self.num_envs, (count,), device=self.device, generator=g)
        hist = self.hist[rows, cols]
        obs = self._stack(rows, cols, hist)
        next_obs = self._stack(rows + 1, cols, torch.clamp(hist.long() + 1, max=self.k - 1))
        cut = self.truncated[rows, cols]
        if self.finals and bool(cut.any()):
            for i in torch.nonzero(cut).flatten().tolist():
                final = self.finals[int(rows[i]) * self.num_envs + int(cols[i])]
                if self.k > 1:
                    next_obs[i, -1] = final
                else:
                    next_obs[i] = final

        def shaped(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n_batches, batch_size, *t.shape[1:])

        return Batch(
            shaped(obs),
            shaped(self.actions[rows, cols]),
            shaped(self.rewards[rows, cols]),
            shaped(next_obs),
            shaped(self.terminated[rows, cols]),
        )

    def state_dict(self, live_obs: np.ndarray | torch.Tensor | None = None) -> dict[str, object]:
        """The filled part only (copied, so torch.save does not write the empty capacity too).

        `live_obs` are the observations the envs are in now: the next observations of the last row. A
        resumed run starts new episodes, so they are kept as final items of that row."""

        def filled(t: torch.Tensor) -> torch.Tensor:
            return t.cpu() if self.filled == self.rows else t[: self.filled].cpu().clone()

        keys = sorted(self.finals)
        return {
            "rows": self.rows,
            "num_envs": self.num_envs,
            "frame_stack": self.k,
            "pos": self.pos,
            "filled": self.filled,
            "generator": self.generator.get_state(),
            "final_keys": torch.tensor(keys, dtype=torch.long),
            "final_items": torch.stack([self.finals[k].cpu() for k in keys]) if keys else None,
            "live_items": None
            if live_obs is None
            else torch.as_tensor(live_obs[:, -1] if self.k > 1 else live_obs).cpu(),
            **{name: filled(field) for name, field in zip(self.FIELDS, self._fields, strict=True)},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        layout = (state["rows"], state["num_envs"], state["frame_stack"], tuple(state["items"].shape[2:]))  # type: ignore[union-attr]
        mine = (self.rows, self.num_envs, self.k, self.item_shape)
        if layout != mine:
            raise ValueError(
                f"saved buffer (rows, envs, frame stack, item) {layout} does not fit this one {mine}; "
                "resume with the same algo.buffer_size, env.num_envs and observation settings"
            )
        filled = int(state["filled"])  # type: ignore[arg-type]
        for name, field in zip(self.FIELDS, self._fields, strict=True):
            field[:filled] = state[name].to(self.device)  # type: ignore[union-attr]
        self.pos, self.filled = int(state["pos"]), filled  # type: ignore[arg-type]
        self.finals = {}
        if state["final_items"] is not None:
            for key, item in zip(state["final_keys"].tolist(), state["final_items"], strict=True):  # type: ignore[union-attr]
                self.finals[int(key)] = item.to(self.device)
        live = state.get("live_items")
        if live is not None and filled:
            # The saved episodes do not continue: the last row's next observations become final items.
            last = (self.pos - 1) % self.rows
            for env in range(self.num_envs):
                if not self.truncated[last, env] and not self.terminated[last, env]:
                    self.truncated[last, env] = True
                    self.finals[last * self.num_envs + env] = live[env].to(self.device, self.items.dtype)  # type: ignore[index]
        self._ep_hist = np.zeros(self.num_envs, dtype=np.uint8)  # the envs restart their episodes
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
