"""The MLflow UI, really used: `mlflow server` over a grid's store, headless Chromium on its pages.

Two runs of a real multirun grid fill a fresh store; the server runs on 127.0.0.1; Chromium renders the
compare-runs page of both runs, and the artifact view of an evaluation run's video. The compare page must
name both runs and draw a plotly chart with a logged metric on it; the same page for a run id that does not
exist must not (so the check can fail). The artifact view must hold a <video> player fed with the mp4's bytes;
a training run's artifact view holds none. The screenshot is kept under
`<outputs>/ui/compare-runs.png`, and copied to docs/img/ when PIPELINE_KEEP_SCREENSHOT=1 (the README image).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, ImageStat

from tests.conftest import ROOT, TINY, run_cli
from tests.helpers.browser import ensure_chromium, render

README_IMAGE = ROOT / "docs" / "img" / "mlflow-compare-runs.png"

# The browser reaches the 127.0.0.1 server under a reserved `.test` name (Chromium's --host-resolver-rules; the
# server allows that Host and Origin). On localhost MLflow 3's UI opens its "MLflow Assistant" side panel on a
# first visit, which a fresh browser profile always is: it would cover a third of the screenshot.
ALIAS = "mlflow-ui.test"


@dataclass
class Grid:
    experiment_id: str
    runs: dict[str, str]  # run id -> run name, by name
    metrics: set[str]  # metric keys logged by both runs


@pytest.fixture(scope="session")
def chromium() -> str:
    exe, why = ensure_chromium()
    if exe is None:
        pytest.skip(why)
    return exe


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module: the grid, its server and the evaluation run are shared by its tests."""
    out = tmp_path_factory.mktemp("ui") / "outputs"
    out.mkdir()
    return out


@pytest.fixture(scope="module")
def grid(outputs: Path) -> Grid:
    """A two-job multirun of the real CLI (seed=0,1) with tiny budgets, into `<outputs>/mlflow.db`."""
    proc = run_cli(["-m", "seed=0,1", *TINY], outputs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("pipeline")
    assert experiment is not None
    # The grid's jobs; a sweep's own parent run (tag sweep_parent=true) holds no metrics of its own.
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("sweep_parent") != "true"]
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["seed"] for r in runs} == {"0", "1"}
    metrics = set.intersection(*(set(r.data.metrics) for r in runs))
    assert "eval/return_mean" in metrics
    runs.sort(key=lambda r: r.info.run_name)  # seed 0 first, in the page's columns too
    return Grid(experiment.experiment_id, {r.info.run_id: r.info.run_name for r in runs}, metrics)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn and its workers), SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(grid: Grid, outputs: Path) -> Iterator[str]:
    """`mlflow server` over the grid's store on a free 127.0.0.1 port; yields the base URL the browser uses."""
    port = _free_port()
    log = outputs / "ui" / "mlflow-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{outputs}/mlflow.db",
        "--artifacts-destination",
        str(outputs / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"127.0.0.1:{port},{ALIAS}:{port}",
        "--cors-allowed-origins",
        f"http://{ALIAS}:{port}",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, cwd=outputs, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
        yield f"http://{ALIAS}:{port}"
    finally:
        _stop(proc)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 120) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited {proc.returncode} before answering {url}:\n{_tail(log)}")
        with contextlib.suppress(OSError), opener.open(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"mlflow server did not answer {url} within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def compare_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """The UI's own route (`getCompareRunPageRoute`: JSON arrays as query values), percent-encoded."""
    runs = quote(json.dumps(run_ids, separators=(",", ":")), safe="")
    experiments = quote(json.dumps(experiment_ids, separators=(",", ":")), safe="")
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}"


class _PageText(HTMLParser):
    """Visible text of a DOM dump (attributes and hrefs left out: the URL's run ids are in those on any page),
    and separately the text inside plotly charts (`js-plotly-plot` elements: axis titles, ticks, legends)."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.charts: list[list[str]] = []
        self._depth = 0
        self._chart_depth: int | None = None
        self._skip_depth: int | None = None  # inside <script>/<style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        self._depth += 1
        if tag in ("script", "style") and self._skip_depth is None:
            self._skip_depth = self._depth
        classes = (dict(attrs).get("class") or "").split()
        if "js-plotly-plot" in classes and self._chart_depth is None:
            self._chart_depth = self._depth
            self.charts.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if self._chart_depth == self._depth:
            self._chart_depth = None
        if self._skip_depth == self._depth:
            self._skip_depth = None
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._skip_depth is not None or not data.strip():
            return
        self.text.append(data.strip())
        if self._chart_depth is not None:
            self.charts[-1].append(data.strip())


def compare_page_problems(dom: str, grid: Grid) -> list[str]:
    """What the compare-runs page lacks: each run's id and name as text, a plotly chart with a logged metric."""
    page = _PageText()
    page.feed(dom)
    words = set(page.text)
    problems = [f"run id {run_id} not shown" for run_id in grid.runs if run_id not in words]
    problems += [f"run name {name} not shown" for name in grid.runs.values() if name not in words]
    if not page.charts:
        problems.append("no plotly chart (.js-plotly-plot)")
    elif not any(grid.metrics & set(chart) for chart in page.charts):
        problems.append(f"no plotly chart shows a logged metric (chart text: {page.charts})")
    return problems


