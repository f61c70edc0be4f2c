"""SAC and TD3: off-policy actor-critics for continuous actions with twin Q critics, as one LightningModule.

Read it top to bottom: `training_step` is one chunk — `algo.chunk_steps` env steps, with the training rounds
that fall inside it (every `algo.train_freq` env steps, `algo.gradient_steps` updates). Before
`algo.learning_starts` the actions are uniformly random and nothing updates. Each update: the critics
regress on the twin-minimum bootstrap target, then the actor (SAC: every update, against the entropy-
regularised minimum Q, the entropy coefficient tuned towards `-|A|`; TD3: every `policy_delay` updates,
against Q1), then the targets move by Polyak averaging. Actions are in [-1, 1] here; the env sees them scaled
to its bounds. The entropy coefficient (a parameter) and its optimiser are in the checkpoint; the noise
schedules run on the env-step clock, so a resumed run continues both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.algos.buffers import ReplayLearner
from pipeline.algos.loop import EnvLoop
from pipeline.algos.optim import adam, clip_grad_norm
from pipeline.config.algo import ContinuousQConfig, SACConfig, TD3Config, parse_ent_coef
from pipeline.config.root import Config
from pipeline.core.schedules import linear_schedule
from pipeline.core.spec import EnvSpec
from pipeline.networks.continuous import (
    ContinuousActorCritic,
    actor_param_groups,
    build_continuous_actor_critic,
    critic_param_groups,
    frozen_copy,
    squashed_sample,
)
from pipeline.networks.groups import merge_equal_lr
from pipeline.tracking.metrics import RunTarget

STATS = ("critic_loss", "actor_loss", "q_mean", "entropy", "ent_coef", "actor_updates")


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ's augmentation (Kostrikov et al., 2020): each frame stack padded by `pad` edge pixels, then cropped
    back at a random offset (the same for the stack's frames). Returns float frames on the 0–255 scale."""
    n, c, h, w = frames.shape
    padded = F.pad(frames.float(), (pad, pad, pad, pad), mode="replicate")
    dev = frames.device
    oy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    rows = (oy + torch.arange(h, device=dev)).view(n, 1, h, 1)
    cols = (ox + torch.arange(w, device=dev)).view(n, 1, 1, w)
    batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
    channels = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[batch, channels, rows, cols]


