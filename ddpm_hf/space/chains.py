"""Streamed reverse chains for the Space: sampling, a user's picture through noise and back, and inpainting.

Each run iterates ``ddpm_hf.sampling.reverse_chain`` and yields a ``Progress`` (the batch as it is now beside the
x̂_0 it is heading to, drawn as the GIF's frames are) after the first step, every few steps and at least every
``PREVIEW_SECONDS``, and one ``Finished`` at the end (the result grid and a GIF of x_t beside x̂_0). Each ``Progress``
reaches a visitor as a picture to download, so there are at most ``PREVIEWS`` of them on a quick run, and none of the
last step (``Finished`` shows it). Closing the iterator stops the chain at once: no thread runs behind it.
"""

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .. import pictures
from ..sampling import ChainStep, Trajectory, initial_noise, reverse_chain, seed_generators
from .images import animation_scale, grid_scale, new_file, picture
from .limits import ANIMATION_FRAMES, PREVIEW_SECONDS, PREVIEWS
from .registry import Model


@dataclass(frozen=True)
class ChainRequest:
    """How many images, which sampler, how many steps, which σ_t² (DDPM), which seed: as the app's inputs checked them
    (``ddpm_hf.space.components``), once; the step count's bound by the model's T is the library's own check. A
    class-conditional model also takes one class per image (None: any) and the guidance w; ``columns`` sets the
    grid's row length (one row per class), None a square grid."""

    num_images: int
    sampler: str
    num_inference_steps: int
    variance: str
    seed: int
    class_labels: tuple[int | None, ...] | None = None
    guidance_scale: float | None = None
    columns: int | None = None


@dataclass
class Progress:
    """After ``step`` steps, the last one from ``timestep``: the batch x_{t-1} beside its predicted x̂_0, as one
    picture; ``seconds`` since the first step ended, for an estimate of the time left (the first step, which warms
    the network up, would make it far too long)."""

    step: int
    timestep: int
    grid: Image.Image
    seconds: float = 0.0
    total: int | None = None  # the chain's length where it is known before it runs (None for SDEdit)
    first_timestep: int | None = None  # t of the first step: SDEdit's estimate, from how far t has come down since

    def describe(self, start_timestep: int | None = None) -> str:
        """ "step 12 of 50, t = 780; about 9 s left" (for SDEdit, the time left from how far t has come down);
        after the first step, no estimate yet."""
        if self.total is not None:
            left = self.seconds / (self.step - 1) * (self.total - self.step) if self.step > 1 else None
            return f"step {self.step} of {self.total}, t = {self.timestep}; {about(left)}"
        done = (self.first_timestep or start_timestep or 0) - self.timestep
        left = self.seconds / done * self.timestep if self.step > 1 and done > 0 else None
        return f"step {self.step}, t = {self.timestep} (counting down to 0); {about(left)}"


def about(seconds: float | None) -> str:
    if seconds is None:
        return "estimating the time left"
    return "almost done" if seconds < 1 else f"about {seconds:.0f} s left"


@dataclass
class Finished:
    """The result grid, the denoising GIF, one label per GIF frame ("step 12 of 32, t = 390") and the result batch
    itself (B, C, H, W) in [-1, 1] on the CPU; ``frame``, the GIF's last frame as drawn (None: read it from the GIF)."""

    grid: Image.Image
    animation: Path
    labels: list[str]
    result: torch.Tensor | None = None
    frame: Image.Image | None = None


