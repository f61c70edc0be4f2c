"""The pretraining stage (`stage=pretrain`): train a backbone without environment reward and log it
so that an RL run loads it with `backbone.weights=runs:/<id>/weights/backbone.safetensors` (or
`models:/<name>/<version>` when `stage.register_as` is set).

The backbone is built for the observations of `cfg.env` — the same `Encoder`, preprocessing and
input shape the RL run will build — so its weights load bit-exactly there. Objectives:
- `supervised`: classification on scikit-learn's digits (offline) or a torchvision `ImageFolder`
  directory, images rendered at the env's observation shape;
- `inverse_dynamics`: predict the action between two consecutive observations, on frames collected
  from the env by a random policy or an MLflow policy; the collected frames are logged as a dataset
  artifact with their size and source policy.

Resumable like an RL run: after every epoch `checkpoints/last.ckpt` holds the model, the optimiser,
the epoch counter, the per-epoch history and the RNG states (the collected frames are not copied: the
dataset file in the run dir is reloaded). `python -m pipeline resume=<run dir | run id>` continues at
the next epoch in the same MLflow run; on the CPU the result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbones.encoder import Encoder, build_backbone
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError
from pipeline.core.spec import EnvSpec
from pipeline.envs import make_vector_env, probe_env
from pipeline.networks.neck import neck
from pipeline.run.resume import Resumption
from pipeline.run.session import Session, env_label, save_backbone, weights_file
from pipeline.tracking import checkpoints
from pipeline.tracking.metrics import RunTarget


@dataclass
class PretrainResult:
    run_id: str | None
    objective: str
    val_accuracy: float
    train_loss_first: float  # mean loss of the first epoch...
    train_loss_last: float  # ...and of the last: the objective was learned if this is lower
    model_uri: str | None
    run_dir: Path
    wall_s: float


class Classifier(nn.Module):
    """Backbone → embedding → logits. `encoder` is what the RL run loads."""

    def __init__(self, encoder: Encoder, cfg_backbone, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.neck, dim = neck(cfg_backbone, encoder.out_shape)
        self.out = nn.Linear(dim, n_classes)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(self.neck(self.encoder(obs)))


class InverseDynamics(nn.Module):
    """(obs_t, obs_t+1) → which action led from one to the other (Pathak et al., 2017's inverse model)."""

    def __init__(self, encoder: Encoder, cfg_backbone, n_actions: int):
        super().__init__()
        self.encoder = encoder
        self.neck, dim = neck(cfg_backbone, encoder.out_shape)
        self.out = nn.Sequential(nn.Linear(2 * dim, 256), nn.ReLU(), nn.Linear(256, n_actions))

    def forward(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        z = self.neck(self.encoder(torch.cat([obs, next_obs])))
        return self.out(torch.cat(z.chunk(2), dim=1))


def _to_obs_layout(images: np.ndarray, spec: EnvSpec) -> np.ndarray:
    """uint8 [N, 3 or 1, H, W] → the env's observation layout [N, C, h, w] (resized; gray repeated)."""
    x = torch.from_numpy(images).float()
    c, h, w = spec.obs_shape
    if x.shape[2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if x.shape[1] != c:
        x = x.mean(dim=1, keepdim=True).expand(-1, c, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def supervised_data(cfg: Config, spec: EnvSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(train images, train labels, val images, val labels, classes) in the env's observation layout."""
    s = cfg.stage
    if not spec.is_image or len(spec.obs_shape) != 3:
        raise ConfigError(
            f"stage.objective=supervised: env={cfg.env.name} observes {spec.obs_shape}, not images; pretrain for "
            "an image env (env=digits, env=minatar_breakout env.obs_mode=pixels, ...)"
        )
    if s.dataset == "digits":
        from pipeline.envs.digits import TRAIN_FRACTION, _images

        images, labels = _images(spec.obs_shape[1])
        split = int(len(images) * TRAIN_FRACTION)  # the digits env's own split: its eval images stay unseen
    else:
        images, labels = _image_folder(Path(s.dataset))
        order = np.random.default_rng(cfg.seed).permutation(len(images))
        images, labels = images[order], labels[order]
        split = int(len(images) * (1 - s.val_fraction))
    x = _to_obs_layout(images, spec)
    return x[:split], labels[:split], x[split:], labels[split:], int(labels.max()) + 1


def _image_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    if not root.is_dir():
        raise ConfigError(f"stage.dataset={root}: no such directory; give digits or an ImageFolder directory")
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    folder = ImageFolder(str(root), transform=v2.Compose([v2.PILToTensor(), v2.Resize((96, 96))]))
    if len(folder) == 0:
        raise ConfigError(f"stage.dataset={root}: no images in class subfolders")
    images = np.stack([folder[i][0].numpy() for i in range(len(folder))])
    return images, np.asarray(folder.targets, dtype=np.int64)


def collect_transitions(cfg: Config, spec: EnvSpec) -> dict[str, np.ndarray]:
    """`stage.frames` transitions (obs, action, next obs) from the env under the collection policy."""
    s = cfg.stage
    n = cfg.env.num_envs
    env = make_vector_env(cfg.env, n)
    policy = None
    if s.collect_policy != "random":
        import mlflow.pytorch

        policy = mlflow.pytorch.load_model(s.collect_policy)
    rng = np.random.default_rng(cfg.seed)
    obs, _ = env.reset(seed=[cfg.seed + i for i in range(n)])
    rows = -(-s.frames // n)
    out = {
        "obs": np.zeros((rows * n, *spec.obs_shape), dtype=spec.obs_dtype),
        "next_obs": np.zeros((rows * n, *spec.obs_shape), dtype=spec.obs_dtype),
        "actions": np.zeros(rows * n, dtype=np.int64),
    }
    for r in range(rows):
        if policy is None:
            actions = rng.integers(0, spec.n_actions, size=n)
        else:
            with torch.no_grad():
                actions = policy(torch.as_tensor(obs)).argmax(dim=1).numpy()
        next_obs, _, terminated, truncated, info = env.step(actions)
        true_next = next_obs.copy()
        for i in np.flatnonzero(terminated | truncated):  # the frame the action led to, not the reset one
            true_next[i] = info["final_obs"][i]
        out["obs"][r * n : (r + 1) * n] = obs
        out["next_obs"][r * n : (r + 1) * n] = true_next
        out["actions"][r * n : (r + 1) * n] = actions
        obs = next_obs
    env.close()
    return {k: v[: s.frames] for k, v in out.items()}


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


DATASET_FILE = "dataset/transitions.npz"  # inverse_dynamics' collected frames, relative to the run dir


def pretrain(
    cfg: Config,
    resumption: Resumption | None = None,
    run_dir: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> PretrainResult:
    """Build data and model, then one tracked run that always ends (pipeline/run/session.py). `cfg` is the
    job's validated config; with `resume=` the saved config, run dir and MLflow run (pipeline/run/resume.py)."""
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if cfg.hardware.threads > 0:
        torch.set_num_threads(cfg.hardware.threads)
    spec = probe_env(cfg.env)
    encoder = build_backbone(cfg.backbone, spec, weights_file(cfg))
    s = cfg.stage
    if s.objective == "supervised":
        data = supervised_data(cfg, spec)
        model: nn.Module = Classifier(encoder, cfg.backbone, data[4])
    else:
        data = None
        model = InverseDynamics(encoder, cfg.backbone, spec.n_actions)
    if resumption is not None:
        model.load_state_dict(resumption.checkpoint["state_dict"])
    run_name = f"pretrain-{s.objective}-{cfg.backbone.name}-{env_label(cfg)}-s{cfg.seed}"
    session = Session(cfg, run_name, resumption, run_dir, extra_tags, stage_tags={"stage": "pretrain"})
    saved = resumption.checkpoint if resumption is not None else None
    return session.run(
        lambda target: _fit(cfg, spec, model, data, session.tracker, target, session.run_dir, t_start, saved)
    )


def _transitions(cfg: Config, spec: EnvSpec, run_dir: Path, resuming: bool) -> dict[str, np.ndarray]:
    """The inverse-dynamics frames: collected and written to the run dir, or (resuming) read back from
    there — the very arrays the killed run trained on, whatever policy collected them."""
    path = run_dir / DATASET_FILE
    if resuming:
        if not path.is_file():
            raise ConfigError(
                f"resume={cfg.resume}: {path} is missing; restore it from the run's dataset artifact "
                "(mlflow artifacts download) or start a new run"
            )
        with np.load(path) as saved:
            return {k: saved[k] for k in ("obs", "next_obs", "actions")}
    frames = collect_transitions(cfg, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **frames)  # complete before the first checkpoint, which is what resumes
    return frames


def _checkpoint(
    run_dir: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    epoch_losses: list[float],
    val_acc: float,
    finished: bool = False,
) -> None:
    """Everything the next epoch depends on, written atomically: a kill leaves the previous epoch's."""
    state = {
        "state_dict": model.state_dict(),
        "optimizer_states": [opt.state_dict()],
        "counters": {"epoch": len(epoch_losses)},
        "history": {"losses": list(epoch_losses), "val_accuracy": val_acc},
        "rng": {"numpy": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state()},
        "finished": finished,  # the model was logged: a resume has nothing left to do
    }
    checkpoints.atomic_save(state, run_dir / checkpoints.CHECKPOINT_DIR / checkpoints.LAST)


def _fit(
    cfg: Config,
    spec: EnvSpec,
    model: nn.Module,
    data,
    tracker,
    target: RunTarget | None,
    run_dir: Path,
    t_start: float,
    saved: dict | None,
) -> PretrainResult:
    s = cfg.stage
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    frames: dict[str, np.ndarray] = {}
    if s.objective == "inverse_dynamics":
        frames = _transitions(cfg, spec, run_dir, resuming=saved is not None)
        split = int(len(frames["actions"]) * (1 - s.val_fraction))
        val_idx = np.arange(split, len(frames["actions"]))
        if tracker is not None and saved is None:
            tracker.log_artifact(run_dir / DATASET_FILE, "dataset")
            tracker.set_tags({"dataset.frames": str(len(frames["actions"])), "dataset.policy": s.collect_policy})

        def batch_loss(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(torch.from_numpy(frames["obs"][idx]), torch.from_numpy(frames["next_obs"][idx]))
            target = torch.from_numpy(frames["actions"][idx])
            return F.cross_entropy(logits, target), (logits.argmax(dim=1) == target).float().mean()

        n_train = split
        val_sets = [val_idx]
    else:
        x_train, y_train, x_val, y_val, _ = data

        def batch_loss(idx: np.ndarray, x=x_train, y=y_train) -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(torch.from_numpy(x[idx]))
            target = torch.from_numpy(y[idx])
            return F.cross_entropy(logits, target), (logits.argmax(dim=1) == target).float().mean()

        n_train = len(y_train)
        val_sets = None
    epoch_losses: list[float] = []
    val_acc = float("nan")
    if saved is not None:  # continue after the checkpoint's epoch: same weights, optimiser, batches
        opt.load_state_dict(saved["optimizer_states"][0])
        rng.bit_generator.state = json.loads(saved["rng"]["numpy"])
        torch.set_rng_state(saved["rng"]["torch"])
        epoch_losses = list(saved["history"]["losses"])
        val_acc = float(saved["history"]["val_accuracy"])
    logged_until = target.logged_until if target is not None else {}
    for epoch in range(len(epoch_losses), s.epochs):
        model.train()
        losses = []
        for idx in _batches(n_train, s.batch_size, rng):
            loss, _ = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
        model.eval()
        with torch.no_grad():
            if val_sets is None:
                logits = torch.cat([model(torch.from_numpy(x_val[i : i + 512])) for i in range(0, len(x_val), 512)])
                val_acc = float((logits.argmax(dim=1).numpy() == y_val).mean())
            else:
                accs = [batch_loss(val_sets[0][i : i + 512])[1] for i in range(0, len(val_sets[0]), 512)]
                val_acc = float(np.mean([float(a) for a in accs]))
        if tracker is not None:
            metrics = {"pretrain/loss": epoch_losses[-1], "pretrain/val_accuracy": val_acc}
            # A run killed between this log and the checkpoint replays the epoch: not logged twice.
            metrics = {k: v for k, v in metrics.items() if epoch + 1 > logged_until.get(k, 0)}
            if metrics:
                tracker.mlflow.log_metrics(metrics, step=epoch + 1)
        _checkpoint(run_dir, model, opt, rng, epoch_losses, val_acc)
    backbone_file = save_backbone(model, run_dir)
    model_uri = None
    if tracker is not None:
        tracker.log_artifact(backbone_file, "weights")
        wall_s = time.perf_counter() - t_start
        tracker.mlflow.log_metrics({"pretrain/final_val_accuracy": val_acc, "perf/wall_s": wall_s})
        example = (data[2] if data is not None else frames["obs"])[:2]
        model_uri = tracker.log_torch_model(model.encoder, example, "backbone", [backbone_file], s.register_as)
    _checkpoint(run_dir, model, opt, rng, epoch_losses, val_acc, finished=True)
    return PretrainResult(
        run_id=tracker.run_id if tracker is not None else None,
        objective=s.objective,
        val_accuracy=val_acc,
        train_loss_first=epoch_losses[0],
        train_loss_last=epoch_losses[-1],
        model_uri=model_uri,
        run_dir=run_dir,
        wall_s=time.perf_counter() - t_start,
    )
