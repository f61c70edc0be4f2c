"""Which learner runs a config (one LightningModule per family, all on the shared loop in `loop.py`), and
the refusal of an algorithm on an env it cannot use, before Lightning loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.config.algo import ContinuousQConfig, DQNConfig, PolicyGradientConfig, TabularConfig
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError
from pipeline.core.spec import EnvSpec

if TYPE_CHECKING:  # the learners import Lightning; check_env must not (the CLI refuses before it loads)
    from pipeline.algos.loop import EnvLoop


def check_env(cfg: Config, spec: EnvSpec) -> None:
    """Refuse an algorithm on an observation space it cannot use, naming the fix, before anything runs."""
    tabular = isinstance(cfg.algo, TabularConfig)
    _check_actions(cfg, spec)
    if cfg.reward.name == "lm_similarity" and not spec.is_text and not tabular:
        raise ConfigError(
            f"reward=lm_similarity: env={cfg.env.name} has no text to compare with the goal; use a text env "
            "(env=textworld, env=traffic_light_text) or a grid world with a tabular algorithm (env=frozenlake "
            "algo=q_learning)"
        )
    if spec.is_text:
        if cfg.distill.name != "none":
            raise ConfigError(
                f"distill={cfg.distill.name}: distillation is not wired for text envs (env={cfg.env.name}); "
                "set distill=none"
            )
        if isinstance(cfg.algo, PolicyGradientConfig):
            return
        if not isinstance(cfg.algo, DQNConfig):
            raise ConfigError(
                f"algo={cfg.algo.name}: env={cfg.env.name} is a text game with a variable command list; "
                "use algo=dqn or algo=double_dqn (a DRRN over the admissible commands), or algo=ppo / reinforce"
            )
        a = cfg.algo
        if a.n_step != 1 or a.prioritized or a.dueling:
            raise ConfigError(
                f"algo={a.name}: n-step returns, prioritised replay and dueling heads are not wired for text envs; "
                "set algo.n_step=1 algo.prioritized=false algo.dueling=false (or algo=double_dqn)"
            )
        return
    if tabular and spec.n_states is None:
        raise ConfigError(
            f"algo={cfg.algo.name}: a Q-table needs a discrete observation space, env={cfg.env.name} observes "
            f"arrays of shape {spec.obs_shape}; use env=frozenlake, taxi, cliffwalking or traffic_light, or a "
            "function approximator (algo=dqn, algo=ppo)"
        )
    if not tabular and spec.n_states is not None:
        raise ConfigError(
            f"algo={cfg.algo.name}: env={cfg.env.name} observes one of {spec.n_states} discrete states, not "
            "arrays for a backbone; use a tabular algorithm (algo=q_learning, sarsa or expected_sarsa)"
        )


def _check_actions(cfg: Config, spec: EnvSpec) -> None:
    """An algorithm on the action space it was built for: Q-values over a finite set, or a squashed Gaussian."""
    continuous_only = isinstance(cfg.algo, ContinuousQConfig)
    if spec.continuous and isinstance(cfg.algo, DQNConfig | TabularConfig):
        raise ConfigError(
            f"algo={cfg.algo.name}: env={cfg.env.name} has continuous actions ({spec.n_actions}-dimensional Box); "
            "use algo=sac, td3 or ppo"
        )
    if continuous_only and not spec.continuous:
        raise ConfigError(
            f"algo={cfg.algo.name}: env={cfg.env.name} has discrete actions ({spec.n_actions} of them); "
            f"{cfg.algo.name} acts with a continuous policy: use algo=dqn, double_dqn or ppo"
        )
    if spec.continuous and cfg.distill.name != "none":
        raise ConfigError(
            f"distill={cfg.distill.name}: distillation matches discrete action distributions; env={cfg.env.name} "
            "has continuous actions: set distill=none"
        )


def build_module(cfg: Config, spec: EnvSpec, weights_file: str | None = None) -> EnvLoop:
    """The learner for `cfg.algo`'s family (imported lazily: each pulls in only what it needs)."""
    if spec.is_text and isinstance(cfg.algo, PolicyGradientConfig):
        from pipeline.algos.text_ppo import TextPolicyGradient

        return TextPolicyGradient(cfg, spec, weights_file=weights_file)
    if spec.is_text:
        from pipeline.algos.text_dqn import TextDQN

        return TextDQN(cfg, spec, weights_file=weights_file)
    if isinstance(cfg.algo, DQNConfig):
        from pipeline.algos.dqn import DQN

        return DQN(cfg, spec, weights_file=weights_file)
    if isinstance(cfg.algo, TabularConfig):
        from pipeline.algos.tabular import Tabular

        return Tabular(cfg, spec)
    if isinstance(cfg.algo, ContinuousQConfig):
        from pipeline.algos.sac import ContinuousQ

        return ContinuousQ(cfg, spec, weights_file=weights_file)
    assert isinstance(cfg.algo, PolicyGradientConfig)
    from pipeline.algos.policy_gradient import PolicyGradient

    return PolicyGradient(cfg, spec, weights_file=weights_file)
