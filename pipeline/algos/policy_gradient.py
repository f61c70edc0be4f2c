"""PPO (Schulman et al., 2017) and REINFORCE with a learned baseline (Williams, 1992), one LightningModule.

One chunk is one rollout — `algo.n_steps` vector steps on this rank's envs — then `algo.epochs`
passes over it in `algo.minibatches` shuffled minibatches. PPO is the clipped surrogate with GAE;
REINFORCE is the same loop with λ = 1 (Monte-Carlo returns, the critic a baseline), one epoch, one
minibatch and no clipping (its YAML sets exactly that). A time-limit truncation bootstraps from
V(final obs), folded into the reward, as SB3 does; a rollout cut mid-episode bootstraps from V of
the next obs. Learning rate and clip range follow linear schedules on the global env-step clock.
Under DDP every rank collects its own rollout and DDP averages the gradients; the KL early stop is
decided jointly so all ranks take the same number of steps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.algos.loop import EnvLoop
from pipeline.algos.optim import adam, clip_grad_norm
from pipeline.config.algo import PolicyGradientConfig
from pipeline.config.root import Config
from pipeline.core.schedules import linear_schedule
from pipeline.core.spec import EnvSpec
from pipeline.networks.actor_critic import ActorCritic, actor_critic_param_groups, build_actor_critic
from pipeline.networks.groups import merge_equal_lr
from pipeline.networks.normalize import RunningNorm
from pipeline.tracking.metrics import RunTarget

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOSS_STATS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm")


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al., 2016) over a [T, N] rollout.

    `dones[t]` = the episode ended at step t (its successor is a new episode's first obs);
    `last_values` = V of the obs after the last step. Returns (advantages, returns = advantages + V)."""
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(last_values)
    next_values = last_values
    for t in range(steps - 1, -1, -1):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * live - values[t]
        running = delta + gamma * lam * live * running
        advantages[t] = running
        next_values = values[t]
    return advantages, advantages + values


