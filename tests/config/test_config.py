"""Every option of every group composes; bad input is refused with one line, exit 2, nothing written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from pipeline.config.load import to_config
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError
from tests.conftest import CONF, compose_cfg, run_cli

NEEDS_NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="refusals for a machine without a GPU")

GROUPS = ["env", "backbone", "algo", "hardware", "logger", "reward"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
# What an option needs beside it: image envs an image backbone, text envs a text backbone and vice versa.
COMPANIONS = {
    ("env", "cartpole_pixels"): ["backbone=nature_cnn"],
    ("env", "car_racing"): ["backbone=nature_cnn"],  # pixels only
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
        (["hardware.devices=3", "hardware.strategy=ddp"], "re-runs this command once per device"),
    ],
)
def test_out_of_range_and_incompatible_values_are_refused(overrides: list[str], needle: str, outputs: Path) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        to_config(compose_cfg(overrides, outputs))


# The catalogue of refused inputs: each is one line naming the fix, exit code 2, nothing written.
BAD_CLI: list = [
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
    pytest.param(["hardware=gpu"], "no CUDA device here; use hardware=cpu, or hardware=ddp_cpu", marks=NEEDS_NO_GPU),
    pytest.param(["hardware=ddp"], "no CUDA device here", marks=NEEDS_NO_GPU),
    (["hardware.devices=3", "hardware.strategy=ddp"], "use hardware.strategy=ddp_spawn"),  # one run per device
    (["logger.run_name='r\udcff'"], "is not UTF-8 text (byte 0xff)"),  # a latin-1 byte from the shell
    (["paths.outputs=/tmp/o\udcff"], "paths.outputs: b'paths.outputs=/tmp/o\\xff' is not UTF-8 text"),
    (["logger.run_name=ré"], "Hydra needs quotes around a value with non-ASCII characters; write logger.run_name='ré'"),
    (["env.id=NoSuchEnv-v0"], "env.id=NoSuchEnv-v0"),  # unknown gymnasium id
    (["env.id=Pendulum-v1"], "continuous actions"),  # continuous actions with Double DQN: use sac, td3 or ppo
    (["backbone=resnet18", "backbone.name=resnet_nope"], "not a timm model"),  # unknown timm model
    (["backbone=resnet18", "backbone.pretrained=true"], "backbone.weights="),  # hub offline
    (["backbone.weights=/no/such/file.pth"], "no such file"),  # weights file missing
    (["backbone.weights={wrong_arch}"], "lacks 2 of this backbone's tensors"),  # weights of another net
    (["backbone.weights={corrupt}"], "not a weights file this pipeline reads; expected a safetensors file"),
    (["backbone.weights={text}"], "this file is 16 B of text starting 'these are notes\\n'"),  # not weights at all
    (["logger.tracking_uri=http://127.0.0.1:9"], "no MLflow server answers"),  # MLflow URI that does not answer
    (["paths.outputs={file}/outputs"], "point paths.outputs at a writable directory"),  # outputs not writable
    (["resume={missing}"], "not a run dir nor an MLflow run id"),  # resume target that does not exist
]


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    from pipeline.backbones.own import MLP

    wrong_arch = tmp_path / "mlp_8.pth"
    torch.save(MLP(4, [8]).state_dict(), wrong_arch)  # a real state dict, of a smaller MLP
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 not a torch file")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    text = tmp_path / "notes.pt"
    text.write_text("these are notes\n")
    return {
        "wrong_arch": str(wrong_arch),
        "corrupt": str(corrupt),
        "text": str(text),
        "file": str(a_file),
        "missing": str(tmp_path / "no_run_here"),
    }


def _id(case) -> str:
    args = case.values[0] if hasattr(case, "values") else case[0]
    return " ".join(args).encode("ascii", "backslashreplace").decode()


@pytest.mark.parametrize(("args", "needle"), BAD_CLI, ids=[_id(c) for c in BAD_CLI])
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

    from pipeline.backbones.encoder import build_backbone
    from pipeline.envs import probe_env
    from pipeline.tracking.run import Tracker

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


def test_the_machine_is_checked_for_every_accelerator_and_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import machine as hardware
    from pipeline.config.hardware import HardwareConfig

    def machine(gpus: int, gpu_bf16: bool = True, cpu_bf16: bool = True) -> None:
        monkeypatch.setattr(hardware, "cuda_devices", lambda: gpus)
        monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: cpu_bf16)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)

    def check(**kwargs) -> str | None:
        try:
            hardware.check_machine(HardwareConfig(name=kwargs.pop("name", "x"), **kwargs))
        except ConfigError as ex:
            return str(ex)
        return None

    machine(gpus=0)
    assert "no CUDA device here; use hardware=cpu, or hardware=ddp_cpu" in check(name="gpu", accelerator="gpu")
    assert check(accelerator="cpu") is None and check(accelerator="auto") is None
    assert check(accelerator="cpu", devices=2, strategy="ddp_spawn") is None  # ddp_cpu
    machine(gpus=1)
    assert "this machine has 1 CUDA device(s); set hardware.devices=1, or use hardware=gpu" in check(
        name="ddp", accelerator="gpu", devices=2, strategy="ddp_spawn"
    )
    assert check(accelerator="gpu", precision="bf16-mixed") is None
    machine(gpus=1, gpu_bf16=False)
    assert "this GPU has no bf16 support" in check(accelerator="gpu", precision="bf16-mixed")
    machine(gpus=0, cpu_bf16=False)
    assert "this CPU has no bf16 instructions" in check(accelerator="cpu", precision="bf16-mixed")
    machine(gpus=0, cpu_bf16=True)
    assert check(accelerator="cpu", precision="bf16-mixed") is None
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    assert "needs a C++ compiler" in check(accelerator="cpu", compile=True)


def test_a_yaml_syntax_error_in_a_config_dir_names_the_file_line_and_column(outputs: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "env").mkdir(parents=True)
    (mine / "env" / "foo.yaml").write_text("name: foo\nid: CartPole-v1\n  kind: gym\n")
    proc = run_cli(["--config-dir", str(mine), "env=foo"], outputs, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    where = mine / "env" / "foo.yaml"
    assert lines == [f"error: {where}:3:7: YAML syntax error (mapping values are not allowed here); fix that line"]
    assert list(outputs.iterdir()) == []


def test_freeze_auto_fine_tunes_on_a_gpu_and_freezes_timm_models_on_the_cpu(outputs: Path) -> None:
    def freeze(overrides: list[str]) -> str:
        return to_config(compose_cfg(overrides, outputs)).backbone.freeze

    assert freeze(["backbone=resnet18"]) == "all"  # hardware=cpu (the default)
    assert freeze(["backbone=resnet18", "hardware.accelerator=gpu"]) == "none"
    assert freeze(["backbone=nature_cnn"]) == "none"  # our own small CNN trains on any device
    assert freeze(["backbone=resnet18", "backbone.freeze=none"]) == "none"  # an explicit choice stays
    assert freeze(["backbone=resnet18", "stage=pretrain", "env=digits"]) == "none"  # a pretraining stage trains


def test_threads_auto_uses_the_cores_for_timm_models_only(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert to_config(compose_cfg(["backbone=resnet18"], outputs)).hardware.threads == 4
    assert to_config(compose_cfg([], outputs)).hardware.threads == 1  # an MLP: one thread is fastest
    assert to_config(compose_cfg(["backbone=resnet18", "hardware=ddp_cpu"], outputs)).hardware.threads == 1


def test_progress_without_a_terminal_is_a_line_with_the_time_left(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from pipeline.run.progress import EnvStepProgress

    bar = EnvStepProgress(1000, "dqn-run", log_every_s=0.0)
    trainer = SimpleNamespace(is_global_zero=True)
    module = SimpleNamespace(progress={"env_steps": 100, "return": 12.0, "eval": 9.5, "steps_per_s": 50.0})
    bar.on_train_start(trainer, module)
    bar.on_train_batch_end(trainer, module)  # the first chunk: the rate is measured from here on
    time.sleep(0.05)
    module.progress["env_steps"] = 200
    bar.on_train_batch_end(trainer, module)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("dqn-run: 200/1,000 env steps (20%), 50 steps/s, return 12.0, eval 9.5, about ")
    assert line.endswith(" s left")  # 800 steps at ~100 steps per 0.05 s: well under a minute
