"""Training ε_θ with L_simple (Ho et al. 2020, Algorithm 1, eq. 14) under Accelerate, from one CPU to many GPUs.

Determinism is by construction, not by saved RNG state: micro-batch m of the run takes the examples, flips, timesteps
and noise drawn from a generator seeded with (seed, m) for the whole global batch, and each process takes its slice.
So a run resumed at step k takes the same batches as an uninterrupted one, and 2 processes × batch B/2 see exactly
what 1 process × batch B sees.
"""

import dataclasses
import functools
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
from diffusers.training_utils import EMAModel
from huggingface_hub import get_token
from tqdm.auto import tqdm

from . import data as image_data
from .checkpointing import load_checkpoint, remove_leftovers, resolve_checkpoint, save_checkpoint
from .hub import push_to_hub, write_model_card
from .models import build_unet
from .pictures import make_grid
from .pipeline_io import save_pipeline
from .sampling import sample
from .scheduling_ddpm_hf import DDPMHFScheduler

LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


@dataclass
class TrainConfig:
    """Every training setting; ``train_accelerate.py``'s flags have these names (diffusers' where they exist)."""

    dataset: str | None = "mnist"
    train_data_dir: str | None = None
    dataset_name: str | None = None
    resolution: int = 28
    random_flip: bool = False
    output_dir: str = "ddpm-mnist"
    overwrite_output_dir: bool = False
    train_batch_size: int = 64
    max_train_steps: int | None = None
    num_epochs: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 500
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-6
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    use_ema: bool = False
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    prediction_type: str = "epsilon"
    ddpm_num_steps: int = 1000
    ddpm_beta_schedule: str = "linear"
    ddpm_num_inference_steps: int = 1000
    model_preset: str = "small"
    model_config: str | None = None
    pretrained_model_name_or_path: str | None = None
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    save_images_steps: int | None = None
    logger: str = "none"
    seed: int = 0
    cpu: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = dataclasses.field(default=None, repr=False)
    hub_private_repo: bool = False


def load_training_data(cfg: TrainConfig) -> image_data.ImageDataset:
    """The training images, from exactly one of --train_data_dir, --dataset_name or --dataset."""
    if cfg.train_data_dir:
        return image_data.load_image_folder(cfg.train_data_dir, cfg.resolution)
    if cfg.dataset_name:
        return image_data.load_hub_dataset(cfg.dataset_name, cfg.resolution)
    data = image_data.load_dataset(cfg.dataset, "train")
    if data.images.shape[-1] != cfg.resolution:
        data = dataclasses.replace(data, images=resize_uint8(data.images, cfg.resolution))
    return data


