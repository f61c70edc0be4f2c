"""`python -m pipeline.evaluate model=<ref> [episodes=N] [video=true] [env.<key>=value ...]` — evaluate a policy.

Values are written as on `python -m pipeline`'s command line (Hydra's override grammar); the keys and their
defaults are in conf/evaluate.yaml. Bad input: one line, exit 2, nothing created; SIGINT/SIGTERM: the
evaluation run ends KILLED, exit 128 + signal.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.evaluate import EvaluateConfig, check_evaluate
from pipeline.core.errors import ConfigError, Interrupted, RunFailure, disk_full_reason, one_line
from pipeline.core.signals import GUARD

CONF = Path(__file__).resolve().parents[2] / "conf" / "evaluate.yaml"
KEYS = tuple(f.name for f in dataclasses.fields(EvaluateConfig) if f.name != "paths")
USAGE = (
    "usage: python -m pipeline.evaluate model=last|<run id>|runs:/<id>/policy|models:/<name>/<version> "
    "[episodes=10] [video=true] [stochastic=true] [seed=N] [saliency=true] [env.<key>=value ...] "
    "(every key: conf/evaluate.yaml)"
)


def parse_args(argv: list[str]) -> tuple[EvaluateConfig, dict[str, Any]]:
    """`key=value` arguments → the evaluation config and the `env.*` overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides(argv)
    except Exception as ex:
        raise ConfigError(f"{one_line(ex).split(' See ')[0]}; {USAGE.removeprefix('usage: ')}") from None
    own: dict[str, Any] = {}
    env: dict[str, Any] = {}
    for o in overrides:
        key = o.key_or_group
        if o.is_add() or o.is_delete() or o.is_sweep_override():
            raise ConfigError(f"{o.input_line}: write plain key=value; {USAGE.removeprefix('usage: ')}")
        value = o.value()
        if key.startswith("env."):
            env[key] = value
        elif key in KEYS or key == "paths.outputs":
            own[key] = value
        else:
            raise ConfigError(
                f"unknown key {key!r}: use {', '.join(KEYS)}, paths.outputs or env.<key>; see conf/evaluate.yaml"
            )
    conf = OmegaConf.merge(OmegaConf.structured(EvaluateConfig), OmegaConf.load(CONF))
    for key, value in own.items():
        try:
            OmegaConf.update(conf, key, value, merge=True)
        except Exception as ex:
            raise ConfigError(f"{key}={value}: {one_line(ex).split(' full_key')[0]}") from None
    ecfg = OmegaConf.to_object(conf)
    assert isinstance(ecfg, EvaluateConfig)
    check_evaluate(ecfg)
    return ecfg, env


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in args):
        print(USAGE)
        return 0
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with GUARD.installed():
            ecfg, env = parse_args(args)
            from pipeline.core.quiet import silence_known_noise
            from pipeline.evaluate.job import evaluate, prepare, summary_lines

            silence_known_noise()
            result = evaluate(prepare(ecfg, env))
    except ConfigError as ex:
        print(f"error: {one_line(ex)}", file=sys.stderr, flush=True)
        return 2
    except Interrupted as ex:
        print(f"error: {ex}: the evaluation stopped (its run, if started, ended KILLED)", file=sys.stderr, flush=True)
        return ex.exit_code
    except Exception as ex:
        reason = disk_full_reason(ex)
        if reason is None and not isinstance(ex, RunFailure):
            raise
        print(f"error: {reason or one_line(ex)}", file=sys.stderr, flush=True)
        return 1
    for line in summary_lines(result, ecfg):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
