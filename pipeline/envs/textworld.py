"""TextWorld games behind our text-env contract (`envs/text.py`), so a language backbone can be fine-tuned
with RL on text adventures exactly as on the text traffic light.

Why it is built this way:
- A *family* of games (rooms, objects, quest length, seed) is what a run trains on, and a disjoint
  seed range of the same family is what it is evaluated on, so evaluation measures generalisation to
  unseen games rather than memorised walkthroughs.
- Generating and compiling one game takes seconds (Inform 7 → Inform 6 → .z8), so games are generated
  once per family and cached on disk; every job of a sweep reuses them. Jobs of a sweep may ask for
  the same missing game at the same time, so generation holds a lock and publishes each game with
  `os.replace` (the .json side file first, the .z8 last: a .z8 that exists is a complete game).
- TextWorld's own state (`GameState`) is a rich dict with a 3-tuple `step`; here it becomes gymnasium's
  five-tuple with a string observation, the *sorted* admissible commands (indices must mean the same
  thing from one run to the next) and `won`. Only the infos the adapter uses are requested: quest
  tracking (intermediate rewards) costs time on every step, and the room description and inventory,
  which the game prints every turn, about halve the steps per second; they are kept because an agent
  that reads only the last message cannot know where it is or what it holds.
- Episodes of a random agent never end by themselves, so the adapter counts steps and truncates at
  `env.max_episode_steps` itself; the admissible commands are still reported at truncation.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym

from pipeline.config.env import EnvConfig, TextWorldConfig
from pipeline.core.errors import ConfigError
from pipeline.envs.text import MAX_ACTIONS, MAX_TEXT, TEXT_CHARSET, text_space

CACHE_ENV_VAR = "PIPELINE_TEXTWORLD_CACHE"  # overrides the game cache root (default: outputs/textworld)
DEFAULT_CACHE = Path("outputs") / "textworld"
DEFAULT_MAX_STEPS = 50  # env.max_episode_steps=null: a random agent would otherwise wander forever
SPLITS = ("train", "held_out")
SEED_STRIDE = 1000  # family game_seed g: train games use seeds g*1000 + i, held-out games g*1000 + 500 + i
HELD_OUT_OFFSET = 500
_UNPRINTABLE = re.compile("[^" + re.escape("".join(sorted(TEXT_CHARSET))) + "]")  # outside the text space
# The interpreter's prompt line, with the status bar (room name, score/moves) printed after it.
_PROMPT = re.compile(r"\n>[^\n]*\s*$")


def _textworld() -> Any:
    try:
        import textworld
        import textworld.generator
    except ImportError:
        raise ConfigError("env=textworld needs the textworld package: pip install textworld==1.7.0") from None
    return textworld


def cache_root() -> Path:
    """Where generated games live: `$PIPELINE_TEXTWORLD_CACHE`, else `outputs/textworld` under the CWD."""
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE)


def family_key(cfg: TextWorldConfig) -> str:
    """One folder per game family, e.g. `w3-o4-q3-s1`."""
    return f"w{cfg.world_size}-o{cfg.nb_objects}-q{cfg.quest_length}-s{cfg.game_seed}"


def game_seeds(cfg: TextWorldConfig, split: str) -> list[int]:
    """The generator seeds of a split; train and held-out ranges never overlap."""
    if split not in SPLITS:
        raise ConfigError(f"TextWorld split {split!r}: use one of {', '.join(SPLITS)}")
    count, offset = (cfg.train_games, 0) if split == "train" else (cfg.held_out_games, HELD_OUT_OFFSET)
    if count > HELD_OUT_OFFSET:
        key = "train_games" if split == "train" else "held_out_games"
        raise ConfigError(f"env.textworld.{key}={count}: at most {HELD_OUT_OFFSET} games per split")
    return [cfg.game_seed * SEED_STRIDE + offset + i for i in range(count)]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ready(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".json").is_file()


def _generate(cfg: TextWorldConfig, seed: int, path: Path) -> None:
    """Make and compile one game in a private folder, then publish .json and .z8 (last) atomically."""
    textworld = _textworld()
    options = textworld.GameOptions()
    options.seeds = seed
    options.nb_rooms = cfg.world_size
    options.nb_objects = cfg.nb_objects
    options.quest_length = cfg.quest_length
    options.file_ext = ".z8"
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=path.parent) as tmp:
        options.path = str(Path(tmp) / path.name)
        try:
            game = textworld.generator.make_game(options)
        except Exception as ex:  # the generator's errors share no base class (quest, nouns, constraints)
            raise ConfigError(
                f"env.textworld: no game with world_size={cfg.world_size}, nb_objects={cfg.nb_objects}, "
                f"quest_length={cfg.quest_length} (seed {seed}): {type(ex).__name__}: {ex}; "
                "try more rooms/objects or a shorter quest"
            ) from None
        compiled = Path(textworld.generator.compile_game(game, options))
        os.replace(compiled.with_suffix(".json"), path.with_suffix(".json"))
        os.replace(compiled, path)


def game_files(cfg: TextWorldConfig, split: str, cache_root: Path) -> list[Path]:
    """The split's compiled games (`.z8`, with their `.json` beside them), generated on first use."""
    folder = cache_root / family_key(cfg)
    paths = [folder / f"{split}-{i:03d}-seed{seed}.z8" for i, seed in enumerate(game_seeds(cfg, split))]
    if all(_ready(p) for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        for path, seed in zip(paths, game_seeds(cfg, split), strict=True):
            if not _ready(path):  # another process may have made it while we waited for the lock
                _generate(cfg, seed, path)
    return paths


def _clean(*parts: str | None) -> str:
    """Whitespace-normalised lines (no blank ones), printable ASCII only, at most MAX_TEXT characters."""
    text = _UNPRINTABLE.sub("", "\n".join(p for p in parts if p))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)[:MAX_TEXT]


