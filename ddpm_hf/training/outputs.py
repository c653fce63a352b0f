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

from ..hub import SAMPLE_GRID, TRAINING_INFO, card_recipe, push_to_hub, write_model_card
from ..pictures import make_grid
from ..pipeline_io import save_pipeline
from ..sampling import sample
from .state import TrainState


def inference_unet(unet: UNet2DModel, ema) -> UNet2DModel:
    """A float32 eval copy of the model, with the EMA weights when EMA is on (what samples and the saved model use)."""
    copy = UNet2DModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    if ema is not None:
        ema.copy_to(copy.parameters())
    return copy.float().eval().to(unet.device)


def save_outputs(state: TrainState) -> UNet2DModel:
    """Write the pipeline folder (EMA weights when EMA is on) into the run's folder; return the exported model."""
    model = inference_unet(state.model, state.ema)
    cfg, names = state.cfg, state.data.class_names
    extra = {"class_names": list(names), "guidance_scale": cfg.guidance_scale} if cfg.class_conditional else {}
    save_pipeline(model.cpu(), state.scheduler, state.output_dir, **extra)
    return model


def save_sample_grid(state: TrainState, path: Path, model: UNet2DModel | None = None) -> Path:
    """Sample 16 images with seed 0 (from ``model``, else the run's inference weights) into a 4×4 PNG grid; a
    class-conditional run's image i is of class i mod K, at its ``--guidance_scale``."""
    model = model or inference_unet(state.model, state.ema)
    cfg = state.cfg
    guide = {}
    if cfg.class_conditional:
        guide = {
            "class_labels": [i % len(state.data.class_names) for i in range(16)],
            "guidance_scale": cfg.guidance_scale,
        }
    steps = cfg.ddpm_num_inference_steps
    result = sample(model, state.scheduler, 16, seed=0, num_inference_steps=steps, output_type="pt", **guide)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(result.images, nrow=4).save(path)
    return path


def hardware(accelerator) -> str:
    """The machine in words, e.g. "1 × NVIDIA H200" or "CPU, 2 cores (x86_64)"."""
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} × {torch.cuda.get_device_name(accelerator.device)}"
    return f"CPU, {os.cpu_count()} cores ({platform.machine()}), {accelerator.num_processes} process(es)"


def summary_lines(state: TrainState) -> list[str]:
    """The run at a glance, printed once at the start (as diffusers' training scripts do)."""
    cfg, acc, plan, max_steps = state.cfg, state.accelerator, state.plan, state.max_steps
    n, c, h, w = state.data.images.shape
    return [
        "***** Running training *****",
        f"  dataset = {state.data.name} ({n} images of {c}x{h}x{w})",
        f"  processes = {acc.num_processes} ({acc.distributed_type}), device = {acc.device}",
        (
            f"  batch per device = {plan.batch_size}, gradient accumulation steps = {plan.accumulation_steps}, "
            f"global batch = {plan.step_batch}"
        ),
        (
            f"  optimizer steps = {max_steps} ({max_steps * plan.step_batch} images, "
            f"{max_steps * plan.step_batch / n:.2f} epochs)"
        ),
        (
            f"  mixed precision = {cfg.mixed_precision}, prediction type = {cfg.prediction_type}, "
            f"min-SNR-γ = {cfg.snr_gamma}, EMA = {cfg.use_ema}"
        ),
        f"  resuming from {state.resume} at step {state.step}" if state.resume else "  starting at step 0",
    ]


def finish(state: TrainState, measured: dict) -> None:
    """The end of a run: export the pipeline, the sample grid, ``training_info.json``, the card; push if asked."""
    cfg, out = state.cfg, state.output_dir
    model = save_outputs(state)
    grid = save_sample_grid(state, out / SAMPLE_GRID, model)
    info = {
        "recipe": card_recipe(dataclasses.asdict(cfg)),
        "dataset": state.data.name,
        "dataset_id": cfg.dataset_name,
        "license": state.data.license,
        "run": {**measured, "hardware": hardware(state.accelerator)},
    }
    if cfg.class_conditional:
        names = list(state.data.class_names)
        info["conditioning"] = {
            "class_names": names,
            "label_dropout": cfg.label_dropout,
            "guidance_scale": cfg.guidance_scale,
        }
    (out / TRAINING_INFO).write_text(json.dumps(info, indent=2) + "\n")
    write_model_card(out, info, repo_id=cfg.hub_model_id, grid=grid.name)
    if cfg.push_to_hub:
        push_to_hub(out, cfg.hub_model_id, token=cfg.hub_token, private=cfg.hub_private_repo)
    rate = measured["images_seen"] / max(measured["seconds"], 1e-9)
    state.accelerator.print(f"trained {state.step} steps in {measured['seconds']:.0f} s ({rate:.1f} img/s) → {out}")


def log_image(state: TrainState, tag: str, path: Path) -> None:
    """Put a PNG into TensorBoard beside the loss (when logging to it)."""
    if state.cfg.logger == "tensorboard":
        pixels = np.array(Image.open(path).convert("RGB"))
        state.accelerator.get_tracker("tensorboard").log_images({tag: pixels}, step=state.step, dataformats="HWC")