def float_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every floating parameter and buffer, in a fixed order (listed once: `state_dict()` costs ~0.1 ms a call)."""
    return [t for t in module.state_dict(keep_vars=True).values() if t.is_floating_point()]


@torch.no_grad()
def polyak(target: torch.nn.Module | list[torch.Tensor], online: torch.nn.Module | list[torch.Tensor], tau: float):
    """target ← lerp(target, online, tau) over every floating tensor, in one fused call (modules, or the lists
    `float_tensors` made of them). Integer buffers (BatchNorm's step count) stay as they are: nothing reads them."""
    t = float_tensors(target) if isinstance(target, torch.nn.Module) else target
    o = float_tensors(online) if isinstance(online, torch.nn.Module) else online
    t, o = [x.data for x in t], [x.data for x in o]
    if tau >= 1.0:
        torch._foreach_copy_(t, o)
    else:
        torch._foreach_lerp_(t, o, tau)


@contextmanager
def critics_fixed(params: list[torch.Tensor]) -> Iterator[None]:
    """The actor's loss differentiates through the critics but must not train them: their weight gradients
    are not computed at all (a third of that backward pass on a 256x256 MLP)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class ContinuousQ(ReplayLearner, EnvLoop):
    """SAC (`algo=sac`) or TD3 (`algo=td3`), by the config's family."""

    def __init__(
        self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None, weights_file: str | None = None
    ):
        super().__init__(cfg, spec, run_target)
        assert isinstance(cfg.algo, ContinuousQConfig)
        self.algo: ContinuousQConfig = cfg.algo
        self.is_sac = isinstance(cfg.algo, SACConfig)
        self.net: ContinuousActorCritic = build_continuous_actor_critic(
            cfg.backbone, spec, cfg.algo.hidden_sizes, gaussian=self.is_sac, weights_file=weights_file
        )
        if cfg.hardware.channels_last and spec.is_image:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.target_critics = frozen_copy(self.net.critics)
        self.target_actor = None if self.is_sac else frozen_copy(self.net.actor)
        self.n_actions = spec.n_actions
        if self.is_sac:
            a: SACConfig = cfg.algo
            self.tune_entropy, start = parse_ent_coef(a.ent_coef)
            self.log_ent_coef = torch.nn.Parameter(torch.tensor(math.log(start)), requires_grad=self.tune_entropy)
            self.target_entropy = float(-spec.n_actions if a.target_entropy is None else a.target_entropy)
        # The frozen-feature cache: a frozen shared encoder runs once per env step and the buffer keeps features.
        self.cache_features = self.net.shared and self.net.encoder.frozen and cfg.backbone.cache_features
        self.augment = cfg.algo.augment == "shift" and spec.is_image and not self.cache_features

    @property
    def policy(self) -> ContinuousActorCritic:
        return self.net

    @property
    def feature_encoder(self) -> torch.nn.Module:
        return self.net.encoder

    def vec_steps_per_chunk(self, world_size: int) -> int:
        return max(1, self.algo.chunk_steps // (self.cfg.env.num_envs * world_size))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        a, b = self.algo, self.cfg.backbone

        def merged(groups: list[dict]) -> list[dict]:
            return merge_equal_lr([g for g in groups if g["params"]])

        critic_lr = a.critic_lr if a.critic_lr is not None else a.lr
        optimizers = [
            adam(merged(critic_param_groups(self.net, b, critic_lr)), critic_lr),
            adam(merged(actor_param_groups(self.net, b, a.lr)), a.lr),
        ]
        if self.is_sac and self.tune_entropy:
            ent_lr = self.algo.ent_lr if self.algo.ent_lr is not None else a.lr
            optimizers.append(adam([{"params": [self.log_ent_coef]}], ent_lr))
        return optimizers

    def build_learner(self) -> None:
        self.build_replay(self.algo.buffer_size, self.algo.gamma, action_shape=(self.n_actions,))
        self.shift_generator = torch.Generator(device=self.device)
        self.shift_generator.manual_seed(self.cfg.seed + 17)
        mid, half = self.net.action_mid.cpu().numpy(), self.net.action_half.cpu().numpy()
        self._action_mid, self._action_half = mid.astype(np.float64), half.astype(np.float64)

    def start_learner(self) -> None:
        a = self.algo
        opts = self.optimizer if isinstance(self.optimizer, list) else [self.optimizer]
        self.critic_opt, self.actor_opt = opts[0], opts[1]
        self.ent_opt = opts[2] if len(opts) > 2 else None
        self.critic_params = [p for g in self.critic_opt.param_groups for p in g["params"]]
        self.actor_params = [p for g in self.actor_opt.param_groups for p in g["params"]]
        self._critic_pair = (float_tensors(self.target_critics), float_tensors(self.net.critics))
        if self.target_actor is not None:
            self._actor_pair = (float_tensors(self.target_actor), float_tensors(self.net.actor))
        self._min_fill = self.replay_min_fill(a.batch_size, a.learning_starts, a.buffer_size, self.trainer.world_size)
        self.net.eval()  # acting mode; updates switch to train mode where that changes anything:
        # `train()` walks the module tree (~1 % of a state-vector step at train_freq 1), and only BatchNorm and
        # dropout read the mode.
        mode_dependent = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)
        self._mode_matters = any(isinstance(m, mode_dependent) for m in self.net.modules())

    def start_metrics(self) -> dict[str, float]:
        return self.replay_start_metrics()

    def train(self, mode: bool = True) -> ContinuousQ:
        super().train(mode)
        self.target_critics.eval()
        if self.target_actor is not None:
            self.target_actor.eval()
        return self

    def ent_coef(self) -> torch.Tensor:
        return self.log_ent_coef.detach().exp()

    def action_noise(self, step: int) -> float:
        a = self.algo
        assert isinstance(a, TD3Config)
        if a.action_noise_end is None:
            return a.action_noise
        return linear_schedule(a.action_noise, a.action_noise_end, a.action_noise_decay_steps, step)

    # ----------------------------------------------------------------- the chunk
    def training_step(self, batch: Any, batch_idx: int) -> None:
        a = self.algo
        per_vec = self.loop.steps_per_vec
        chunk_start = self.global_env_steps
        sums = torch.zeros(len(STATS), device=self.device)
        n_updates = 0
        for _ in range(self.vec_steps_per_chunk(self.trainer.world_size)):
            if self.global_env_steps >= self.cfg.total_env_steps:
                break
            self._collect()
            step, prev = self.global_env_steps, self.global_env_steps - per_vec
            rounds = step // a.train_freq - prev // a.train_freq
            if rounds and step >= a.learning_starts and len(self.buffer) >= self._min_fill:
                sums += self._learn(rounds * a.gradient_steps)
                n_updates += rounds * a.gradient_steps
        self.check_finite(sums.sum(), "loss, Q-value or gradient", "lower algo.lr or set algo.max_grad_norm")
        metrics: dict[str, float] = {}
        if not self.is_sac:
            metrics["train/action_noise"] = self.action_noise(self.global_env_steps)
        if n_updates:
            stats = dict(zip(STATS, sums.tolist(), strict=True))
            actor_updates = max(stats.pop("actor_updates"), 1.0)
            metrics["train/critic_loss"] = stats["critic_loss"] / n_updates
            metrics["train/q_mean"] = stats["q_mean"] / n_updates
            metrics["train/actor_loss"] = stats["actor_loss"] / actor_updates
            if self.is_sac:
                metrics["train/entropy"] = stats["entropy"] / n_updates
                metrics["train/ent_coef"] = stats["ent_coef"] / n_updates
        self.end_chunk(chunk_start, n_updates, metrics)

    # ----------------------------------------------------------------- acting
    @torch.inference_mode()
    def _act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray | torch.Tensor]:
        """Actions in [-1, 1] (random before learning_starts, then the exploring policy), and the buffer items."""
        items = self._items(obs)
        n = len(obs)
        if self.global_env_steps < self.algo.learning_starts:
            return self.rng.uniform(-1.0, 1.0, size=(n, self.n_actions)).astype(np.float32), items
        x = items if self.cache_features else self.net.encode(torch.from_numpy(np.asarray(obs)).to(self.device))
        mean, log_std = self.net.actor_out(x)
        if self.is_sac:
            action = squashed_sample(mean, log_std)[0]
        else:
            noise = self.action_noise(self.global_env_steps) * torch.randn_like(mean)
            action = (torch.tanh(mean) + noise).clamp(-1.0, 1.0)
        return action.float().cpu().numpy(), items

    def _collect(self) -> None:
        actions, items = self._act(self.loop.obs)
        self.step_and_store(items, actions, (self._action_mid + self._action_half * actions).astype(np.float32))

    # ----------------------------------------------------------------- learning
    def _features(self, items: torch.Tensor) -> torch.Tensor:
        """The heads' input for stored items: cached features as they are, else encoded (shifted if augmenting)."""
        if self.cache_features:
            return items
        if self.augment:
            items = random_shift(items, self.algo.augment_pad, self.shift_generator)
        return self.net.encode(items)

    def _step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        if self.algo.max_grad_norm is not None:
            clip_grad_norm(params, self.algo.max_grad_norm)
        optimizer.step()

    def _learn(self, n_updates: int) -> torch.Tensor:
        """`n_updates` updates on batches drawn in one gather; returns the sums of STATS."""
        a = self.algo
        batch = self.buffer.sample(a.batch_size, n_updates)
        sums = torch.zeros(len(STATS), device=self.device)
        zero = torch.zeros((), device=self.device)  # its own tensor: a view of `sums` would follow the sums
        if self._mode_matters:
            self.net.train()
        for i in range(n_updates):
            z = self._features(batch.obs[i])
            with torch.no_grad():
                z_next = self._features(batch.next_obs[i])
                next_v = self._next_value(z_next)
                target = batch.rewards[i] + batch.discounts[i] * next_v
            q = self.net.q_values(z, batch.actions[i])
            critic_loss = 0.5 * ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()
            self._step(self.critic_opt, self.critic_params, critic_loss)
            update = self.loop.updates + i
            actor_loss, entropy, ent_coef, actor_updates = zero, zero, zero, zero
            if self.is_sac:
                actor_loss, entropy, ent_coef = self._sac_actor(z.detach())
                actor_updates = zero + 1
                if (update + 1) % self.algo.target_update_interval == 0:
                    polyak(*self._critic_pair, a.tau)
            elif (update + 1) % self.algo.policy_delay == 0:
                mean, _ = self.net.actor_out(z.detach())
                with critics_fixed(self.critic_params):
                    actor_loss = -self.net.critics[0](z.detach(), torch.tanh(mean)).mean()
                    self._step(self.actor_opt, self.actor_params, actor_loss)
                polyak(*self._critic_pair, a.tau)
                polyak(*self._actor_pair, a.tau)
                actor_loss, actor_updates = actor_loss.detach(), zero + 1
            sums += torch.stack([critic_loss.detach(), actor_loss, q.detach().mean(), entropy, ent_coef, actor_updates])
        if self._mode_matters:
            self.net.eval()
        self.loop.updates += n_updates
        return sums

    def _next_value(self, z_next: torch.Tensor) -> torch.Tensor:
        """SAC: min target Q at a sampled next action, minus α log π. TD3: min target Q at the target actor's
        smoothed action."""
        if self.is_sac:
            mean, log_std = self.net.actor_out(z_next)
            next_action, next_logp = squashed_sample(mean, log_std)
            q = self.net.q_values(z_next, next_action, self.target_critics).min(dim=0).values
            return q - self.ent_coef() * next_logp
        a = self.algo
        mean, _ = self.target_actor(z_next)
        noise = (a.target_noise * torch.randn_like(mean)).clamp(-a.target_noise_clip, a.target_noise_clip)
        next_action = (torch.tanh(mean) + noise).clamp(-1.0, 1.0)
        return self.net.q_values(z_next, next_action, self.target_critics).min(dim=0).values

    def _sac_actor(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The actor against min Q − α log π, then α towards the target entropy; returns (actor loss, entropy
        estimate, α) detached."""
        mean, log_std = self.net.actor_out(z)
        action, logp = squashed_sample(mean, log_std)
        with critics_fixed(self.critic_params):
            q = self.net.q_values(z, action).min(dim=0).values
            alpha = self.ent_coef()
            actor_loss = (alpha * logp - q).mean()
            self._step(self.actor_opt, self.actor_params, actor_loss)
        logp = logp.detach()
        if self.ent_opt is not None:
            ent_loss = -(self.log_ent_coef * (logp + self.target_entropy)).mean()
            self.ent_opt.zero_grad(set_to_none=True)
            ent_loss.backward()
            self.ent_opt.step()
        return actor_loss.detach(), -logp.mean(), alpha
