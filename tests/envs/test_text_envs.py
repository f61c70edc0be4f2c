"""Text envs through the text-env contract (envs/text.py): the text traffic light's commands change order and
wording, rewards follow the command's meaning; TextWorld games are generated once, cached, won by their
walkthrough, truncated for a wandering agent, and autoreset by `TextVectorEnv` in the same step."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.config.env import EnvConfig
from pipeline.core.errors import ConfigError
from pipeline.envs import make_env, make_vector_env
from pipeline.envs.text import TextVectorEnv

ROOT = Path(__file__).resolve().parents[2]
GO_TEXT = {"drive through the junction", "go ahead", "accelerate across"}


def _env_cfg(overrides: list[str], outputs: Path) -> EnvConfig:
    """The real `env` group composed with overrides (no whole-config validation: no text backbone needed)."""
    # (composed here rather than with tests.conftest.compose_cfg: this file also runs under a bare `pytest`)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.outputs={outputs}"])
    env = OmegaConf.to_object(cfg).env
    assert isinstance(env, EnvConfig)
    return env


# --- the text traffic light -------------------------------------------------------------------------------


def test_traffic_light_text_rewards_follow_the_command_not_its_index(outputs: Path) -> None:
    env = make_vector_env(_env_cfg(["env=traffic_light_text"], outputs), 2)
    assert isinstance(env, TextVectorEnv)
    obs, _ = env.reset(seed=0)
    orders, seen = set(), {"red": set(), "green": set()}
    for _ in range(200):
        actions = []
        for i in range(2):
            commands = env.admissible[i]
            assert len(commands) == 2 and all(isinstance(c, str) for c in commands)
            orders.add(tuple(c in GO_TEXT for c in commands))
            actions.append(next(k for k, c in enumerate(commands) if c in GO_TEXT))  # always go
        light = ["red" if "red" in text else "green" for text in obs]
        assert all(("red" in text) != ("green" in text) for text in obs)
        obs, reward, _, _, _ = env.step(actions)
        for i in range(2):
            seen[light[i]].add(float(reward[i]))
    assert orders == {(True, False), (False, True)}  # the go command is sometimes first, sometimes second
    assert seen == {"green": {1.0}, "red": {-5.0}}
    with pytest.raises(IndexError, match="admissible"):
        env.step([2, 0])
    env.close()


# --- TextWorld ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tw_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One game cache for the whole session: each game is generated (a few seconds) once."""
    root = tmp_path_factory.mktemp("textworld")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_TEXTWORLD_CACHE", str(root))
        yield root


@pytest.fixture
def tw_cfg(tw_cache: Path, outputs: Path) -> EnvConfig:
    return _env_cfg(["env=textworld"], outputs)


def _walkthrough(game: str) -> list[str]:
    return json.loads(Path(game).with_suffix(".json").read_text())["metadata"]["walkthrough"]


def test_textworld_walkthrough_wins_with_reward_one(tw_cfg: EnvConfig) -> None:
    from pipeline.envs.textworld import TextWorldEnv

    env = make_env(tw_cfg)
    assert isinstance(env, TextWorldEnv)
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and env.observation_space.contains(obs)
    assert "TextWorld" in obs and "$$" not in obs  # the objective, without the ASCII banner
    walkthrough = _walkthrough(info["game"])
    assert len(walkthrough) == tw_cfg.textworld.quest_length
    total = 0.0
    for k, command in enumerate(walkthrough):
        admissible = info["admissible"]
        assert admissible and all(isinstance(c, str) for c in admissible) and admissible == sorted(admissible)
        out = env.step(admissible.index(command))
        assert len(out) == 5
        obs, reward, terminated, truncated, info = out
        assert isinstance(obs, str) and env.observation_space.contains(obs) and "\n>" not in obs
        assert isinstance(info["event"], str) and info["event"] and info["event"] in obs
        total += reward
        last = k == len(walkthrough) - 1
        assert terminated == last and info["won"] == last and not truncated
    assert total == 1.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    _, info = env.reset()
    with pytest.raises(IndexError, match="admissible"):
        env.step(len(info["admissible"]))
    env.close()


def test_textworld_intermediate_rewards_pay_progress_and_charge_detours(tw_cache: Path, outputs: Path) -> None:
    cfg = _env_cfg(["env=textworld", "env.textworld.intermediate_rewards=true"], outputs)
    env = make_env(cfg)
    _, info = env.reset(seed=0)
    walkthrough = _walkthrough(info["game"])
    rewards = []
    for command in walkthrough:
        _, reward, _, _, info = env.step(info["admissible"].index(command))
        rewards.append(reward)
    assert rewards == [1.0] * len(walkthrough)  # progress, progress, win (its score pays, no double count)
    _, info = env.reset()
    detour = next(c for c in info["admissible"] if c.startswith("go ") and c not in walkthrough)
    _, reward, *_ = env.step(info["admissible"].index(detour))
    assert reward == -1.0
    env.close()


