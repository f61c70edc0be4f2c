"""Evaluate a logged policy: rebuild its env from the training run's own config (with `env.*` overrides),
play N episodes, and log an evaluation run nested under the training run — per-episode table, statistics
(the report's rliable code), videos or transcripts, a saliency grid.

`prepare` does everything that can refuse (the model reference, the env overrides, the env's frames, the
policy's input and output shapes) before any run or file exists; `evaluate` then runs in one tracked run
that always ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from pipeline.algos.evaluate import EVAL_SEED_OFFSET, Acting, Episode, play_episode, record_episode
from pipeline.config.env import check_env
from pipeline.config.evaluate import EvaluateConfig
from pipeline.config.root import Config
from pipeline.core.errors import ConfigError, one_line
from pipeline.core.spec import EnvSpec
from pipeline.envs import check_renders, frame_rate, make_env, probe_env
from pipeline.evaluate.source import Source, resolve
from pipeline.report.stats import episode_statistics
from pipeline.tracking.store import absolute_tracking_uri


@dataclass
class Prepared:
    ecfg: EvaluateConfig
    env_overrides: dict[str, Any]
    tracking_uri: str
    source: Source
    cfg: Config  # the training run's config with the env overrides applied
    spec: EnvSpec
    policy: Any
    acting: Acting
    base_seed: int


@dataclass
class EvaluationResult:
    run_id: str | None
    source: Source
    env_id: str
    episodes: list[Episode]
    stats: dict[str, float]
    success_rate: float | None
    out_dir: Path
    recordings: list[Path] = field(default_factory=list)
    saliency: Path | None = None
    tracking_uri: str = ""


def store_uri(ecfg: EvaluateConfig) -> str:
    uri = ecfg.tracking_uri or f"sqlite:///{ecfg.paths.outputs}/mlflow.db"
    uri = absolute_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(
            f"tracking_uri={uri}: no MLflow store there; train a policy first (make run) or point "
            "tracking_uri= (or paths.outputs=) at the store that holds it"
        )
    return uri


def with_env_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """The training run's config with `env.<key>=value` applied, typed and checked like any env config."""
    if not overrides:
        return cfg
    conf = OmegaConf.structured(cfg)
    for key, value in overrides.items():
        try:
            OmegaConf.update(conf, key, value, merge=True)
        except Exception as ex:
            raise ConfigError(
                f"{key}={value}: {one_line(ex).split(' full_key')[0]}; see conf/env/*.yaml for the keys"
            ) from None
    new = OmegaConf.to_object(conf)
    assert isinstance(new, Config)
    if "env.id" in overrides and "env.solved_return" not in overrides:
        new.env.solved_return = None  # another env: its own threshold
    check_env(new.env)
    return new


def _acting(ecfg: EvaluateConfig, cfg: Config) -> Acting:
    logits = cfg.algo.family == "policy_gradient"
    return Acting(stochastic=ecfg.stochastic, logits=logits, epsilon=float(getattr(cfg.algo, "eps_end", 0.0)))


def load_policy(source: Source, cfg: Config, spec: EnvSpec) -> Any:
    """The logged policy, checked against the env it is to act in: a text policy for a text env, the same
    observation shape, one output per action."""
    import mlflow.pytorch

    model = source.model
    try:
        policy = mlflow.pytorch.load_model(source.model_uri)
    except Exception as ex:
        raise ConfigError(f"model={model}: cannot load {source.model_uri} ({one_line(ex)[:200]})") from None
    trained_on = f"it was trained on env.id={source.cfg.env.id}"
    if spec.is_text != hasattr(policy, "act_text"):
        kind = "text" if hasattr(policy, "act_text") else "array"
        raise ConfigError(f"model={model}: a {kind} policy cannot act in env.id={cfg.env.id}; {trained_on}")
    if spec.is_text:
        return policy
    continuous = _trained_spec(source).continuous  # the logged graph has `forward` alone: ask its env
    if continuous != spec.continuous:
        kinds = {True: "continuous", False: "discrete"}
        raise ConfigError(
            f"model={model}: a policy for {kinds[continuous]} actions cannot act in env.id={cfg.env.id}, whose "
            f"actions are {spec.action_kind}; {trained_on}"
        )
    env = make_env(cfg.env, evaluation=True)
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    obs = np.asarray(obs)
    try:
        with torch.no_grad():
            outputs = policy(torch.as_tensor(obs[None]))
    except Exception:
        raise ConfigError(
            f"model={model}: the policy does not take env.id={cfg.env.id}'s observations "
            f"(shape {tuple(obs.shape)}, {obs.dtype}); {trained_on} (shape {_trained_shape(source)})"
        ) from None
    if outputs.shape[-1] != spec.n_actions:
        what = "outputs a {}-dimensional action" if continuous else "chooses among {} actions"
        has = f"{spec.n_actions}-dimensional actions" if continuous else f"{spec.n_actions}"
        raise ConfigError(
            f"model={model}: the policy {what.format(outputs.shape[-1])}, env.id={cfg.env.id} has {has}; {trained_on}"
        )
    return policy