def _feedback(text: str | None) -> str:
    """A step's narrative without the interpreter's trailing prompt and status bar."""
    return _PROMPT.sub("", text or "")


class TextWorldEnv(gym.Env):
    """A uniformly chosen game of a family per episode; one TextWorld interpreter per game, opened lazily.

    Observation: the objective (at reset) or the step's narrative, then the room description (left out
    when the narrative already contains it, as after entering a room) and the inventory, one line each
    paragraph, whitespace-normalised. `info["event"]` is the narrative alone.

    Reward: the game's score increase; with `intermediate_rewards`, plus TextWorld's `intermediate_reward`
    (+1 when a step shortens the remaining winning policy, -1 when it lengthens it or loses the game, 0
    otherwise), except on the winning step, where the score increase already pays.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self, game_files: Sequence[Path | str], intermediate_rewards: bool = False, max_episode_steps: int | None = None
    ):
        if not game_files:
            raise ConfigError("TextWorldEnv needs at least one game file")
        textworld = _textworld()
        self.game_files = [Path(p) for p in game_files]
        self.intermediate_rewards = intermediate_rewards
        self.max_episode_steps = DEFAULT_MAX_STEPS if max_episode_steps is None else max_episode_steps
        self.observation_space = text_space()
        self.action_space = gym.spaces.Discrete(MAX_ACTIONS)
        self._infos = textworld.EnvInfos(
            description=True,
            inventory=True,
            objective=True,
            admissible_commands=True,
            intermediate_reward=intermediate_rewards,
        )
        self._games: dict[int, Any] = {}  # game index -> started TextWorld env
        self._game: Any = None
        self.game_index = -1
        self._admissible: list[str] = []
        self._score = 0.0
        self._steps = 0
        self._done = False

    def _open(self, index: int) -> Any:
        if index not in self._games:
            textworld = _textworld()
            with warnings.catch_warnings():
                # Jericho warns that it cannot read score/moves of a TextWorld game; TextWorld's own wrapper does.
                warnings.filterwarnings("ignore", message=".*not fully supported.*")
                self._games[index] = textworld.start(str(self.game_files[index]), request_infos=self._infos)
        return self._games[index]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.game_index = int(self.np_random.integers(len(self.game_files)))
        self._game = self._open(self.game_index)
        state = self._game.reset()  # its feedback is a banner + the objective + the room: not used as is
        self._admissible = sorted(state["admissible_commands"])
        self._score = float(state["score"] or 0)
        self._steps = 0
        self._done = False
        text = _clean(state["objective"], state["description"], state["inventory"])
        return text, {"admissible": list(self._admissible), "game": str(self.game_files[self.game_index])}

    def step(self, action: int) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._game is None or self._done:
            raise RuntimeError("TextWorldEnv.step: call reset() first (the episode has ended or not begun)")
        index = int(action)
        if not 0 <= index < len(self._admissible):
            raise IndexError(f"action {index} is not one of the {len(self._admissible)} admissible commands")
        command = self._admissible[index]
        state, score, game_over = self._game.step(command)
        won, lost = bool(state["won"]), bool(state["lost"])
        reward = float(score) - self._score
        self._score = float(score)
        if self.intermediate_rewards and not won:
            reward += float(state["intermediate_reward"] or 0)
        self._steps += 1
        terminated = bool(game_over or won or lost)
        truncated = not terminated and self._steps >= self.max_episode_steps
        self._done = terminated or truncated
        self._admissible = sorted(state["admissible_commands"])
        event = _clean(_feedback(state.feedback))
        description = _clean(state["description"])
        if description in event:  # entering a room already prints what `look` says
            description = ""
        text = _clean(event, description, state["inventory"])
        info = {
            "admissible": list(self._admissible),
            "won": won,
            "lost": lost,
            "event": event,
            "command": command,
            "score": self._score,
        }
        return text, reward, terminated, truncated, info

    def close(self) -> None:
        for game in self._games.values():
            game.close()
        self._games.clear()
        self._game = None


def make_split(cfg: EnvConfig, split: str, root: Path | None = None) -> TextWorldEnv:
    """An env over one split's games ("train" or "held_out"), e.g. for benchmarks."""
    tw = cfg.textworld
    if root is None:
        root = Path(tw.cache_dir) if tw.cache_dir and CACHE_ENV_VAR not in os.environ else cache_root()
    files = game_files(tw, split, root)
    if not files:
        raise ConfigError(f"env.textworld: the {split} split has no games (env.textworld.{split}_games=0)")
    return TextWorldEnv(files, tw.intermediate_rewards, cfg.max_episode_steps)


def make(cfg: EnvConfig, evaluation: bool = False, render: bool = False) -> gym.Env:
    """Training games, or for `evaluation` the held-out games (the training games when there are none)."""
    split = "held_out" if evaluation and cfg.textworld.held_out_games > 0 else "train"
    return make_split(cfg, split)


__all__ = ["TextWorldEnv", "cache_root", "family_key", "game_files", "game_seeds", "make", "make_split"]