def categorical_terms(
    logits: torch.Tensor, actions: torch.Tensor, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the taken discrete actions and the mean entropy (a diagnostic without gradient
    when `with_entropy=False`)."""
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(1, actions.unsqueeze(1)).squeeze(1)
    with torch.set_grad_enabled(with_entropy and torch.is_grad_enabled()):
        entropy = -(logp_all.exp() * logp_all).sum(dim=-1).mean()
    return logp, entropy


def gaussian_terms(
    mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A diagonal Gaussian's log-density of the taken (unclipped) actions, summed over dimensions, and its
    entropy (state-independent log-std: the same for every state)."""
    logp = (-0.5 * ((actions - mean) / log_std.exp()).pow(2) - log_std - HALF_LOG_2PI).sum(-1)
    entropy = (log_std + 0.5 + HALF_LOG_2PI).sum()
    return logp, entropy


def clipped_losses(
    logp: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    old_logp: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float | None,
    value_clip: float | None,
) -> dict[str, torch.Tensor]:
    """Clipped surrogate, (optionally clipped) value loss, and the diagnostics PPO is read by: approx-KL (the
    k3 estimator of Schulman's note) and the fraction of clipped ratios. Any action distribution."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    if clip_range is None:
        policy_loss = -(ratio * advantages).mean()
    else:
        surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip_range, 1 + clip_range) * advantages)
        policy_loss = -surrogate.mean()
    if value_clip is None:
        value_loss = F.mse_loss(values, returns)
    else:
        v_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        value_loss = torch.max((values - returns) ** 2, (v_clipped - returns) ** 2).mean()
    with torch.no_grad():  # diagnostics: no autograd bookkeeping
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipped = ((ratio - 1).abs() > clip_range).float().mean() if clip_range is not None else approx_kl * 0
    return {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": approx_kl,
        "clip_fraction": clipped,
    }


def ppo_losses(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_logp: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float | None,
    value_clip: float | None,
    with_entropy: bool = True,
) -> dict[str, torch.Tensor]:
    """`clipped_losses` for a categorical policy given its logits (discrete actions, text commands)."""
    logp, entropy = categorical_terms(logits, actions, with_entropy)
    return clipped_losses(logp, entropy, values, old_logp, old_values, advantages, returns, clip_range, value_clip)


class PolicyGradient(EnvLoop):
    def __init__(
        self, cfg: Config, spec: EnvSpec, run_target: RunTarget | None = None, weights_file: str | None = None
    ):
        super().__init__(cfg, spec, run_target)
        assert isinstance(cfg.algo, PolicyGradientConfig)
        self.algo: PolicyGradientConfig = cfg.algo
        self.net = self._build_net(weights_file)
        # A submodule: its statistics are checkpointed with the module (resume continues them).
        self.reward_norm = RunningNorm((), center=False) if self.algo.normalize_reward else None

    def _build_net(self, weights_file: str | None) -> ActorCritic:
        """The actor-critic on arrays; text envs override it (`text_ppo.py`)."""
        net = build_actor_critic(
            self.cfg.backbone,
            self.spec,
            self.algo.critic.backbone,
            weights_file,
            ortho_init=self.algo.ortho_init,
            log_std_init=self.algo.log_std_init,
            normalize_obs=self.algo.normalize_obs,
        )
        if self.cfg.hardware.channels_last and self.spec.is_image:
            net = net.to(memory_format=torch.channels_last)
        return net

    @property
    def policy(self) -> ActorCritic:
        return self.net

    def vec_steps_per_chunk(self, world_size: int) -> int:
        return self.algo.n_steps

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = merge_equal_lr(actor_critic_param_groups(self.net, self.cfg.backbone, self.algo.lr))
        for g in groups:
            g["lr_scale"] = g["lr"] / self.algo.lr  # the schedule moves every group, keeping their ratios
        return adam(groups, self.algo.lr, eps=1e-5)

    def lr(self, step: int) -> float:
        a = self.algo
        return a.lr if a.lr_end is None else linear_schedule(a.lr, a.lr_end, self.cfg.total_env_steps, step)

    def clip_range(self, step: int) -> float | None:
        a = self.algo
        if a.clip_range is None or a.clip_range_end is None:
            return a.clip_range
        return linear_schedule(a.clip_range, a.clip_range_end, self.cfg.total_env_steps, step)

    def build_learner(self) -> None:
        n, t = self.cfg.env.num_envs, self.algo.n_steps
        self.rollout_obs = self._empty_rollout_obs(t, n)
        if self.spec.continuous:  # the sampled (unclipped) action vectors: their log-densities are the ratio's
            self.rollout_actions = torch.zeros((t, n, self.spec.n_actions), device=self.device)
        else:
            self.rollout_actions = torch.zeros((t, n), dtype=torch.long, device=self.device)
        self.rollout_logp = torch.zeros((t, n), device=self.device)
        self.values = np.zeros((t, n), dtype=np.float32)
        self.rewards = np.zeros((t, n), dtype=np.float32)
        self.dones = np.zeros((t, n), dtype=np.float32)

    def _scale_rewards(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """`algo.normalize_reward`: rewards over the running std of the discounted return (gymnasium's
        NormalizeReward rule), learned here so the logged returns stay the env's own."""
        self._discounted = self._discounted * self.algo.gamma + rewards
        self.reward_norm.update(torch.from_numpy(self._discounted))
        self._discounted[done] = 0.0
        return self.reward_norm(torch.from_numpy(rewards)).numpy().astype(np.float32)

    def start_learner(self) -> None:
        self._discounted = np.zeros(self.cfg.env.num_envs)
        if self.spec.continuous:
            self._action_low = np.asarray(self.spec.action_low, dtype=np.float32)
            self._action_high = np.asarray(self.spec.action_high, dtype=np.float32)
        self.grad_params = [p for p in self.net.parameters() if p.requires_grad]
        self.net.eval()  # acting mode (BatchNorm statistics fixed while collecting); updates train it

    # ----------------------------------------------------------------- the chunk: rollout, then update
    @torch.inference_mode()
    def _policy_step(self, obs: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Sample actions; returns the obs tensor, actions, and (log-prob, value) rows for the rollout."""
        x = torch.from_numpy(obs).to(self.device)
        logits, value = self.net.logits_and_value(x)
        if self.spec.continuous:  # a diagonal Gaussian around the mean action; the env gets it clipped
            mean, log_std = logits.float(), self.net.log_std
            actions = mean + log_std.exp() * torch.randn_like(mean)
            return x, actions, (gaussian_terms(mean, log_std, actions)[0], value.float())
        logp_all = F.log_softmax(logits.float(), dim=-1)
        # Gumbel-max: argmax(log p + Gumbel noise) is a sample of the softmax; cheaper than multinomial.
        actions = (logp_all - torch.empty_like(logp_all).exponential_().log()).argmax(dim=1)
        return x, actions, (logp_all.gather(1, actions.unsqueeze(1)).squeeze(1), value.float())

    @torch.inference_mode()
    def _values(self, obs: Any) -> np.ndarray:
        return self.net.value(torch.from_numpy(np.asarray(obs)).to(self.device)).float().cpu().numpy()

    # Rollout hooks: an array env keeps observations in one tensor; a text env keeps strings (`text_ppo.py`).
    def _empty_rollout_obs(self, steps: int, num_envs: int) -> Any:
        obs_dtype = torch.from_numpy(np.zeros(1, dtype=self.spec.obs_dtype)).dtype
        return torch.zeros((steps, num_envs, *self.spec.obs_shape), dtype=obs_dtype, device=self.device)

    def _store_obs(self, t: int, x: Any) -> None:
        self.rollout_obs[t] = x

    def _rollout_obs(self, t: int) -> Any:
        """The first `t` steps' observations, flat [t * num_envs, ...], indexable by a tensor of positions."""
        return self.rollout_obs[:t].reshape(t * self.cfg.env.num_envs, *self.spec.obs_shape)

    def _after_step(self, info: dict[str, Any], done: np.ndarray) -> None:
        """Called after each vector step with the env's info (text envs count won episodes)."""

    def _collect(self) -> int:
        a = self.algo
        steps = 0
        for t in range(a.n_steps):
            if self.global_env_steps >= self.cfg.total_env_steps:
                break
            x, actions, (logp, value) = self._policy_step(self.loop.obs)
            actions_np = actions.cpu().numpy()
            if self.spec.continuous:
                actions_np = np.clip(actions_np, self._action_low, self._action_high)
            next_obs, rewards, terminated, truncated, info = self.env.step(actions_np)
            train_rewards = (np.sign(rewards) if self.cfg.env.clip_rewards else rewards).astype(np.float32)
            if self.reward_norm is not None:
                train_rewards = self._scale_rewards(train_rewards, terminated | truncated)
            cut = np.flatnonzero(truncated & ~terminated)
            if cut.size:  # a time limit is not a terminal: bootstrap from the final obs's value
                train_rewards[cut] += a.gamma * self._values([info["final_obs"][i] for i in cut])
            self._store_obs(t, x)
            self.rollout_actions[t] = actions
            self.rollout_logp[t] = logp
            self.values[t] = value.cpu().numpy()
            self.rewards[t] = train_rewards
            done = terminated | truncated
            self.dones[t] = done
            self._after_step(info, done)
            # Episode returns: the env's own rewards (and the shaped ones, when a reward wrapper shapes them).
            self.record_step(next_obs, rewards, done, raw_rewards=info.get("raw_reward"))
            steps += 1
        return steps

    def training_step(self, batch: object, batch_idx: int) -> None:
        a = self.algo
        chunk_start = self.global_env_steps
        t = self._collect()
        if t == 0:
            self.end_chunk(chunk_start, 0, {})
            return
        advantages, returns = gae(
            self.rewards[:t], self.values[:t], self.dones[:t], self._values(self.loop.obs), a.gamma, a.gae_lambda
        )
        stats = self._update(t, advantages, returns)
        self.end_chunk(chunk_start, stats.pop("n_updates"), stats)

    def _update(self, t: int, advantages: np.ndarray, returns: np.ndarray) -> dict[str, float]:
        a, dev = self.algo, self.device
        size = t * self.cfg.env.num_envs
        obs = self._rollout_obs(t)
        actions = self.rollout_actions[:t].reshape(size, *self.rollout_actions.shape[2:])
        old_logp = self.rollout_logp[:t].reshape(size)
        old_values = torch.from_numpy(self.values[:t].reshape(size)).to(dev)
        adv_all = torch.from_numpy(advantages.reshape(size)).to(dev)
        ret_all = torch.from_numpy(returns.reshape(size)).to(dev)
        step = self.global_env_steps
        lr, clip = self.lr(step), self.clip_range(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        n_mb = min(a.minibatches, size)  # a last, shorter rollout keeps the count (smaller minibatches)
        if n_mb == 1 and a.normalize_advantage and size > 1:  # the full batch: normalise once, not per epoch
            adv_all = (adv_all - adv_all.mean()) / (adv_all.std() + 1e-8)
        # The teacher's distributions for the whole rollout, in one batched pass (reused by every epoch).
        teacher_logp = self.distill.log_probs(obs) if self.distill is not None else adv_all
        sums = torch.zeros(len(LOSS_STATS), device=dev)
        n_updates = 0
        stopped_early = False
        self.net.train()
        for _ in range(a.epochs):
            if n_mb == 1:
                batches = [(obs, actions, old_logp, old_values, adv_all, ret_all, teacher_logp)]
            else:
                order = torch.randperm(size, device=dev)
                batches = [
                    (obs[i], actions[i], old_logp[i], old_values[i], adv_all[i], ret_all[i], teacher_logp[i])
                    for i in order.tensor_split(n_mb)
                ]
            for mb_obs, mb_actions, mb_logp, mb_values, adv, ret, mb_teacher in batches:
                if n_mb > 1 and a.normalize_advantage and adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                logits, values = self.net.logits_and_value(mb_obs)
                if self.spec.continuous:
                    logp, entropy = gaussian_terms(logits, self.net.log_std, mb_actions)
                else:
                    logp, entropy = categorical_terms(logits, mb_actions, a.ent_coef > 0)
                out = clipped_losses(logp, entropy, values, mb_logp, mb_values, adv, ret, clip, a.critic.clip_range)
                loss = out["policy_loss"] + a.critic.coef * out["value_loss"]
                if a.ent_coef > 0:
                    loss = loss - a.ent_coef * out["entropy"]
                if self.distill is not None:  # policy distillation replaces the RL loss; kickstarting adds to it
                    term = self.distill.term(mb_obs, logits, mb_teacher)
                    loss = term if self.distill.only else loss + term
                self.optimizer.zero_grad(set_to_none=True)
                self._backward(loss)
                out["grad_norm"] = clip_grad_norm(self.grad_params, a.max_grad_norm)
                self.optimizer.step()
                out["loss"] = loss
                sums += torch.stack([out[k].detach() for k in LOSS_STATS])  # one add, not one per statistic
                n_updates += 1
            if a.target_kl is not None and self._kl_exceeded(float(out["approx_kl"])):
                stopped_early = True
                break
        self.net.eval()
        obs_norm = getattr(self.net, "obs_norm", None)  # (text actor-critics have none)
        if obs_norm is not None:  # the statistics move between rollouts, never within one
            obs_norm.update(obs)
        self.loop.updates += n_updates
        self.check_finite(sums.sum(), "loss or gradient", "lower algo.lr or algo.max_grad_norm")
        stats = {f"train/{k}": v / n_updates for k, v in zip(LOSS_STATS, sums.tolist(), strict=True)}
        var = float(ret_all.var())
        stats["train/explained_variance"] = float("nan") if var == 0 else 1 - float((ret_all - old_values).var()) / var
        stats |= {"train/lr": lr, "train/early_stop": float(stopped_early), "n_updates": n_updates}
        if clip is not None:
            stats["train/clip_range"] = clip
        return stats

    def _kl_exceeded(self, approx_kl: float) -> bool:
        """SB3's rule (stop the epochs past 1.5 × target_kl), decided by all ranks together."""
        exceeded = approx_kl > 1.5 * self.algo.target_kl
        if self.trainer.world_size > 1:
            exceeded = self.trainer.strategy.reduce_boolean_decision(exceeded, all=False)
        return exceeded