def resize_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of a uint8 (N, C, H, W) batch."""
    size = (resolution, resolution)
    x = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def check_config(cfg: TrainConfig) -> None:
    """Refuse bad settings before anything is written."""
    sources = [bool(cfg.train_data_dir), bool(cfg.dataset_name)]
    if sum(sources) > 1:
        raise ValueError("give at most one of --train_data_dir and --dataset_name")
    if not any(sources) and cfg.dataset not in ("mnist", "fashion-mnist"):
        raise ValueError(f"--dataset {cfg.dataset!r} is unknown; choose mnist or fashion-mnist")
    for key in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "ddpm_num_steps",
                "max_train_steps", "num_epochs"):  # fmt: skip
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise ValueError(f"--{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.checkpoints_total_limit is not None and cfg.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be >= 1, got {cfg.checkpoints_total_limit}")
    if cfg.max_train_steps is None and cfg.num_epochs is None:
        raise ValueError("give --max_train_steps or --num_epochs")
    if cfg.lr_scheduler not in LR_SCHEDULES:
        raise ValueError(f"--lr_scheduler {cfg.lr_scheduler!r}: choose one of {', '.join(LR_SCHEDULES)}")
    if cfg.mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"--mixed_precision {cfg.mixed_precision!r}: choose no, fp16 or bf16")
    if cfg.logger not in ("none", "tensorboard"):
        raise ValueError(f"--logger {cfg.logger!r}: choose none or tensorboard")
    if cfg.push_to_hub and not cfg.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id")
    if cfg.push_to_hub and not (cfg.hub_token or get_token()):
        raise ValueError("--push_to_hub needs a token: --hub_token, the HF_TOKEN variable or `hf auth login`")
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (cfg.overwrite_output_dir or cfg.resume_from_checkpoint):
        raise ValueError(f"--output_dir {out} holds a run; pass --overwrite_output_dir or --resume_from_checkpoint")


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


@functools.lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits the n examples."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def micro_batch(data: torch.Tensor, micro_step: int, global_batch: int, seed: int, random_flip: bool, T: int):
    """Micro-batch ``micro_step`` of the run for the whole global batch: (x_0 in [-1, 1], ε, t), on the CPU.

    Epoch e visits the examples in the order ``randperm(N)`` seeded by (seed, e), in whole global batches.
    """
    per_epoch = data.shape[0] // global_batch
    epoch, position = divmod(micro_step, per_epoch)
    order = epoch_order(data.shape[0], seed, epoch)
    idx = order[position * global_batch : (position + 1) * global_batch]
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (micro_step + 1))
    images = image_data.augment(data[idx], random_flip, g)
    timesteps = torch.randint(0, T, (global_batch,), generator=g)
    noise = torch.randn((global_batch, *images.shape[1:]), generator=g)
    return image_data.to_model_range(images), noise, timesteps


def local_batch(data: torch.Tensor, micro_step: int, batch_size: int, num_processes: int, process_index: int,
                seed: int, random_flip: bool, T: int) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """This process's share of micro-batch ``micro_step``: rows [i·B, (i+1)·B) of the global batch of n·B rows.

    So the n processes' shares, concatenated in process order, are the global batch that one process would take.
    """
    batch = micro_batch(data, micro_step, batch_size * num_processes, seed, random_flip, T)
    lo = process_index * batch_size
    return tuple(v[lo : lo + batch_size] for v in batch)


def diffusion_loss(unet, scheduler: DDPMHFScheduler, x0, noise, timesteps) -> torch.Tensor:
    """L_simple = E‖target − model(x_t, t)‖² with x_t ~ q(x_t | x_0) (eq. 14); the target is ε, x_0 or v."""
    x_t = scheduler.add_noise(x0, noise, timesteps)
    prediction = unet(x_t, timesteps).sample
    kind = scheduler.config.prediction_type
    target = {"epsilon": noise, "sample": x0}.get(kind)
    if target is None:
        target = scheduler.get_velocity(x0, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float())


def init_unet(cfg: TrainConfig, channels: int) -> UNet2DModel:
    """The UNet to train: a pipeline folder's UNet (warm start), or fresh weights that depend only on ``cfg.seed``."""
    if cfg.pretrained_model_name_or_path:
        try:
            unet = UNet2DModel.from_pretrained(cfg.pretrained_model_name_or_path, subfolder="unet", use_safetensors=True)
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


