"""Training ε_θ with L_simple (Ho et al. 2020, Algorithm 1, eq. 14) under Accelerate, from one CPU to many GPUs.

Determinism is by construction, not by saved RNG state: each optimizer step's batch is a pure function of (seed,
step) (``ddpm_hf.batches``), so a resumed run, several processes and accumulated micro-steps all see what one
uninterrupted process sees.

``prepare`` checks the settings, loads the data and restores a checkpoint (every input error surfaces there, before
anything is written); ``run`` trains; ``train`` does both.
"""

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm.auto import tqdm

from . import data as image_data
from .batches import BatchPlan, micro_batch
from .checkpointing import load_checkpoint, remove_leftovers, resolve_checkpoint, save_checkpoint
from .models import build_unet
from .scheduling_ddpm_hf import DDPMHFScheduler
from .train_config import TrainConfig, check_config
from .train_outputs import finish, log_image, save_outputs, save_sample_grid, summary_lines

__all__ = ["BatchPlan", "TrainConfig", "diffusion_loss", "prepare", "run", "train"]


def diffusion_loss(unet, scheduler: DDPMHFScheduler, x0, noise, timesteps, *, snr_gamma: float | None = None):
    """L_simple = E‖target − model(x_t, t)‖² with x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Ho et al. 2020, eq. 14).

    The target is ε ("epsilon"), x_0 ("sample") or v = √ᾱ_t ε − √(1−ᾱ_t) x_0 ("v_prediction", Salimans & Ho 2022).
    With ``snr_gamma`` each image's error is weighted by min-SNR-γ (Hang et al. 2023), SNR_t = ᾱ_t / (1−ᾱ_t):
    min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v and min(SNR, γ) for x_0, which equals weighting every
    target's error as an x_0 error by min(SNR, γ).
    """
    x_t = scheduler.add_noise(x0, noise, timesteps)
    prediction = unet(x_t, timesteps).sample
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "sample":
        target = x0
    else:
        target = scheduler.get_velocity(x0, noise, timesteps)
    if snr_gamma is None:
        return F.mse_loss(prediction.float(), target.float())
    snr = compute_snr(scheduler, timesteps)
    clipped = snr.clamp(max=snr_gamma)
    weight = {"epsilon": clipped / snr, "sample": clipped}.get(kind, clipped / (snr + 1))
    per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_image * weight).mean()


def init_unet(cfg: TrainConfig, channels: int) -> UNet2DModel:
    """The UNet to train: a pipeline folder's UNet (warm start), or fresh weights that depend only on ``cfg.seed``."""
    if cfg.pretrained_model_name_or_path:
        try:
            unet = UNet2DModel.from_pretrained(
                cfg.pretrained_model_name_or_path, subfolder="unet", use_safetensors=True
            )
        except (OSError, ValueError) as e:
            raise ValueError(f"--pretrained_model_name_or_path: no UNet to start from ({e})") from None
        if unet.config.in_channels != channels or unet.config.sample_size != cfg.resolution:
            raise ValueError(
                f"--pretrained_model_name_or_path takes {unet.config.in_channels}-channel {unet.config.sample_size}px"
                f" images; the data has {channels} channels at --resolution {cfg.resolution}"
            )
        return unet.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_unet(cfg.model_preset, cfg.resolution, channels, cfg.model_config)


