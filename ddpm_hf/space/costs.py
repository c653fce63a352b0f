"""What a request costs on this machine, measured per model, and the request sized to fit.

A reverse step on n images takes about ``fixed + per_image · n`` seconds (timed once per model when it loads: the
library's ``sample`` at 1 and at 4 images, two steps each, after a warm-up that also makes ``ddpm_hf.speed`` choose).
From that, on a CPU:
- the default request of a model is the largest image count (of ``DEFAULT_COUNTS``) whose default chain ends within
  ``DEFAULT_SECONDS``, with the fast sampler if the paper's chain does not fit;
- no request runs longer than about ``MAX_SECONDS``: one that would is run with fewer steps (or images), and says so.
On a GPU nothing is capped: the paper's 1000-step chain stays available.
"""

import math
import os
import time
from dataclasses import dataclass, replace

from ..sampling import sample
from . import limits

# A Space on faster or paid hardware may allow longer runs: DDPM_HF_MAX_SECONDS / DDPM_HF_DEFAULT_SECONDS.
DEFAULT_SECONDS = float(os.environ.get("DDPM_HF_DEFAULT_SECONDS", "15"))
MAX_SECONDS = float(os.environ.get("DDPM_HF_MAX_SECONDS", "60"))
DEFAULT_COUNTS = (16, 9, 4, 1)
FAST_SAMPLER = "sde-dpm++"


@dataclass(frozen=True)
class Cost:
    """Seconds of one reverse step: ``fixed + per_image · n`` for n images (network forwards counted: a guided step
    on n images runs 2n)."""

    fixed: float
    per_image: float
    device: str = "cpu"

    def step_seconds(self, forwards: int) -> float:
        return self.fixed + self.per_image * forwards

    def seconds(self, forwards: int, steps: int) -> float:
        return self.step_seconds(forwards) * steps

    def after_run(self, forwards: int, steps: int, seconds: float) -> "Cost":
        """This cost, scaled down when a run of ``steps`` steps on ``forwards`` images took less than it predicts: a
        load measured while other work held the cores overstates it, and only real runs can say by how much."""
        ratio = seconds / max(self.seconds(forwards, steps), 1e-9)
        return Cost(self.fixed * ratio, self.per_image * ratio, self.device) if ratio < 1 else self

    @property
    def capped(self) -> bool:
        """Whether requests are sized to the budget (on a CPU; a GPU runs what is asked)."""
        return self.device != "cuda"


def measure(unet, scheduler, steps: int = 2, repeats: int = 2) -> Cost:
    """Time ``steps`` reverse steps at 1 and at 4 images (after one warm-up of each; the best of ``repeats``) and fit
    ``Cost``."""
    seconds = {}
    for n in (1, 4):
        sample(unet, scheduler, n, seed=0, num_inference_steps=1, output_type="pt")  # warm-up and the speed choice
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            sample(unet, scheduler, n, seed=0, num_inference_steps=steps, output_type="pt")
            runs.append((time.perf_counter() - start) / steps)
        seconds[n] = min(runs)
    per_image = max((seconds[4] - seconds[1]) / 3, 0.0)
    return Cost(max(seconds[1] - per_image, 0.0), per_image, unet.device.type)


@dataclass(frozen=True)
class Sized:
    """A request as it will run: images, sampler, steps, and a line saying what was capped and why ("" if nothing)."""

    num_images: int
    sampler: str
    num_inference_steps: int
    note: str = ""


def default_request(cost: Cost | None, guided: bool = False) -> Sized:
    """The Sample tab's starting request for a model of this cost (the app's defaults when the cost is unknown)."""
    plain = Sized(limits.DEFAULT_IMAGES, limits.DEFAULT_SAMPLER, limits.default_steps(limits.DEFAULT_SAMPLER))
    if cost is None or not cost.capped:
        return plain
    for sampler in (limits.DEFAULT_SAMPLER, FAST_SAMPLER):
        steps = limits.default_steps(sampler)
        for n in DEFAULT_COUNTS:
            if cost.seconds(n * (2 if guided else 1), steps) <= DEFAULT_SECONDS:
                return Sized(n, sampler, steps)
    steps = max(1, math.floor(DEFAULT_SECONDS / cost.step_seconds(1)))
    return Sized(1, FAST_SAMPLER, min(steps, limits.default_steps(FAST_SAMPLER)))


def fit(
    cost: Cost | None, num_images: int, sampler: str, steps: int, forwards_per_image: int = 1, shrink_images=True
) -> Sized:
    """The request cut to ``MAX_SECONDS``: fewer images first when even the sampler's fewest sensible steps would not
    fit (unless ``shrink_images`` is False: one row per class stays whole), then fewer steps; with a note saying what
    it was capped to and why."""
    if cost is None or not cost.capped:
        return Sized(num_images, sampler, steps)
    seconds = cost.seconds(num_images * forwards_per_image, steps)
    if seconds <= MAX_SECONDS:
        return Sized(num_images, sampler, steps)
    fewest = min(limits.ENOUGH_STEPS.get(sampler, 1), steps)
    n = num_images
    while shrink_images and n > 1 and cost.seconds(n * forwards_per_image, fewest) > MAX_SECONDS:
        n -= 1
    fitting = math.floor(MAX_SECONDS / cost.step_seconds(n * forwards_per_image))
    new_steps = max(1, min(steps, fitting))
    what = f"{new_steps} steps" + (f" and {n} image{'s' * (n != 1)}" if n != num_images else "")
    note = (
        f"Capped to {what}: {num_images} image{'s' * (num_images != 1)} × {steps} steps would take about "
        f"{seconds:.0f} s on this machine ({cost.step_seconds(num_images * forwards_per_image):.2f} s a step), and a "
        f"run is kept under about {MAX_SECONDS:.0f} s."
    )
    return Sized(n, sampler, new_steps, note)


def fit_chain(
    cost: Cost | None,
    num_images: int,
    sampler: str,
    steps: int,
    start: int | None = None,
    num_train_timesteps: int = 1000,
    forwards_per_image: int = 1,
    shrink_images=True,
) -> Sized:
    """``fit`` for a chain of ``steps`` strided steps that starts at t = ``start`` (SDEdit: only its last
    ``steps · (t + 1) / T`` run; None: all of them), with the step count given back as the chain's own."""
    runs = steps if start is None else max(1, min(steps, math.ceil((start + 1) * steps / num_train_timesteps)))
    sized = fit(cost, num_images, sampler, runs, forwards_per_image, shrink_images)
    if sized.num_inference_steps == runs:
        return replace(sized, num_inference_steps=steps)
    return replace(sized, num_inference_steps=max(1, steps * sized.num_inference_steps // runs))