def _trained_spec(source: Source) -> EnvSpec:
    """The spec of the env the policy was trained on (built from the training run's own config)."""
    return probe_env(source.cfg.env)


def _trained_shape(source: Source) -> str:
    try:
        return str(tuple(_trained_spec(source).obs_shape))
    except Exception:
        return "unknown"


def prepare(ecfg: EvaluateConfig, env_overrides: dict[str, Any]) -> Prepared:
    """Every refusal, in one line, before anything is written."""
    uri = store_uri(ecfg)
    source = resolve(ecfg.model, uri)
    cfg = with_env_overrides(source.cfg, env_overrides)
    spec = probe_env(cfg.env)
    if ecfg.video:
        check_renders(cfg.env, "it cannot give a video; set video=false")
    if ecfg.saliency and not spec.is_image:
        raise ConfigError(
            f"saliency=true: env.id={cfg.env.id} gives the policy {'text' if spec.is_text else 'vectors'}, "
            "not images; saliency maps are for pixel agents (set saliency=false)"
        )
    policy = load_policy(source, cfg, spec)
    if ecfg.stochastic and spec.continuous:
        raise ConfigError(
            f"stochastic=true: algo={cfg.algo.name}'s logged policy serves its mean action (the MLflow model keeps "
            "the forward pass alone); evaluate it with stochastic=false"
        )
    base = ecfg.seed if ecfg.seed is not None else source.cfg.seed + EVAL_SEED_OFFSET
    return Prepared(ecfg, env_overrides, uri, source, cfg, spec, policy, _acting(ecfg, cfg), base)


def _out_dir(ecfg: EvaluateConfig) -> Path:
    return Path(ecfg.paths.outputs) / "evaluations" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def _play(p: Prepared, out_dir: Path) -> tuple[list[Episode], list[Path], Path | None]:
    ecfg, text = p.ecfg, p.spec.is_text
    env = make_env(p.cfg.env, evaluation=True, render=ecfg.video and not text)
    rng = np.random.default_rng(p.base_seed)
    episodes, recordings = [], []
    saliency = None
    try:
        fps = frame_rate(env, p.cfg.env)
        for k in range(ecfg.episodes):
            seed, keep = p.base_seed + k, ecfg.saliency and k == 0
            if ecfg.video and k < ecfg.video_episodes:
                stem = out_dir / ("transcripts" if text else "videos") / f"episode_{k}"
                episode, path = record_episode(
                    env, p.policy, seed, stem, fps, text, p.acting, rng=rng, keep_observations=keep
                )
                recordings.append(path)
            else:
                episode = play_episode(env, p.policy, seed, p.acting, rng, keep_observations=keep)
            episodes.append(episode)
            print(f"episode {k + 1}/{ecfg.episodes}: return {episode.ret:g} in {episode.length} steps", file=sys.stderr)
            if keep and episode.observations:
                from pipeline.evaluate.saliency import saliency_grid

                path = out_dir / "saliency" / "episode_0.png"
                saliency = saliency_grid(
                    p.policy, episode.observations, episode.actions, ecfg.saliency_frames, path, torch.device("cpu")
                )
                episode.observations = []
    finally:
        env.close()
    return episodes, recordings, saliency


def _write_table(episodes: list[Episode], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["episode", "seed", "return", "length", "success"])
        for k, e in enumerate(episodes):
            out.writerow([k, e.seed, e.ret, e.length, "" if e.success is None else int(e.success)])
    return path