def assert_not_blank(png: Path) -> None:
    assert png.stat().st_size > 20_000, f"{png} is {png.stat().st_size} bytes"
    with Image.open(png) as image:
        assert image.size == (1600, 1000)
        stddev = ImageStat.Stat(image.convert("L")).stddev[0]
    assert stddev > 10, f"{png} is nearly uniform (grey-level stddev {stddev:.1f})"


def test_compare_runs_page_shows_both_runs_and_a_metric_chart(
    chromium: str, grid: Grid, mlflow_server: str, outputs: Path
) -> None:
    browse = ("--no-proxy-server", f"--host-resolver-rules=MAP {ALIAS} 127.0.0.1")
    png = outputs / "ui" / "compare-runs.png"
    url = compare_url(mlflow_server, list(grid.runs), [grid.experiment_id])
    dom = render(chromium, url, png, extra_args=browse)
    (outputs / "ui" / "compare-runs.html").write_text(dom)
    problems = compare_page_problems(dom, grid)
    assert not problems, f"{url}: {'; '.join(problems)} (page and screenshot in {outputs / 'ui'})"
    assert_not_blank(png)
    if os.environ.get("PIPELINE_KEEP_SCREENSHOT") == "1":
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, README_IMAGE)

    # The same check on the page for one real run and one that does not exist must fail: the markers come from
    # the store, not from the page's frame or the URL.
    bogus = [next(iter(grid.runs)), "0" * 32]
    dom = render(
        chromium,
        compare_url(mlflow_server, bogus, [grid.experiment_id]),
        outputs / "ui" / "bogus.png",
        extra_args=browse,
    )
    problems = compare_page_problems(dom, grid)
    assert any("not shown" in p for p in problems) and any("chart" in p for p in problems), problems


class _Videos(HTMLParser):
    """The <video> elements of a DOM dump and their sources (`src` on the element or a <source> child)."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.count = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "video":
            self.count += 1
        if tag in ("video", "source") and dict(attrs).get("src"):
            self.sources.append(dict(attrs)["src"] or "")


def artifact_url(base: str, experiment_id: str, run_id: str, path: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"


def test_the_evaluation_runs_video_plays_in_the_artifact_view(
    chromium: str, grid: Grid, mlflow_server: str, outputs: Path
) -> None:
    from pipeline.evaluate.__main__ import main as evaluate_main

    trained = next(iter(grid.runs))
    assert evaluate_main([f"model={trained}", "episodes=2", "video=true", f"paths.outputs={outputs}"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    [evaluation] = client.search_runs([grid.experiment_id], f"tags.evaluation_of = '{trained}'")
    browse = ("--no-proxy-server", f"--host-resolver-rules=MAP {ALIAS} 127.0.0.1")
    url = artifact_url(mlflow_server, grid.experiment_id, evaluation.info.run_id, "videos/episode_0.mp4")
    dom = render(chromium, url, outputs / "ui" / "evaluation-video.png", extra_args=browse)
    (outputs / "ui" / "evaluation-video.html").write_text(dom)
    videos = _Videos()
    videos.feed(dom)
    assert videos.count == 1, f"{url}: {videos.count} <video> elements (page in {outputs / 'ui'})"
    # The UI fetched the file and hands the player its bytes as a blob: the mp4 is what plays.
    assert len(videos.sources) == 1 and videos.sources[0].startswith("blob:"), videos.sources
    page = _PageText()
    page.feed(dom)
    assert {"episode_0.mp4", "episodes.csv", "summary.json"} <= set(page.text), page.text

    # The training run's own artifact page shows no video: the check can fail.
    dom = render(
        chromium,
        artifact_url(mlflow_server, grid.experiment_id, trained, "config.yaml"),
        outputs / "ui" / "training-artifacts.png",
        extra_args=browse,
    )
    videos = _Videos()
    videos.feed(dom)
    page = _PageText()
    page.feed(dom)
    assert videos.count == 0 and "config.yaml" in set(page.text)
