"""`python -m pipeline.report [sweep=<parent run id>|last] [key=value ...]`: the comparison report of a sweep."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, one_line
from pipeline.report.build import make_report

USAGE = (
    "usage: python -m pipeline.report [sweep=<parent run id>|last] [tracking_uri=sqlite:///outputs/mlflow.db] "
    "[metric=eval/return_mean] [threshold=<float>] [out=outputs/reports]"
)


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """`key=value` arguments → make_report's keyword arguments."""
    kwargs: dict[str, Any] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("sweep", "tracking_uri", "metric", "threshold", "out"):
            raise ConfigError(f"unknown argument {arg!r}; {USAGE.removeprefix('usage: ')}")
        if not value:
            raise ConfigError(f"{key}= needs a value; {USAGE.removeprefix('usage: ')}")
        if key == "threshold":
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise ConfigError(f"threshold={value}: not a number, e.g. threshold=475") from None
        elif key == "out":
            kwargs[key] = Path(value)
        else:
            kwargs[key] = value
    return kwargs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in args):
        print(USAGE)
        return 0
    try:
        path = make_report(**parse_args(args))
    except ConfigError as ex:
        print(f"error: {one_line(ex)}", file=sys.stderr, flush=True)
        return 2
    print(f"report: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