def evaluate(p: Prepared) -> EvaluationResult:
    """The episodes, in one evaluation run nested under the training run."""
    from pipeline.tracking.run import Tracker, flatten

    ecfg, source = p.ecfg, p.source
    tracker = Tracker(p.tracking_uri, source.experiment, "")
    out_dir = _out_dir(ecfg)
    mode = "stochastic" if ecfg.stochastic else "greedy"
    params = flatten({k: v for k, v in asdict(ecfg).items() if k not in ("paths", "tracking_uri")})
    params |= {**p.env_overrides, "env.id": p.cfg.env.id, "base_seed": p.base_seed, "model_uri": source.model_uri}
    tags = {
        "mlflow.parentRunId": source.run_id,  # shown nested under the training run in the UI
        "evaluation": "true",
        "evaluation_of": source.run_id,
        "model_uri": source.model_uri,
        "acting": mode,
        "env_id": p.cfg.env.id,
    }

    def body() -> EvaluationResult:
        target = tracker.start(f"eval-{source.run_name}", params, tags)
        tracker.set_tags({"out_dir": str(out_dir.resolve())})
        episodes, recordings, saliency = _play(p, out_dir)
        returns = np.array([e.ret for e in episodes])
        stats = episode_statistics(returns)
        verdicts = [e.success for e in episodes if e.success is not None]
        success_rate = float(np.mean(verdicts)) if verdicts else None
        metrics = {f"eval/return_{k}": v for k, v in stats.items()}
        metrics["eval/length_mean"] = float(np.mean([e.length for e in episodes]))
        metrics["eval/episodes"] = float(len(episodes))
        if success_rate is not None:
            metrics["eval/success_rate"] = success_rate
        tracker.mlflow.log_metrics(metrics, step=0)
        table = _write_table(episodes, out_dir / "episodes.csv")
        summary = out_dir / "summary.json"
        summary.write_text(
            json.dumps(
                {
                    "model": source.model_uri,
                    "run_id": source.run_id,
                    "acting": mode,
                    "env_id": p.cfg.env.id,
                    "statistics": stats,
                    "success_rate": success_rate,
                    "episodes": [
                        {"seed": e.seed, "return": e.ret, "length": e.length, "success": e.success} for e in episodes
                    ],
                },
                indent=2,
            )
        )
        tracker.log_artifact(table)
        tracker.log_artifact(summary)
        for path in recordings:
            tracker.log_artifact(path, path.parent.name)  # videos/ or transcripts/
        if saliency is not None:
            tracker.log_artifact(saliency, "saliency")
        return EvaluationResult(
            target.run_id,
            source,
            p.cfg.env.id,
            episodes,
            stats,
            success_rate,
            out_dir,
            recordings,
            saliency,
            p.tracking_uri,
        )

    return tracker.run_to_end(body)


def summary_lines(r: EvaluationResult, ecfg: EvaluateConfig) -> list[str]:
    """The one-screen summary the command prints."""
    s, n = r.stats, len(r.episodes)
    seeds = f"seeds {r.episodes[0].seed}..{r.episodes[-1].seed}" if n > 1 else f"seed {r.episodes[0].seed}"
    mode = "stochastic" if ecfg.stochastic else "greedy"
    lines = [
        f"evaluated {r.source.model_uri} (training run {r.source.run_id}, {r.source.run_name})",
        f"  env {r.env_id}, {n} episodes ({mode}, {seeds})",
        f"  return  mean {s['mean']:.2f} [95% CI {s['mean_ci_low']:.2f}, {s['mean_ci_high']:.2f}]   "
        f"IQM {s['iqm']:.2f} [95% CI {s['iqm_ci_low']:.2f}, {s['iqm_ci_high']:.2f}]",
        f"          median {s['median']:.2f}   std {s['std']:.2f}   min {s['min']:.2f}   max {s['max']:.2f}",
        f"  length  mean {np.mean([e.length for e in r.episodes]):.1f}",
    ]
    if r.success_rate is not None:
        lines.append(f"  success rate {r.success_rate:.2f}")
    for path in r.recordings:
        lines.append(f"  {'video' if path.suffix == '.mp4' else 'transcript'}: {path}")
    if r.saliency is not None:
        lines.append(f"  saliency: {r.saliency}")
    lines.append(f"  table: {r.out_dir / 'episodes.csv'}")
    if r.run_id:
        lines.append(f"mlflow evaluation run {r.run_id} (nested under {r.source.run_id})")
        lines.append(f"open the UI: mlflow ui --backend-store-uri {r.tracking_uri}  (default store: make ui)")
    return lines
