"""Every option of every group composes; bad input is refused with one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, to_config
from pipeline.errors import ConfigError
from tests.conftest import CONF, compose_cfg, run_cli

GROUPS = ["env", "backbone", "algo", "hardware", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group: str, option: str, outputs: Path) -> None:
    overrides = [f"{group}={option}"]
    if group == "env" and option == "cartpole_pixels":
        overrides.append("backbone=nature_cnn")  # an image env needs an image backbone
    cfg = to_config(compose_cfg(overrides, outputs))
    assert isinstance(cfg, Config)
    assert getattr(cfg, group).name == option


def test_image_backbone_switches_default_env_to_pixels(outputs: Path) -> None:
    cfg = to_config(compose_cfg(["backbone=resnet18"], outputs))
    assert cfg.env.id == "CartPole-v1" and cfg.env.obs_mode == "pixels"
    assert to_config(compose_cfg([], outputs)).env.obs_mode == "state"


def test_double_dqn_inherits_dqn_defaults(outputs: Path) -> None:
    dqn = to_config(compose_cfg(["algo=dqn"], outputs)).algo
    double = to_config(compose_cfg(["algo=double_dqn"], outputs)).algo
    assert double.double and not dqn.double
    assert (double.lr, double.batch_size, double.train_freq) == (dqn.lr, dqn.batch_size, dqn.train_freq)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["algo.lr=0"], "algo.lr=0"),
        (["algo.batch_size=128", "algo.buffer_size=64"], "algo.batch_size=128"),
        (["algo.learning_starts=60000"], "algo.learning_starts=60000"),
        (["algo.gamma=1.5"], "algo.gamma=1.5"),
        (["hardware.devices=2"], "hardware.strategy=auto"),
        (["env=cartpole_pixels"], "backbone=mlp takes vectors"),
        (["backbone=nature_cnn", "env.obs_mode=state"], "takes images"),
        (["backbone=resnet18", "backbone.freeze=all"], "backbone.freeze=all"),
    ],
)
def test_out_of_range_and_incompatible_values_are_refused(overrides: list[str], needle: str, outputs: Path) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        to_config(compose_cfg(overrides, outputs))


BAD_CLI = [
    (["env=nope"], "env"),
    (["algo.nope=1"], "algo.nope"),
    (["algo.lr=fast"], "algo.lr"),
    (["algo.lr=-1"], "algo.lr=-1"),
    (["env.id=Pendulum-v1"], "discrete actions"),
    (["env.id=NoSuchEnv-v0"], "env.id=NoSuchEnv-v0"),
    (["backbone=resnet18", "backbone.name=resnet_nope"], "not a timm model"),
    (["backbone.weights=/no/such/file.pth"], "no such file"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args: list[str], needle: str, outputs: Path) -> None:
    proc = run_cli(args, outputs, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(outputs.iterdir()) == [], "a refused job must leave no MLflow store and no run dir"
