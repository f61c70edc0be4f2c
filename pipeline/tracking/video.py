"""Rollout videos and transcripts, the files the MLflow UI shows next to a run.

PyAV writes H.264 in yuv420p, the one mp4 flavour every browser's <video> plays (the MLflow artifact view
included): one library, FFmpeg bundled in its wheel, no external binary to find. Files are written to a
temporary name and renamed, so a full disk or a signal never leaves half a video behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_FPS = 30


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: pad the last row/column by repeating it."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    return np.ascontiguousarray(_even(frame.astype(np.uint8, copy=False)))


class VideoWriter:
    """Streams frames into `path` (HxWx3 or HxW uint8 RGB, all one size): a long episode is never held in
    memory. The file appears, complete, when the writer closes without an error; else nothing is left."""

    def __init__(self, path: Path, fps: float = DEFAULT_FPS):
        self.path, self.fps = path, max(1, round(fps))
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.frames = 0
        self._container = None
        self._stream = None

    def add(self, frame: np.ndarray) -> None:
        import av

        picture = _rgb(frame)
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.tmp), mode="w", format="mp4")
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.height, self._stream.width = picture.shape[:2]
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "23", "preset": "veryfast"}
        self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        self.frames += 1

    def close(self, keep: bool = True) -> Path | None:
        """Finish the file (flush the encoder, rename into place); `keep=False` discards it."""
        container, self._container = self._container, None
        try:
            if container is not None:
                if keep:
                    container.mux(self._stream.encode(None))
                container.close()
                if keep:
                    os.replace(self.tmp, self.path)
                    return self.path
            return None
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.close(keep=kind is None)


def write_mp4(frames: Sequence[np.ndarray], path: Path, fps: float = DEFAULT_FPS) -> Path:
    """A whole clip at once (see `VideoWriter`)."""
    if not frames:
        raise ValueError("write_mp4: no frames")
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.add(frame)
    return path


def read_mp4(path: Path) -> list[np.ndarray]:
    """Every frame of a video as HxWx3 uint8 RGB: how the tests check what the writer wrote."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def write_transcript(lines: Sequence[str], path: Path) -> Path:
    """A text agent's episode: what it read and what it chose, one block per step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
