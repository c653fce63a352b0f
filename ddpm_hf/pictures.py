"""Pictures of the chain: sample grids, denoising animations (x_t beside x̂_0) and the forward process q(x_t | x_0)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import to_uint8

FRAME = 128  # grey between tiles: it reads as a frame on light and dark pages alike


def make_grid(
    images: torch.Tensor,
    nrow: int | None = None,
    scale: int = 1,
    padding: int = 2,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Image.Image:
    """Tile a (B, C, H, W) batch into one image, ``nrow`` per row, upscaled ``scale``× with nearest neighbours."""
    pixels = to_uint8(images, value_range).cpu().permute(0, 2, 3, 1).numpy()
    b, h, w, c = pixels.shape
    nrow = nrow or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / nrow))
    canvas = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), FRAME, np.uint8)
    for i, p in enumerate(pixels):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y : y + h, x : x + w] = p
    grid = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST) if scale > 1 else grid


def save_gif(frames: list[Image.Image], path: str | Path, frame_ms: int = 80, hold_ms: int = 1500) -> Path:
    """Write an endlessly looping GIF whose last frame holds for ``hold_ms``."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    durations = [frame_ms] * (len(frames) - 1) + [hold_ms]
    # grayscale frames stay "L": PIL then skips building a palette per frame (5x faster than RGB)
    mode = "L" if all(f.mode == "L" for f in frames) else "RGB"
    frames = [f.convert(mode) for f in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False)
    return Path(path)


def denoising_frames(trajectory, nrow: int | None = None, scale: int = 4) -> list[Image.Image]:
    """One frame per captured step: the grid of x_t on the left, the grid of predicted x̂_0 on the right."""
    frames = []
    for x_t, x0 in zip(trajectory.x_t, trajectory.pred_x0):
        left = make_grid(x_t, nrow, scale, value_range=(-1, 1))
        right = make_grid(x0, nrow, scale, value_range=(-1, 1))
        gap = FRAME if left.mode == "L" else (FRAME,) * 3
        frame = Image.new(left.mode, (left.width * 2 + 8 * scale, left.height), gap)
        frame.paste(left, (0, 0))
        frame.paste(right, (left.width + 8 * scale, 0))
        frames.append(frame)
    return frames


def forward_frames(scheduler, x0: torch.Tensor, timesteps, seed: int = 0, scale: int = 4) -> list[Image.Image]:
    """Frames of q(x_t | x_0) at ``timesteps`` with one fixed ε, so the image fades into that noise."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    frames = []
    for t in timesteps:
        x_t = scheduler.add_noise(x0, noise, torch.full((x0.shape[0],), int(t)))
        frames.append(make_grid(x_t, scale=scale, value_range=(-1, 1)))
    return frames