def test_textworld_random_agent_is_truncated_at_max_episode_steps(tw_cache: Path, outputs: Path) -> None:
    cfg = _env_cfg(["env=textworld", "env.max_episode_steps=8"], outputs)
    env = make_env(cfg)
    _, info = env.reset(seed=1)
    winning = _walkthrough(info["game"])[-1]  # never issued: the agent cannot finish the quest
    rng = np.random.default_rng(0)
    for step in range(1, 9):
        choices = [k for k, c in enumerate(info["admissible"]) if c != winning]
        _, reward, terminated, truncated, info = env.step(int(rng.choice(choices)))
        assert reward == 0.0 and not terminated and not info["won"]
        assert truncated == (step == 8)
    assert info["admissible"] and all(isinstance(c, str) for c in info["admissible"])
    env.close()


def test_textworld_vector_env_autoresets_a_won_game_in_the_same_step(tw_cfg: EnvConfig) -> None:
    env = make_vector_env(tw_cfg, 2)
    assert isinstance(env, TextVectorEnv)
    obs, _ = env.reset(seed=0)
    start_obs, start_admissible = obs[0], list(env.admissible[0])
    game = env.envs[0].game_files[0]
    for command in _walkthrough(str(game)):
        obs, reward, terminated, truncated, info = env.step([env.admissible[0].index(command), 0])
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert info["won"].tolist() == [True, False] and reward[0] == 1.0
    assert "The End" in info["final_obs"][0] and info["final_obs"][1] is None
    assert obs[0] == start_obs and env.admissible[0] == start_admissible  # already the next episode
    env.close()


def test_textworld_games_are_cached_and_held_out_games_differ(tw_cfg: EnvConfig, tw_cache: Path) -> None:
    from pipeline.envs.textworld import cache_root, game_files, make

    assert cache_root() == tw_cache
    train = game_files(tw_cfg.textworld, "train", tw_cache)
    stamps = [(p.stat().st_mtime_ns, p.with_suffix(".json").stat().st_mtime_ns) for p in train]
    again = game_files(tw_cfg.textworld, "train", tw_cache)
    assert again == train and [(p.stat().st_mtime_ns, p.with_suffix(".json").stat().st_mtime_ns) for p in train] == (
        stamps
    )
    assert train[0].parent == tw_cache / "w3-o4-q3-s1"
    held_out = game_files(tw_cfg.textworld, "held_out", tw_cache)
    assert len(train) == len(held_out) == 1 and train[0] != held_out[0]
    assert train[0].read_bytes() != held_out[0].read_bytes()
    assert _walkthrough(str(train[0])) != _walkthrough(str(held_out[0]))
    assert not list(train[0].parent.glob(".tmp-*"))  # no half-made game left behind

    evaluation = make(tw_cfg, evaluation=True)
    _, info = evaluation.reset(seed=0)
    assert info["game"] == str(held_out[0])
    evaluation.close()
    tw_cfg.textworld.held_out_games = 0  # no held-out games: evaluation plays the training games
    fallback = make(tw_cfg, evaluation=True)
    assert fallback.reset(seed=0)[1]["game"] == str(train[0])
    fallback.close()


def test_textworld_generation_is_safe_for_concurrent_jobs(tmp_path: Path) -> None:
    """Two processes ask for the same missing game at once: one generates it, the other waits and reuses it."""
    code = (
        "import sys; from pathlib import Path; from pipeline.config.env import TextWorldConfig;"
        "import pipeline.envs.textworld as tw; made = [];"
        "generate = tw._generate; tw._generate = lambda *a: (made.append(a), generate(*a));"
        "cfg = TextWorldConfig(world_size=2, nb_objects=2, quest_length=1, game_seed=7);"
        "print(tw.game_files(cfg, 'train', Path(sys.argv[1]))[0], len(made))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    (path, made), (other, other_made) = outs
    assert path == other and Path(path).is_file()
    assert sorted([int(made), int(other_made)]) == [0, 1]  # generated once, by one of them
    family = tmp_path / "w2-o2-q1-s7"
    assert sorted(p.name for p in family.iterdir()) == [".lock", "train-000-seed7000.json", "train-000-seed7000.z8"]


def test_textworld_missing_package_is_a_config_error(tw_cfg: EnvConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.envs.textworld import make

    make(tw_cfg).close()  # games cached: only the interpreter needs the package now
    monkeypatch.setitem(sys.modules, "textworld", None)
    with pytest.raises(ConfigError, match=r"pip install textworld==1\.7\.0"):
        make(tw_cfg)


def test_textworld_cache_root_defaults_to_outputs_under_the_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.envs.textworld import cache_root

    monkeypatch.delenv("PIPELINE_TEXTWORLD_CACHE", raising=False)
    assert cache_root() == Path("outputs") / "textworld"
    assert not cache_root().is_absolute()  # follows the job's working directory