def run_chain(
    model: Model,
    request: ChainRequest,
    x0: torch.Tensor | None = None,
    start_timestep: int | None = None,
    keep: torch.Tensor | None = None,
    rotate: bool = True,
    x_t: torch.Tensor | None = None,
    same_noise: bool = False,
) -> Iterator[Progress | Finished]:
    """Stream one reverse chain.

    Args:
        model: the loaded model.
        request: what to run.
        x0: a picture (1, C, H, W) in [-1, 1] for SDEdit or inpainting; None samples from x_T ~ N(0, I).
        start_timestep: SDEdit (Meng et al. 2022): start at x_t ~ q(x_t | x0) for this t instead of at x_T.
        keep: inpainting mask (1, 1, H, W), 1 where x0 is kept; elsewhere the model fills in (RePaint without
            resampling, Lugmayr et al. 2022).
        rotate: False for the GIF of the result shown on arrival, which no later request may rotate out.
        x_t: the starting batch itself (num_images, C, H, W) at ``start_timestep``, instead of a draw of
            q(x_t | x0): one x_t shared by every chain, or pictures mixed in the noised space (Ho et al. 2020, figs.
            7 and 8). Each chain's noise after it is the noise it draws when it starts from its own x_T or x_t.
        same_noise: every chain draws the same noise (each image's generator seeded ``request.seed``, not
            ``seed + i``): the images then differ only by where they start.

    Yields:
        ``Progress`` after the first step, every few steps and at least every ``PREVIEW_SECONDS`` (never after the
        last step), then one ``Finished``.
    """
    unet, n, steps = model.pipe.unet, request.num_images, request.num_inference_steps
    if same_noise:
        generators = [torch.Generator().manual_seed(request.seed) for _ in range(n)]
    else:
        generators = seed_generators(request.seed, n)
    x = initial_noise(unet, n, generators)  # drawn also when x_t is given: the chains' noise then comes after it
    if x_t is not None:
        if x0 is not None or start_timestep is None or tuple(x_t.shape) != tuple(x.shape):
            raise ValueError(f"x_t must be a batch of shape {tuple(x.shape)} at a start_timestep, without x0")
        x = x_t.to(x.device, x.dtype)
    known = None
    if x0 is not None:
        x0 = x0.to(x.device, x.dtype).expand(n, -1, -1, -1)
        if start_timestep is not None:
            x = model.scheduler.add_noise(x0, x, torch.full((n,), start_timestep, device=x.device))
        if keep is not None:
            known = (x0, keep.to(x.device, x.dtype).expand_as(x0))
    chain = reverse_chain(
        unet,
        model.scheduler,
        x,
        num_inference_steps=steps,
        sampler=request.sampler,
        variance=request.variance,
        generator=generators,
        start_timestep=start_timestep,
        known=known,
        class_labels=None if request.class_labels is None else list(request.class_labels),
        guidance_scale=request.guidance_scale,
    )
    nrow, size = request.columns or math.ceil(math.sqrt(n)), model.size
    capture_every, preview_every = max(1, math.ceil(steps / ANIMATION_FRAMES)), max(1, math.ceil(steps / PREVIEWS))
    trajectory, captured, last, first, shown = Trajectory(), [], None, None, (-preview_every, 0.0)  # (index, when)
    total = steps if start_timestep is None else None
    try:
        for item in chain:
            now = time.monotonic()
            if first is None:
                first = (now, item.timestep)  # the time left is estimated from here on
            if item.index % capture_every == 0:
                trajectory.add(item)
                captured.append(item.index + 1)
            due = item.index - shown[0] >= preview_every or now - shown[1] >= PREVIEW_SECONDS
            if due and item.index + 1 != total:
                shown = (item.index, now)
                grid = preview(item, nrow, size)
                yield Progress(item.index + 1, item.timestep, grid, now - first[0], total, first[1])
            last = item
    finally:
        chain.close()
    result = last.x_prev.float().cpu().clamp(-1, 1)
    trajectory.x_t.append(result)
    trajectory.pred_x0.append(result)
    done = last.index + 1
    labels = [f"step {i} of {done}, t = {t}" for i, t in zip(captured, trajectory.timesteps)] + [
        f"the result x₀, after {done} step{'s' * (done != 1)}"
    ]
    frames = pictures.denoising_frames(trajectory, nrow, animation_scale(size))
    gif = pictures.save_gif(frames, new_file(".gif", rotate=rotate))
    yield Finished(picture(result, grid_scale(size), nrow=nrow), gif, labels, result, frames[-1])


def preview(step: ChainStep, nrow: int, size: int) -> Image.Image:
    """The batch after ``step`` beside the x̂_0 it predicts, drawn as the GIF's frames are (at ``animation_scale``, about
    the size a page shows it at)."""
    now = Trajectory(timesteps=[step.timestep], x_t=[step.x_prev.float().cpu()], pred_x0=[step.pred_x0.float().cpu()])
    return pictures.denoising_frames(now, nrow, animation_scale(size))[0]
