"""The state of one training run, one typed object that checkpointing, export and evaluation take as their argument.

``ddpm_hf.training.loop.prepare`` builds it; the loop advances ``step``; ``ddpm_hf.training.checkpoints`` saves and restores it;
``ddpm_hf.training.outputs`` exports the pipeline from it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from ..data import ImageDataset
from ..scheduling_ddpm_hf import DDPMHFScheduler
from .batches import BatchPlan
from .config import TrainConfig


@dataclass
class TrainState:
    """A prepared training run.

    Attributes:
        cfg: the settings.
        accelerator: the run's Accelerator (processes, device, precision, trackers).
        data: the training images (uint8, in memory).
        unet: the network as Accelerate prepared it (wrapped for distributed training where there are processes).
        model: the same network unwrapped (what checkpoints, EMA and exports read).
        optimizer: AdamW, prepared by Accelerate.
        lr_scheduler: the diffusers LR schedule.
        ema: the exponential moving average of the weights, or None without ``--use_ema``.
        scheduler: the forward process q(x_t | x_0) that builds the training pairs (T, β schedule, target).
        plan: how each optimizer step's batch is drawn and split.
        max_steps: the optimizer step the run ends at.
        step: the optimizer steps completed so far.
        resume: the checkpoint the run continued from, or None.
        data_digest: sha256 of the training images' bytes (part of what defines the run).
    """

    cfg: TrainConfig
    accelerator: Accelerator
    data: ImageDataset
    unet: torch.nn.Module
    model: UNet2DModel
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMAModel | None
    scheduler: DDPMHFScheduler
    plan: BatchPlan
    max_steps: int
    step: int = 0
    resume: Path | None = None
    data_digest: str = ""

    @property
    def output_dir(self) -> Path:
        """The run's folder: the pipeline, checkpoints, logs and samples."""
        return Path(self.cfg.output_dir)


# What a resumed run may change; every other setting defines the run, and a checkpoint refuses to resume under
# another value. The training data, the UNet and the global batch are compared by what they are (the images' bytes,
# the UNet's configuration, the images per optimizer step), not by the flags that chose them, so a moved image folder
# or 2 processes × batch 32 in place of 1 × 64 still resume exactly (``ddpm_hf.training.batches``). The learning rate, its
# schedule and AdamW's settings define the run too: a checkpoint restores them, so a new value would be ignored.
MAY_CHANGE = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "max_train_steps",
        "num_epochs",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "save_images_steps",
        "eval_steps",
        "eval_num_samples",
        "eval_inference_steps",
        "eval_classifier",
        "ddpm_num_inference_steps",
        "logger",
        "max_grad_norm",
        "cpu",
        "pretrained_model_name_or_path",
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "hub_private_repo",
    }
)
# Settings compared through what they produce (the key in the run definition, and how a message names it).
COMPARED_AS = {
    "dataset": "data",
    "train_data_dir": "data",
    "dataset_name": "data",
    "image_column": "data",
    "model_preset": "unet",
    "model_config": "unet",
    "train_batch_size": "images_per_step",
    "gradient_accumulation_steps": "images_per_step",
}
_DESCRIBED = {
    "data": "the training data (--dataset / --train_data_dir / --dataset_name)",
    "unet": "the UNet (--model_preset / --model_config)",
    "images_per_step": "the global batch (--train_batch_size × processes × --gradient_accumulation_steps)",
}


def run_definition(state: TrainState) -> dict:
    """What defines ``state``'s run, as JSON values: written into every checkpoint, compared on resume."""
    cfg = state.cfg
    settings = {k: v for k, v in vars(cfg).items() if k not in MAY_CHANGE | COMPARED_AS.keys()}
    unet = {k: v for k, v in state.model.config.items() if not k.startswith("_")}
    definition = {
        **settings,
        "data": {"name": state.data.name, "images": int(state.data.images.shape[0]), "sha256": state.data_digest},
        "unet": unet,
        "images_per_step": state.plan.step_batch,
        "train_batch_size": cfg.train_batch_size,
        "num_processes": state.plan.num_processes,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
    }
    return json.loads(json.dumps(definition))  # tuples as lists, as they come back from the file


def check_resume(saved: dict | None, state: TrainState, checkpoint: Path) -> None:
    """Refuse to resume ``checkpoint`` (whose run definition is ``saved``) under settings that define another run.

    Args:
        saved: the checkpoint's run definition; None for a checkpoint written before definitions were stored, which
            resumes with a warning that its settings could not be checked.
        state: the run about to resume.
        checkpoint: the checkpoint folder (named in the messages).

    Raises:
        ValueError: one line naming every setting that differs, its value now and the checkpoint's.
    """
    if saved is None:
        warnings.warn(
            f"{checkpoint.name} does not record the settings of its run (it was written by an older version), so "
            "they could not be checked: resume with the same flags the run started with",
            stacklevel=2,
        )
        return
    current = run_definition(state)
    compared = {"images_per_step"} | {k for k in current if k not in COMPARED_AS}
    problems = []
    for key in sorted(compared & saved.keys()):
        if saved[key] == current[key]:
            continue
        if key == "unet":
            before, now = saved[key], current[key]
            keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            problems.append(f"{_DESCRIBED[key]} differs from the checkpoint's in {', '.join(keys)}")
        elif key == "data":
            problems.append(f"{_DESCRIBED[key]} is {_data(current[key])}, the checkpoint's {_data(saved[key])}")
        elif key == "images_per_step":
            now, then = (_batch(d) for d in (current, saved))
            problems.append(f"{_DESCRIBED[key]} is {now}, the checkpoint's {then}")
        else:
            problems.append(f"--{key} is {current[key]!r}, the checkpoint's {saved[key]!r}")
    if problems:
        free = ", ".join(f"--{k}" for k in sorted(MAY_CHANGE - {"hub_token", "output_dir", "resume_from_checkpoint"}))
        raise ValueError(
            f"{checkpoint.name} belongs to another run: {'; '.join(problems)} (a resumed run may change only {free})"
        )


def _data(value: dict) -> str:
    return f"{value['name']} ({value['images']} images, sha256 {value['sha256'][:12]}…)"


def _batch(definition: dict) -> str:
    factors = (definition.get(k, "?") for k in ("train_batch_size", "num_processes", "gradient_accumulation_steps"))
    return f"{definition['images_per_step']} ({' × '.join(map(str, factors))})"
