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

import json
import logging
from typing import NamedTuple

import numpy as np
import torch

from pipeline.algos.sumtree import SumTree

_log = logging.getLogger(__name__)


class Batch(NamedTuple):
    """Transitions; every field has leading dims [n_batches, batch_size]. With n-step returns `rewards`
    is the discounted sum over up to n steps and `next_obs` the observation after them; the TD target
    is `rewards + discounts * V(next_obs)`."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor  # the episode terminated within the n steps (no bootstrap)
    discounts: torch.Tensor  # gamma**m (m = steps taken, <= n), 0 where terminated
    weights: torch.Tensor  # importance-sampling weights (prioritised replay; else ones)
    indices: torch.Tensor  # flat slot of each transition, for `update_priorities`


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
        n_step: int = 1,
        gamma: float = 0.99,
        priority_alpha: float | None = None,
        action_shape: tuple[int, ...] = (),
    ):
        """`action_shape` () stores one discrete action index per transition; (A,) a float action vector."""
        self.num_envs = num_envs
        self.k = frame_stack
        self.n_step = n_step
        self.gamma = gamma
        self.rows = max(-(-capacity // num_envs), frame_stack + n_step)
        self.capacity = self.rows * num_envs
        self.device = torch.device(device)
        shape = (self.rows, num_envs)
        # For frame stacks the item is one frame: obs[:, -1] of a [k, H, W] observation.
        self.item_shape = tuple(item_shape[1:]) if frame_stack > 1 else tuple(item_shape)
        self.items = torch.empty((*shape, *self.item_shape), dtype=_torch_dtype(item_dtype), device=self.device)
        action_dtype = torch.float32 if action_shape else torch.long
        self.actions = torch.empty((*shape, *action_shape), dtype=action_dtype, device=self.device)
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
        # Prioritised replay: priorities p**alpha in a sum-tree over the flat slots; only sampleable
        # transitions have a non-zero leaf (a new one gets the largest priority seen so far).
        self.alpha = priority_alpha
        self.tree = SumTree(self.capacity, self.device) if priority_alpha is not None else None
        self.max_priority = 1.0
        self._pending: list[tuple[range, int | None]] = []

    def __len__(self) -> int:
        """Transitions that can be sampled (their next observation and their stack's history are present)."""
        return self._sampleable_rows() * self.num_envs

    def stored(self) -> int:
        """Transitions held (the newest one becomes sampleable once its next observation arrives)."""
        return self.filled * self.num_envs

    def _sampleable_rows(self) -> int:
        """Rows whose n next rows are written and, once wrapped, whose frame history is intact."""
        if self.filled < self.rows:
            return max(self.filled - self.n_step, 0)
        return self.rows - (self.k - 1) - self.n_step

    def _first_row(self) -> int:
        return 0 if self.filled < self.rows else (self.pos + self.k - 1) % self.rows

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
        if self.tree is not None:
            # Row `row` and the rows whose history it overwrote leave the tree; the row that now has its
            # n next rows enters it. Applied in one tree update before the next sample (`_flush`).
            gone = range(row, row + self.k) if self.filled == self.rows else range(row, row + 1)
            ready = row - self.n_step if self._sampleable_rows() > 0 else None
            self._pending.append((gone, ready))

    def _flush(self) -> None:
        """Apply the pending row changes to the sum-tree, in order, as one batched update."""
        if not self._pending or self.tree is None:
            return
        new = self.max_priority**self.alpha  # type: ignore[operator]
        final: dict[int, float] = {}
        for gone, ready in self._pending:
            for r in gone:
                base = (r % self.rows) * self.num_envs
                final.update(dict.fromkeys(range(base, base + self.num_envs), 0.0))
            if ready is not None:
                base = (ready % self.rows) * self.num_envs
                final.update(dict.fromkeys(range(base, base + self.num_envs), new))
        self._pending.clear()
        self.tree.set(torch.tensor(list(final)), torch.tensor(list(final.values())))

    def priorities(self) -> torch.Tensor:
        """Each slot's sampling priority (p ** alpha; 0 where not sampleable)."""
        assert self.tree is not None
        self._flush()
        return self.tree.state_dict()["leaves"]

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor, eps: float = 1e-6) -> None:
        """New priorities |δ| + eps (to the power alpha) for the sampled slots."""
        assert self.tree is not None and self.alpha is not None
        self._flush()
        priority = td_errors.detach().abs().double().flatten() + eps
        self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.set(indices.flatten(), priority**self.alpha)

    def _stack(self, rows: torch.Tensor, cols: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return self.items[rows % self.rows, cols]
        offsets = torch.maximum(self._offsets.unsqueeze(0), -hist.long().unsqueeze(1))  # [B, k]
        return self.items[(rows.unsqueeze(1) + offsets) % self.rows, cols.unsqueeze(1)]

    def sample(self, batch_size: int, n_batches: int = 1, beta: float = 1.0) -> Batch:
        """All batches in one gather: uniform with replacement, or proportional to priority (with
        importance weights (N P(i))^-beta, normalised by the batch's largest) when prioritised."""
        n_rows = self._sampleable_rows()
        if n_rows == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        count = n_batches * batch_size
        g = self.generator
        weights = torch.ones(count, device=self.device)
        if self.tree is None:
            rows = (torch.randint(0, n_rows, (count,), device=self.device, generator=g) + self._first_row()) % self.rows
            cols = torch.randint(0, self.num_envs, (count,), device=self.device, generator=g)
        else:
            self._flush()
            total = self.tree.total
            # Stratified: one draw per equal slice of the total priority mass.
            u = (torch.arange(count, device=self.device) + torch.rand(count, device=self.device, generator=g)) / count
            slots = self.tree.find(torch.clamp(u * total, max=total * (1 - 1e-12))).to(self.device)
            rows, cols = slots // self.num_envs, slots % self.num_envs
            prob = self.tree.tree[slots.to(self.tree.tree.device) + self.tree.n_leaves].to(self.device) / total
            w = (n_rows * self.num_envs * prob).clamp(min=1e-12) ** (-beta)
            weights = (w / w.max()).float()
        hist = self.hist[rows, cols]
        obs = self._stack(rows, cols, hist)
        # n-step: rewards summed while the episode lasts; m = steps taken before it ended (or n).
        returns = torch.zeros(count, dtype=torch.float32, device=self.device)
        alive = torch.ones(count, dtype=torch.bool, device=self.device)
        steps = torch.zeros(count, dtype=torch.long, device=self.device)
        terminal = torch.zeros(count, dtype=torch.float32, device=self.device)
        cut = torch.zeros(count, dtype=torch.bool, device=self.device)
        for k in range(self.n_step):
            r = (rows + k) % self.rows
            returns += alive * (self.gamma**k) * self.rewards[r, cols]
            steps += alive
            ended_term = alive & (self.terminated[r, cols] > 0)
            ended_cut = alive & self.truncated[r, cols]
            terminal = torch.where(ended_term, 1.0, terminal)
            cut |= ended_cut
            alive &= ~(ended_term | ended_cut)
        next_hist = torch.clamp(hist.long() + steps, max=self.k - 1)
        next_obs = self._stack(rows + steps, cols, next_hist)
        if self.finals and bool(cut.any()):  # a time limit ended the episode: bootstrap from its final obs
            last = (rows + steps - 1) % self.rows
            for i in torch.nonzero(cut).flatten().tolist():
                final = self.finals[int(last[i]) * self.num_envs + int(cols[i])]
                if self.k > 1:
                    next_obs[i, -1] = final
                else:
                    next_obs[i] = final
        discounts = (self.gamma ** steps.double()).float() * (1.0 - terminal)

        def shaped(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n_batches, batch_size, *t.shape[1:])

        return Batch(
            shaped(obs),
            shaped(self.actions[rows, cols]),
            shaped(returns),
            shaped(next_obs),
            shaped(terminal),
            shaped(discounts),
            shaped(weights),
            shaped(rows * self.num_envs + cols),
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
            "priorities": None if self.tree is None else self.priorities(),
            "max_priority": self.max_priority,
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
        if self.tree is not None and state.get("priorities") is not None:
            self.tree.load_state_dict({"leaves": state["priorities"]})  # type: ignore[dict-item]
            self.max_priority = float(state["max_priority"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]


class TextReplay:
    """Replay for text envs: the transitions' strings themselves (state, command, next state and its
    command list), no padded tensors. Strings repeat, so the cost is references plus the distinct texts;
    embeddings come from the encoder's cache at sample time."""

    def __init__(self, capacity: int, seed: int):
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.states: list[str] = []
        self.actions: list[str] = []
        self.next_states: list[str] = []
        self.next_sets: list[tuple[str, ...]] = []
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.cursor = 0

    def __len__(self) -> int:
        return len(self.states)

    def add(self, state: str, action: str, reward: float, terminated: bool, next_state: str, next_set: list[str]):
        row = (state, action, next_state, tuple(next_set))
        i = self.cursor
        if len(self.states) < self.capacity:
            for column, value in zip((self.states, self.actions, self.next_states, self.next_sets), row, strict=True):
                column.append(value)
        else:
            self.states[i], self.actions[i], self.next_states[i], self.next_sets[i] = row
        self.rewards[i], self.terminated[i] = reward, terminated
        self.cursor = (i + 1) % self.capacity

    def sample(self, batch_size: int) -> dict:
        idx = self.rng.integers(0, len(self.states), size=batch_size)
        return {
            "states": [self.states[i] for i in idx],
            "actions": [self.actions[i] for i in idx],
            "next_states": [self.next_states[i] for i in idx],
            "next_sets": [list(self.next_sets[i]) for i in idx],
            "rewards": torch.from_numpy(self.rewards[idx]),
            "terminated": torch.from_numpy(self.terminated[idx]),
        }

    def state_dict(self) -> dict:
        n = len(self.states)
        return {
            "states": list(self.states),
            "actions": list(self.actions),
            "next_states": list(self.next_states),
            "next_sets": [list(s) for s in self.next_sets],
            "rewards": torch.from_numpy(self.rewards[:n].copy()),
            "terminated": torch.from_numpy(self.terminated[:n].copy()),
            "cursor": self.cursor,
            "rng": json.dumps(self.rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict) -> None:
        self.states, self.actions = list(state["states"]), list(state["actions"])
        self.next_states = list(state["next_states"])
        self.next_sets = [tuple(s) for s in state["next_sets"]]
        n = len(self.states)
        self.rewards[:n] = state["rewards"].numpy()
        self.terminated[:n] = state["terminated"].numpy()
        self.cursor = int(state["cursor"])
        self.rng.bit_generator.state = json.loads(state["rng"])


class ReplayLearner:
    """What every learner with a `ReplayBuffer` does the same way (DQN, SAC, TD3): what a row stores (the
    observation, or a frozen encoder's features), a vector step stored with its time-limit final observations,
    the buffer in checkpoints when it fits under `checkpoint.buffer_max_gb`, and how full it must be before
    updates. A mixin before `EnvLoop`: expects `self.cfg`, `self.spec`, `self.loop`, `self.device`, `self.env`,
    `self.resume_from`, `self.record_step`, and sets `self.buffer`; a learner names `cache_features` and
    `feature_encoder` (the frozen encoder whose features are stored)."""

    restored_buffer = False
    _warned_buffer = False
    cache_features = False
    feature_encoder = None

    def build_replay(self, capacity: int, gamma: float, **kwargs) -> ReplayBuffer:
        """Frozen features (one vector per transition), frames (the newest of each stack), or state vectors
        (floating ones as float32, what the networks compute in: MuJoCo's arrive as float64)."""
        spec = self.spec
        if self.cache_features:
            shape, dtype, stack = self.feature_encoder.out_shape, torch.float32, 1
        elif spec.is_image or not np.issubdtype(spec.obs_dtype, np.floating):
            shape, dtype, stack = spec.obs_shape, spec.obs_dtype, spec.frame_stack
        else:
            shape, dtype, stack = spec.obs_shape, torch.float32, 1
        self.buffer = ReplayBuffer(
            capacity, shape, dtype, self.cfg.env.num_envs, stack, self.device,
            seed=self.cfg.seed + self.global_rank, gamma=gamma, **kwargs,
        )  # fmt: skip
        return self.buffer

    @torch.inference_mode()
    def _items(self, obs: np.ndarray) -> np.ndarray | torch.Tensor:
        """What the buffer stores for these observations: themselves, or their frozen features."""
        if not self.cache_features:
            return obs
        return self.feature_encoder(torch.from_numpy(np.asarray(obs)).to(self.device))

    def step_and_store(self, items: np.ndarray | torch.Tensor, actions: np.ndarray, env_actions: np.ndarray) -> None:
        """One vector step: `env_actions` to the envs, `actions` (as the learner sees them) and the outcome into
        the buffer; a time limit keeps its final observation, the bootstrap target's (not the reset one)."""
        next_obs, rewards, terminated, truncated, info = self.env.step(env_actions)
        finals = None
        cut = np.flatnonzero(truncated & ~terminated)
        if cut.size:
            final_obs = np.stack([info["final_obs"][i] for i in cut])
            finals = dict(zip(cut.tolist(), self._items(final_obs), strict=True))
        train_rewards = np.sign(rewards) if self.cfg.env.clip_rewards else rewards
        self.buffer.add(items, actions, train_rewards, terminated, truncated, finals)
        self.record_step(next_obs, rewards, terminated | truncated)

    def learner_state(self) -> dict | None:
        ckpt = self.cfg.checkpoint
        if not ckpt.buffer:
            return None
        if self.buffer.nbytes() > ckpt.buffer_max_gb * 2**30:
            if not self._warned_buffer:
                _log.warning(
                    "replay buffer (%.1f GB) is above checkpoint.buffer_max_gb=%s: checkpoints leave it out "
                    "and a resumed run refills it",
                    self.buffer.nbytes() / 2**30,
                    ckpt.buffer_max_gb,
                )
                self._warned_buffer = True
            return None
        return {"buffer": self.buffer.state_dict(self._items(self.loop.obs))}

    def load_learner_state(self, state: dict | None) -> None:
        if state is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.restored_buffer = state is not None

    def replay_min_fill(self, batch_size: int, learning_starts: int, buffer_size: int, world_size: int) -> int:
        """Transitions this rank's buffer holds before a gradient step samples it: a batch, and after a resume
        without the buffer, `learning_starts` again (shared among the ranks)."""
        refill = self.resume_from is not None and not self.restored_buffer
        per_rank_start = learning_starts // world_size
        return min(max(batch_size, per_rank_start if refill else 0), buffer_size)

    def replay_start_metrics(self) -> dict[str, float]:
        if self.resume_from is not None:
            run_id = self.writer.target.run_id
            self.writer.client.set_tag(run_id, "resume_buffer_restored", str(self.restored_buffer).lower())
            self.writer.client.set_tag(run_id, "resume_buffer_size", str(self.buffer.stored()))
        return {"replay/bytes_per_transition": self.buffer.bytes_per_transition()}