def optimizer_step(accelerator: Accelerator, unet, optimizer, scheduler: DDPMHFScheduler, images: torch.Tensor,
                   step: int, cfg: TrainConfig) -> torch.Tensor:  # fmt: skip
    """One optimizer step: ``gradient_accumulation_steps`` micro-batches of L_simple; returns the last loss."""
    for k in range(cfg.gradient_accumulation_steps):
        m = step * cfg.gradient_accumulation_steps + k
        batch = local_batch(images, m, cfg.train_batch_size, accelerator.num_processes, accelerator.process_index,
                            cfg.seed, cfg.random_flip, cfg.ddpm_num_steps)  # fmt: skip
        x0, noise, t = (v.to(accelerator.device) for v in batch)
        with accelerator.accumulate(unet):
            loss = diffusion_loss(unet, scheduler, x0, noise, t)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def train(cfg: TrainConfig) -> Path:
    """Train, checkpoint, save the pipeline folder (and push it); returns the output folder."""
    check_config(cfg)
    data = load_training_data(cfg)
    out = Path(cfg.output_dir)
    unet = init_unet(cfg, data.images.shape[1])
    scheduler = DDPMHFScheduler(
        num_train_timesteps=cfg.ddpm_num_steps,
        beta_schedule=cfg.ddpm_beta_schedule,
        prediction_type=cfg.prediction_type,
    )
    resume = resolve_checkpoint(out, cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    accelerator = make_accelerator(cfg)
    global_batch, n_images = cfg.train_batch_size * accelerator.num_processes, data.images.shape[0]
    if n_images < global_batch:
        raise ValueError(f"the dataset has {n_images} images, fewer than one global batch ({global_batch})")
    steps_per_epoch = n_images // global_batch // cfg.gradient_accumulation_steps
    max_steps = cfg.max_train_steps if cfg.max_train_steps is not None else cfg.num_epochs * steps_per_epoch
    if max_steps < 1:
        raise ValueError(f"--num_epochs {cfg.num_epochs} of {steps_per_epoch} steps each is no training at all")

    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon,
    )  # fmt: skip
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=max_steps
    )
    ema = None
    if cfg.use_ema:
        ema = EMAModel(
            unet.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, inv_gamma=cfg.ema_inv_gamma,
            power=cfg.ema_power, model_cls=UNet2DModel, model_config=unet.config,
        )  # fmt: skip
    unet, optimizer = accelerator.prepare(unet, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    step = load_checkpoint(accelerator, resume, lr_scheduler, ema) if resume else 0
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out, checkpoints=resume is None)
        if cfg.logger != "none":
            accelerator.init_trackers("ddpm-hf", config=_loggable(cfg))
    images = data.images.to(accelerator.device)
    progress = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    started, start_step = time.perf_counter(), step
    unet.train()
    while step < max_steps:
        loss = optimizer_step(accelerator, unet, optimizer, scheduler, images, step, cfg)
        lr_scheduler.step()
        if ema is not None:
            ema.step(accelerator.unwrap_model(unet).parameters())
        step += 1
        logs = {"loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0]}
        progress.update(1)
        progress.set_postfix(**{k: f"{v:.3g}" for k, v in logs.items()})
        accelerator.log(logs, step=step)
        if step % cfg.checkpointing_steps == 0 or step == max_steps:
            save_checkpoint(accelerator, out, step, lr_scheduler, ema, cfg.checkpoints_total_limit)
            if accelerator.is_main_process and step < max_steps:  # the last step's export follows the loop
                export_pipeline(accelerator.unwrap_model(unet), ema, scheduler, out)
        if cfg.save_images_steps and step % cfg.save_images_steps == 0 and accelerator.is_main_process:
            save_sample_grid(accelerator.unwrap_model(unet), ema, scheduler, out / "samples" / f"step-{step}.png", cfg)
    progress.close()
    seconds = time.perf_counter() - started
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        images_seen = (step - start_step) * global_batch * cfg.gradient_accumulation_steps
        rate = round(images_seen / max(seconds, 1e-9), 1)
        summary = {"steps": step, "seconds": round(seconds, 1), "images_per_second": rate}

        final_unet = export_pipeline(accelerator.unwrap_model(unet), ema, scheduler, out)
        grid = save_sample_grid(final_unet, None, scheduler, out / "samples.png", cfg)
        write_model_card(out, cfg, data, summary, grid.name)
        if cfg.push_to_hub:
            push_to_hub(out, cfg.hub_model_id, token=cfg.hub_token, private=cfg.hub_private_repo)
        accelerator.print(f"trained {step} steps in {seconds:.0f} s ({summary['images_per_second']} img/s) → {out}")
    accelerator.end_training()
    return out


def inference_unet(unet: UNet2DModel, ema: EMAModel | None) -> UNet2DModel:
    """A float32 eval copy of the model, with the EMA weights when EMA is on (what samples and the saved model use)."""
    copy = UNet2DModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    if ema is not None:
        ema.copy_to(copy.parameters())
    return copy.float().eval().to(unet.device)


def export_pipeline(unet, ema, scheduler: DDPMHFScheduler, out: Path) -> UNet2DModel:
    """Write the pipeline folder (EMA weights when EMA is on) into ``out``; return the exported model."""
    model = inference_unet(unet, ema)
    save_pipeline(model.cpu(), scheduler, out)
    return model


def save_sample_grid(unet, ema, scheduler: DDPMHFScheduler, path: Path, cfg: TrainConfig) -> Path:
    """Sample 16 images with seed 0 and save them as a 4×4 PNG grid."""
    model = inference_unet(unet, ema)
    result = sample(model, scheduler, 16, seed=0, num_inference_steps=cfg.ddpm_num_inference_steps, output_type="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(result.images, nrow=4).save(path)
    return path


def _loggable(cfg: TrainConfig) -> dict:
    """The settings the tracker records: scalars only, never the Hub token."""
    settings = dataclasses.asdict(cfg).items()
    return {k: v for k, v in settings if k != "hub_token" and isinstance(v, (int, float, str, bool))}
