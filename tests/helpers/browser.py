"""Headless Chromium for UI tests: find it (installing Debian's package if we may), render a page once.

No Python dependency: Chromium's own `--dump-dom` and `--screenshot` switches, run in one process after a
virtual-time budget (virtual time stands still while requests are pending, so the budget is spent only once
the page has its data; idle timers are fast-forwarded, so a large budget costs little wall time).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
HOW_TO_INSTALL = "sudo apt-get install -y --no-install-recommends chromium"


def find_chromium() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    """apt's last error line (`E: ...`), else its last line, else the exit status."""
    lines = [line.strip() for line in f"{proc.stdout}\n{proc.stderr}".splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]


def ensure_chromium(timeout: float = 900) -> tuple[str | None, str]:
    """(path, "") when Chromium is there or could be installed with apt-get; else (None, why, one line)."""
    if exe := find_chromium():
        return exe, ""
    if not shutil.which("apt-get"):
        return None, f"no chromium on PATH and no apt-get to install it; install Chromium ({HOW_TO_INSTALL})"
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]  # never prompts: fails at once without passwordless sudo
    else:
        return None, f"no chromium on PATH, not root and no sudo to install it; run: {HOW_TO_INSTALL}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*prefix, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout:.0f} s")

    step, proc = INSTALL, apt(INSTALL)
    if proc.returncode != 0:  # most often missing or stale package lists: refresh them once and retry
        step, proc = ["apt-get", "update"], apt(["apt-get", "update"])
        if proc.returncode == 0:
            step, proc = INSTALL, apt(INSTALL)
    if proc.returncode == 0 and (exe := find_chromium()):
        return exe, ""
    tried = " ".join([*prefix, *step])
    return None, f"no chromium on PATH and `{tried}` failed ({_why(proc)}); run: {HOW_TO_INSTALL}"


def render(
    exe: str,
    url: str,
    screenshot: Path,
    *,
    window: tuple[int, int] = (1600, 1000),
    budget_ms: int = 30_000,
    extra_args: tuple[str, ...] = (),
    timeout: float = 180,
) -> str:
    """Load `url` headless, wait `budget_ms` of virtual time, save a PNG of the viewport, return the DOM."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        args = [
            exe,
            "--headless=new",
            "--no-sandbox",  # root in a container has no usable sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",  # small /dev/shm in containers
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",  # a fresh profile: no state from other runs, no lock clashes
            f"--window-size={window[0]},{window[1]}",
            f"--virtual-time-budget={budget_ms}",
            *extra_args,
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ]
        # Own process group: on a timeout the renderer and GPU helpers go too, not only the browser process.
        with subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        ) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise RuntimeError(f"chromium took over {timeout:.0f} s on {url}") from None
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"chromium exited {proc.returncode} on {url}:\n{err[-3000:]}")
    return out
