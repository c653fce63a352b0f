"""What a reverse chain's events show (``ChainOutputs``), from the first streamed update to the finished run.

A streamed picture is handed to Gradio as a PNG file this module writes at zlib level 1 (``PREVIEW_PNG``): on these
upscaled grids that is 2.5-4.5× faster than the level 6 Gradio encodes a picture at, for files 15-50 % larger (JPEG
and WebP, lossy or not, make larger files or take longer). The result grid stays a picture Gradio encodes itself.
"""

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
from PIL import Image

from . import chains, images

PREVIEW_PNG = {"format": "PNG", "compress_level": 1}


class ChainOutputs(NamedTuple):
    """What a chain's events show, in this order: the result grid, the denoising GIF, the scrubber over its frames,
    the frame chosen with it, the status line ("step k of n, t = …; about 9 s left", or where Stop stopped it), and
    the run's state (how far it came, for Stop; the GIF's frames, for the scrubber). The app's components and each
    update of a handler take this shape."""

    grid: Any
    animation: Any
    scrubber: Any
    frame: Any
    status: Any
    state: Any

    @classmethod
    def unchanged(cls) -> "ChainOutputs":
        return cls(*(gr.skip(),) * len(cls._fields))

    @classmethod
    def cleared(cls, grid=None) -> "ChainOutputs":
        """No result of an earlier run (the grid given, or none) and no status line."""
        return cls(grid, None, idle_scrubber(), None, "", None)


def stream(run, progress, start_timestep: int | None = None, done_line: str = "") -> Iterator[ChainOutputs]:
    """``ChainOutputs`` for each update of a chain run: the first clears the panels of an earlier run; the grid is the
    chain as it is now (a file of ``preview_files``); the status line says how far the chain has come and the time
    left (at the end, ``done_line``), the state the same for Stop."""
    first = True
    with preview_files() as save:
        for update in run:
            if isinstance(update, chains.Progress):
                text = update.describe(start_timestep)
                if update.total:
                    progress((update.step, update.total), desc=text, unit="steps")
                else:
                    progress(1 - update.timestep / max(start_timestep or 1, 1), desc=text)
                state = {"step": update.step, "total": update.total, "timestep": update.timestep}
                panels = ChainOutputs.cleared() if first else ChainOutputs.unchanged()
                yield panels._replace(grid=save(update.grid), status=text, state=state)
                first = False
            else:
                yield finished_outputs(update, done_line)


@contextlib.contextmanager
def preview_files() -> Iterator[Callable[[Image.Image], str]]:
    """``save(picture)`` writes a streamed picture as ``PREVIEW_PNG`` and returns its path, for Gradio to copy into its
    cache. Gradio copies a generator's update before it asks for the next one, so each file is deleted when the next
    is saved, and the last when the run ends or is stopped: a run holds one file at a time."""
    folder, numbers = Path(tempfile.mkdtemp(prefix="previews-", dir=images.workdir())), itertools.count()

    def save(picture: Image.Image) -> str:
        for copied in folder.iterdir():
            copied.unlink()
        path = folder / f"{next(numbers):05d}.png"
        picture.save(path, **PREVIEW_PNG)
        return str(path)

    try:
        yield save
    finally:
        shutil.rmtree(folder, ignore_errors=True)


IDLE_FRAME = "after a run: step through it here"


def idle_scrubber() -> gr.Slider:
    return gr.Slider(0, 1, value=1, step=1, interactive=False, label="Frame", info=IDLE_FRAME)


def frame_info(labels: list[str], index: int) -> str:
    """The scrubber's line for frame ``index``: "frame 12 of 30: step 25 of 50, t = 510"."""
    return f"frame {index} of {len(labels) - 1}: {labels[index]}"


def finished_outputs(done: chains.Finished, line: str = "") -> ChainOutputs:
    """A finished run's panels, with ``line`` on the status line."""
    last = len(done.labels) - 1
    info = frame_info(done.labels, last)
    slider = gr.Slider(0, last, value=last, step=1, interactive=True, label="Frame", info=info)
    state = {"animation": str(done.animation), "labels": done.labels}
    frame = done.frame if done.frame is not None else images.animation_frame(done.animation, last)
    return ChainOutputs(done.grid, str(done.animation), slider, frame, line, state)