def load_training_data(cfg: TrainConfig) -> image_data.ImageDataset:
    """The training images, from exactly one of --train_data_dir, --dataset_name or --dataset."""
    if cfg.train_data_dir:
        return image_data.load_image_folder(cfg.train_data_dir, cfg.resolution)
    if cfg.dataset_name:
        return image_data.load_hub_dataset(cfg.dataset_name, cfg.resolution, image_column=cfg.image_column)
    data = image_data.load_dataset(cfg.dataset, "train")
    if data.images.shape[-1] != cfg.resolution:
        data = dataclasses.replace(data, images=image_data.resize_images(data.images, cfg.resolution))
    return data


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The Accelerator; refuses a launch whose processes do not form one process group."""
    accelerator = Accelerator(
        cpu=cfg.cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=None if cfg.logger == "none" else cfg.logger,
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir, "logs"))),
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != accelerator.num_processes or (world > 1 and accelerator.distributed_type == DistributedType.NO):
        raise ValueError(
            f"{world} processes were launched but Accelerate sees {accelerator.num_processes} "
            f"({accelerator.distributed_type}), so each would train alone; on CPU pass --cpu (or ACCELERATE_USE_CPU=1)"
        )
    return accelerator


@dataclass
class Run:
    """A prepared run: everything ``run`` needs, built and validated by ``prepare``."""

    cfg: TrainConfig
    accelerator: Accelerator
    data: image_data.ImageDataset
    unet: torch.nn.Module
    optimizer: torch.optim.Optimizer
    parts: dict  # lr_scheduler, ema, model: what a checkpoint holds besides accelerate's state
    scheduler: DDPMHFScheduler
    plan: BatchPlan
    step: int
    max_steps: int
    resume: Path | None


def prepare(cfg: TrainConfig) -> Run:
    """Check the settings, load the data, build the model and restore a checkpoint; raises ``ValueError`` on bad
    input before anything is written."""
    check_config(cfg)
    data = load_training_data(cfg)
    unet = init_unet(cfg, data.images.shape[1])
    scheduler = DDPMHFScheduler(
        num_train_timesteps=cfg.ddpm_num_steps,
        beta_schedule=cfg.ddpm_beta_schedule,
        prediction_type=cfg.prediction_type,
    )
    out = Path(cfg.output_dir)
    resume = resolve_checkpoint(out, cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    accelerator = make_accelerator(cfg)
    plan = BatchPlan(
        cfg.train_batch_size,
        cfg.seed,
        cfg.random_flip,
        cfg.ddpm_num_steps,
        accelerator.num_processes,
        cfg.gradient_accumulation_steps,
    )
    steps_per_epoch = data.images.shape[0] // plan.step_batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"the dataset has {data.images.shape[0]} images, fewer than one global batch ({plan.step_batch})"
        )
    max_steps = cfg.max_train_steps if cfg.max_train_steps is not None else cfg.num_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=max_steps
    )
    ema = None
    if cfg.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=cfg.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=cfg.ema_inv_gamma,
            power=cfg.ema_power,
            model_cls=UNet2DModel,
            model_config=unet.config,
        )
    unet, optimizer = accelerator.prepare(unet, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    parts = {"lr_scheduler": lr_scheduler, "ema": ema, "model": accelerator.unwrap_model(unet)}
    step = load_checkpoint(accelerator, resume, parts) if resume else 0
    return Run(cfg, accelerator, data, unet, optimizer, parts, scheduler, plan, step, max_steps, resume)


def optimizer_step(r: Run, images: torch.Tensor) -> torch.Tensor:
    """One optimizer step of ``gradient_accumulation_steps`` micro-batches; returns the mean loss."""
    losses = []
    for k in range(r.plan.accumulation_steps):
        batch = micro_batch(images, r.step, k, r.accelerator.process_index, r.plan)
        x0, noise, t = (v.to(r.accelerator.device) for v in batch)
        with r.accelerator.accumulate(r.unet):
            loss = diffusion_loss(r.unet, r.scheduler, x0, noise, t, snr_gamma=r.cfg.snr_gamma)
            r.accelerator.backward(loss)
            if r.accelerator.sync_gradients and r.cfg.max_grad_norm > 0:
                r.accelerator.clip_grad_norm_(r.unet.parameters(), r.cfg.max_grad_norm)
            r.optimizer.step()
            r.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return torch.stack(losses).mean()


def run(r: Run) -> Path:
    """Train a prepared run, checkpoint, save the pipeline folder and card (and push); returns the output folder."""
    cfg, accelerator, out = r.cfg, r.accelerator, Path(r.cfg.output_dir)
    ema = r.parts["ema"]
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out, checkpoints=r.resume is None)
        if cfg.logger != "none":
            accelerator.init_trackers("ddpm-hf", config=_loggable(cfg))
    accelerator.print("\n".join(summary_lines(r)))
    evaluator = None
    if cfg.eval_steps and accelerator.is_main_process:
        from .train_eval import PeriodicEval  # loads the classifier and test split only when asked

        evaluator = PeriodicEval(cfg.dataset, cfg.eval_num_samples, cfg.eval_inference_steps, out)
    images = r.data.images.to(accelerator.device)
    progress = tqdm(total=r.max_steps, initial=r.step, disable=not accelerator.is_local_main_process, desc="train")
    started, start_step = time.perf_counter(), r.step
    r.unet.train()
    while r.step < r.max_steps:
        loss = optimizer_step(r, images)
        r.parts["lr_scheduler"].step()
        if ema is not None:
            ema.step(r.parts["model"].parameters())
        r.step += 1
        logs = {"loss": loss.item(), "lr": r.parts["lr_scheduler"].get_last_lr()[0]}
        progress.update(1)
        progress.set_postfix(**{k: f"{v:.3g}" for k, v in logs.items()})
        accelerator.log(logs, step=r.step)
        periodic(r, out, evaluator)
    progress.close()
    seconds = time.perf_counter() - started
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        images_seen = (r.step - start_step) * r.plan.step_batch
        finish(r, out, {"steps": r.step, "images_seen": images_seen, "seconds": round(seconds, 1)})
    accelerator.end_training()
    return out


def periodic(r: Run, out: Path, evaluator) -> None:
    """What runs every so many steps: checkpoints and the pipeline export, sample grids, evaluations."""
    cfg, step, main = r.cfg, r.step, r.accelerator.is_main_process
    if step % cfg.checkpointing_steps == 0 or step == r.max_steps:
        save_checkpoint(r.accelerator, out, step, r.parts, cfg.checkpoints_total_limit)
        if main and step < r.max_steps:  # the last step's export follows the loop
            save_outputs(r, out)
    if cfg.save_images_steps and step % cfg.save_images_steps == 0 and main:
        grid = save_sample_grid(r, out / "samples" / f"step-{step}.png")
        log_image(r, "samples", grid)
    if evaluator is not None and step % cfg.eval_steps == 0:
        metrics = evaluator(r.parts["model"], r.parts["ema"], r.scheduler, step)
        r.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)


def train(cfg: TrainConfig) -> Path:
    """Train with ``cfg``: ``run(prepare(cfg))``; returns the output folder."""
    return run(prepare(cfg))


def _loggable(cfg: TrainConfig) -> dict:
    """The settings the tracker records: scalars only, never the Hub token."""
    settings = dataclasses.asdict(cfg).items()
    return {k: v for k, v in settings if k != "hub_token" and isinstance(v, (int, float, str, bool))}
