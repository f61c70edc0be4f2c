"""`env` group: which environment, how it is observed and vectorised (conf/env/*.yaml documents each key)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from pipeline.config.check import one_of, require

OBS_MODES = ("auto", "state", "pixels", "text")
ENV_KINDS = ("gym", "atari", "minatar", "digits", "text", "textworld", "dmc", "highway", "robotics")
TEXT_ENV_KINDS = ("text", "textworld")
RENDER_QUALITIES = ("fast", "default")
# gymnasium ids whose own observations are pictures (CarRacing's 96x96 RGB top view): no state vector to observe.
PIXELS_ONLY_IDS = ("CarRacing-",)
# Families seen through state vectors only (Fetch: its goal-conditioned dict, flattened).
STATE_ONLY_KINDS = ("robotics",)


@dataclass
class TextWorldConfig:
    """A seeded family of generated TextWorld games (pipeline/envs/textworld.py)."""

    world_size: int = 3
    nb_objects: int = 4
    quest_length: int = 3
    train_games: int = 1
    held_out_games: int = 1
    game_seed: int = 1
    intermediate_rewards: bool = False
    cache_dir: str | None = None


@dataclass
class EnvConfig:
    name: str = MISSING
    id: str = MISSING
    kind: str = "gym"
    obs_mode: str = "auto"
    num_envs: int = 1
    frame_size: int = 84
    frame_stack: int = 4
    max_episode_steps: int | None = None
    solved_return: float | None = None
    clip_rewards: bool = False
    sticky_actions: float = 0.0
    noop_max: int = 30
    frame_skip: int = 4
    fire_reset: bool = True
    action_repeat: int = 1
    render_quality: str = "fast"
    textworld: TextWorldConfig = field(default_factory=TextWorldConfig)

    @property
    def is_text(self) -> bool:
        return self.kind in TEXT_ENV_KINDS

    @property
    def pixels_only(self) -> bool:
        """Observed through images only: Atari, digits, and gymnasium ids whose observations are pictures."""
        return self.kind in ("atari", "digits") or (self.kind == "gym" and self.id.startswith(PIXELS_ONLY_IDS))


def check_env(e: EnvConfig) -> None:
    one_of(e.kind, ENV_KINDS, "env.kind")
    one_of(e.obs_mode, OBS_MODES, "env.obs_mode")
    require(
        not (e.pixels_only and e.obs_mode == "state"),
        "env.obs_mode",
        e.obs_mode,
        f"{e.name} is observed through images only; set env.obs_mode=pixels (or auto)",
    )
    require(
        not (e.kind in STATE_ONLY_KINDS and e.obs_mode == "pixels"),
        "env.obs_mode",
        e.obs_mode,
        f"{e.name} is observed through state vectors only; set env.obs_mode=state and use backbone=mlp",
    )
    one_of(e.render_quality, RENDER_QUALITIES, "env.render_quality")
    require(e.action_repeat >= 1, "env.action_repeat", e.action_repeat, "must be >= 1 (1 = every step acts)")
    require(
        e.action_repeat == 1 or e.kind == "dmc",
        "env.action_repeat",
        e.action_repeat,
        f"only env.kind=dmc repeats actions (env.kind={e.kind}); set env.action_repeat=1",
    )
    require(0.0 <= e.sticky_actions < 1.0, "env.sticky_actions", e.sticky_actions, "must be in [0, 1)")
    require(e.noop_max >= 0, "env.noop_max", e.noop_max, "must be >= 0")
    require(e.frame_skip >= 1, "env.frame_skip", e.frame_skip, "must be >= 1")
    require(e.num_envs >= 1, "env.num_envs", e.num_envs, "must be >= 1")
    require(e.frame_size >= 16, "env.frame_size", e.frame_size, "must be >= 16 pixels")
    require(e.frame_stack >= 1, "env.frame_stack", e.frame_stack, "must be >= 1")
    tw = e.textworld
    for key, val, low in (
        ("world_size", tw.world_size, 1),
        ("nb_objects", tw.nb_objects, 0),
        ("quest_length", tw.quest_length, 1),
        ("train_games", tw.train_games, 1),
        ("held_out_games", tw.held_out_games, 0),
        ("game_seed", tw.game_seed, 0),
    ):
        require(val >= low, f"env.textworld.{key}", val, f"must be >= {low}")
