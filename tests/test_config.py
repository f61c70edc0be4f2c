"""Every option of every group composes; bad input is refused with one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import Config, to_config
from pipeline.errors import ConfigError
from tests.conftest import CONF, compose_cfg, run_cli

GROUPS = ["env", "backbone", "algo", "hardware", "logger", "reward"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
# What an option needs beside it: image envs an image backbone, text envs a text backbone and vice versa.
COMPANIONS = {
    ("env", "cartpole_pixels"): ["backbone=nature_cnn"],
    ("env", "textworld"): ["backbone=bow"],
    ("env", "traffic_light_text"): ["backbone=bow"],
    ("backbone", "bow"): ["env=traffic_light_text"],
    ("backbone", "minilm"): ["env=traffic_light_text"],
    ("backbone", "hf"): ["env=traffic_light_text", "backbone.name=/models/my-encoder"],
    ("reward", "lm_similarity"): ["env=traffic_light_text", "backbone=bow", "reward.goal='drive on green'"],
}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group: str, option: str, outputs: Path) -> None:
    overrides = [f"{group}={option}", *COMPANIONS.get((group, option), [])]
    cfg = to_config(compose_cfg(overrides, outputs))
    assert isinstance(cfg, Config)
    expected = "/models/my-encoder" if option == "hf" else option
    assert getattr(cfg, group).name == expected


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


# The catalogue of refused inputs: each is one line naming the fix, exit code 2, nothing written.
BAD_CLI = [
    (["env=nope"], "env"),  # unknown group option
    (["algo.nope=1"], "algo.nope"),  # unknown key
    (["algo.lr=fast"], "algo.lr"),  # wrong type
    (["algo.lr=-1"], "algo.lr=-1"),  # negative learning rate
    (["algo.lr=0"], "algo.lr=0"),  # zero learning rate
    (["algo.batch_size=128", "algo.buffer_size=64"], "larger than algo.buffer_size"),  # batch > buffer
    (["algo.learning_starts=60000"], "never reached within total_env_steps"),
    (["algo.gamma=1.5"], "algo.gamma=1.5"),
    (["algo.tau=0"], "algo.tau=0"),
    (["eval.episodes=0"], "eval.episodes=0"),
    (["hardware.precision=16-mixed"], "hardware.precision=16-mixed"),
    (["hardware.devices=2"], "several devices need a DDP strategy"),
    (["env=cartpole_pixels"], "backbone=mlp takes vectors"),  # an MLP on frames
    (["backbone=resnet18", "backbone.freeze=all"], "freezing a randomly initialised backbone"),
    (["env.id=NoSuchEnv-v0"], "env.id=NoSuchEnv-v0"),  # unknown gymnasium id
    (["env.id=Pendulum-v1"], "discrete actions"),  # continuous actions with DQN
    (["backbone=resnet18", "backbone.name=resnet_nope"], "not a timm model"),  # unknown timm model
    (["backbone=resnet18", "backbone.pretrained=true"], "backbone.weights="),  # hub offline
    (["backbone.weights=/no/such/file.pth"], "no such file"),  # weights file missing
    (["backbone.weights={wrong_arch}"], "lacks 2 of this backbone's tensors"),  # weights of another net
    (["backbone.weights={corrupt}"], "not a readable weights file"),  # weights file corrupt
    (["logger.tracking_uri=http://127.0.0.1:9"], "no MLflow server answers"),  # MLflow URI that does not answer
    (["paths.outputs={file}/outputs"], "point paths.outputs at a writable directory"),  # outputs not writable
    (["resume={missing}"], "not a run dir nor an MLflow run id"),  # resume target that does not exist
]


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    from pipeline.backbones import MLP

    wrong_arch = tmp_path / "mlp_8.pth"
    torch.save(MLP(4, [8]).state_dict(), wrong_arch)  # a real state dict, of a smaller MLP
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 not a torch file")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    return {
        "wrong_arch": str(wrong_arch),
        "corrupt": str(corrupt),
        "file": str(a_file),
        "missing": str(tmp_path / "no_run_here"),
    }


@pytest.mark.parametrize(("args", "needle"), BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args: list[str], needle: str, outputs: Path, bad_files: dict[str, str]
) -> None:
    proc = run_cli([a.format(**bad_files) for a in args], outputs, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(outputs.iterdir()) == [], "a refused job must leave no MLflow store and no run dir"


def test_unreachable_hub_and_server_are_given_up_within_their_bounds(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that never answers: the hub probe waits at most 2 s, the MLflow probe at most 10 s.

    The network is simulated (a connect that times out), so the bound is checked on the timeout the
    code asks for, not on the clock.
    """
    import socket
    import urllib.error
    import urllib.request

    from pipeline.backbones import build_backbone
    from pipeline.envs import probe_env
    from pipeline.tracking import Tracker

    asked: dict[str, float] = {}

    def silent_connect(address: tuple[str, int], timeout: float) -> socket.socket:
        asked["hub"] = timeout
        raise TimeoutError("timed out")

    def silent_urlopen(url: str, timeout: float):
        asked["mlflow"] = timeout
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", silent_connect)
    monkeypatch.setattr(urllib.request, "urlopen", silent_urlopen)
    cfg = to_config(compose_cfg(["backbone=resnet18", "backbone.pretrained=true"], outputs))
    with pytest.raises(ConfigError, match=r"hub is unreachable .*backbone\.weights="):
        build_backbone(cfg.backbone, probe_env(cfg.env))
    with pytest.raises(ConfigError, match="no MLflow server answers there"):
        Tracker("http://10.255.255.1:5000", "pipeline", "")
    assert 0 < asked["hub"] <= 2.0 and 0 < asked["mlflow"] <= 10.0
