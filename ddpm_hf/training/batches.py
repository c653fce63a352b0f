"""Which images, flips, timesteps and noise each optimizer step trains on: a pure function of (seed, step).

Optimizer step s takes one batch of ``batch_size × processes × accumulation_steps`` images drawn from a generator
seeded with (seed, s); micro-step k of process i takes its slice. So a run resumed at step s takes the same batches
as an uninterrupted one, and 2 processes × batch B/2, or 2 accumulated micro-steps of B/2, see exactly what
1 process × batch B sees. Epoch e visits the examples in the order ``randperm(N)`` seeded by (seed, e).
"""

import functools
from dataclasses import dataclass

import torch

from .. import data as image_data


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's batch is drawn and shared: ``processes × accumulation_steps`` slices of
    ``batch_size`` rows, drawn with ``seed``, flipped when ``random_flip``, timesteps in [0, T)."""

    batch_size: int
    seed: int = 0
    random_flip: bool = False
    T: int = 1000
    num_processes: int = 1
    accumulation_steps: int = 1
    label_dropout: float = 0.0  # of a class-conditional run: the share of labels replaced by ∅

    @property
    def step_batch(self) -> int:
        return self.batch_size * self.num_processes * self.accumulation_steps


@functools.lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits the n examples."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def step_batch(
    data: torch.Tensor, step: int, plan: BatchPlan, labels: torch.Tensor | None = None, null: int = 0
) -> tuple[torch.Tensor, ...]:
    """Optimizer step ``step``'s whole batch: (x_0 in [-1, 1], ε, t), on the CPU; with ``labels`` also y, each
    replaced by ``null`` (∅) with probability ``plan.label_dropout`` (drawn after the rest, so x_0, ε and t are those
    of the unconditional run).

    Epoch e visits the examples in the order ``randperm(N)`` seeded by (seed, e), in whole step batches.
    """
    size = plan.step_batch
    epoch, position = divmod(step, data.shape[0] // size)
    idx = epoch_order(data.shape[0], plan.seed, epoch)[position * size : (position + 1) * size]
    g = torch.Generator().manual_seed(plan.seed * 1_000_003 + 7919 * (step + 1))
    images = image_data.augment(data[idx], plan.random_flip, g)
    timesteps = torch.randint(0, plan.T, (size,), generator=g)
    noise = torch.randn((size, *images.shape[1:]), generator=g)
    batch = (image_data.to_model_range(images), noise, timesteps)
    if labels is None:
        return batch
    dropped = torch.rand(size, generator=g) < plan.label_dropout
    return *batch, torch.where(dropped, null, labels[idx])


def micro_batch(
    data: torch.Tensor,
    step: int,
    micro: int,
    process: int,
    plan: BatchPlan,
    labels: torch.Tensor | None = None,
    null: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Process ``process``'s share of micro-step ``micro`` of optimizer step ``step``: rows [j·B, (j+1)·B) of the
    step batch with j = micro · processes + process, so the shares in (micro, process) order are the step batch."""
    lo = (micro * plan.num_processes + process) * plan.batch_size
    return tuple(v[lo : lo + plan.batch_size] for v in step_batch(data, step, plan, labels, null))
