"""What a training run writes besides checkpoints: the pipeline folder (EMA weights when EMA is on), sample grids,
the run summary printed at the start, and at the end the model card, ``training_info.json`` and the Hub push."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from PIL import Image

from .hub import SAMPLE_GRID, TRAINING_INFO, card_recipe, push_to_hub, write_model_card
from .pictures import make_grid
from .pipeline_io import save_pipeline
from .sampling import sample


def inference_unet(unet: UNet2DModel, ema) -> UNet2DModel:
    """A float32 eval copy of the model, with the EMA weights when EMA is on (what samples and the saved model use)."""
    copy = UNet2DModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    if ema is not None:
        ema.copy_to(copy.parameters())
    return copy.float().eval().to(unet.device)


def save_outputs(r, out: Path) -> UNet2DModel:
    """Write the pipeline folder (EMA weights when EMA is on) into ``out``; return the exported model."""
    model = inference_unet(r.parts["model"], r.parts["ema"])
    save_pipeline(model.cpu(), r.scheduler, out)
    return model


def save_sample_grid(r, path: Path, model: UNet2DModel | None = None) -> Path:
    """Sample 16 images with seed 0 (from ``model``, else the run's inference weights) into a 4×4 PNG grid."""
    model = model or inference_unet(r.parts["model"], r.parts["ema"])
    steps = r.cfg.ddpm_num_inference_steps
    result = sample(model, r.scheduler, 16, seed=0, num_inference_steps=steps, output_type="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(result.images, nrow=4).save(path)
    return path


def hardware(accelerator) -> str:
    """The machine in words, e.g. "1 × NVIDIA H200" or "CPU, 2 cores (x86_64)"."""
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} × {torch.cuda.get_device_name(accelerator.device)}"
    return f"CPU, {os.cpu_count()} cores ({platform.machine()}), {accelerator.num_processes} process(es)"


def summary_lines(r) -> list[str]:
    """The run at a glance, printed once at the start (as diffusers' training scripts do)."""
    cfg, acc, plan = r.cfg, r.accelerator, r.plan
    n, c, h, w = r.data.images.shape
    return [
        "***** Running training *****",
        f"  dataset = {r.data.name} ({n} images of {c}x{h}x{w})",
        f"  processes = {acc.num_processes} ({acc.distributed_type}), device = {acc.device}",
        (
            f"  batch per device = {plan.batch_size}, gradient accumulation steps = {plan.accumulation_steps}, "
            f"global batch = {plan.step_batch}"
        ),
        (
            f"  optimizer steps = {r.max_steps} ({r.max_steps * plan.step_batch} images, "
            f"{r.max_steps * plan.step_batch / n:.2f} epochs)"
        ),
        (
            f"  mixed precision = {cfg.mixed_precision}, prediction type = {cfg.prediction_type}, "
            f"min-SNR-γ = {cfg.snr_gamma}, EMA = {cfg.use_ema}"
        ),
        f"  resuming from {r.resume} at step {r.step}" if r.resume else "  starting at step 0",
    ]


def finish(r, out: Path, measured: dict) -> None:
    """The end of a run: export the pipeline, the sample grid, ``training_info.json``, the card; push if asked."""
    model = save_outputs(r, out)
    grid = save_sample_grid(r, out / SAMPLE_GRID, model)
    cfg = r.cfg
    info = {
        "recipe": card_recipe(dataclasses.asdict(cfg)),
        "dataset": r.data.name,
        "dataset_id": cfg.dataset_name,
        "license": r.data.license,
        "run": {**measured, "hardware": hardware(r.accelerator)},
    }
    (out / TRAINING_INFO).write_text(json.dumps(info, indent=2) + "\n")
    write_model_card(out, info, repo_id=cfg.hub_model_id, grid=grid.name)
    if cfg.push_to_hub:
        push_to_hub(out, cfg.hub_model_id, token=cfg.hub_token, private=cfg.hub_private_repo)
    rate = measured["images_seen"] / max(measured["seconds"], 1e-9)
    r.accelerator.print(f"trained {r.step} steps in {measured['seconds']:.0f} s ({rate:.1f} img/s) → {out}")


def log_image(r, tag: str, path: Path) -> None:
    """Put a PNG into TensorBoard beside the loss (when logging to it)."""
    if r.cfg.logger == "tensorboard":
        pixels = np.array(Image.open(path).convert("RGB"))
        r.accelerator.get_tracker("tensorboard").log_images({tag: pixels}, step=r.step, dataformats="HWC")
