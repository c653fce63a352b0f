"""Training ε_θ with L_simple (Ho et al. 2020, Algorithm 1, eq. 14) under Accelerate, from one CPU to many GPUs.

Determinism is by construction, not by saved RNG state: each optimizer step's batch is a pure function of (seed,
step) (``ddpm_hf.training.batches``), so a resumed run, several processes and accumulated micro-steps all see what one
uninterrupted process sees.

``prepare`` checks the settings (Hub access included), loads the data and restores a checkpoint into a ``TrainState``
(every input error surfaces there, before anything is written); ``run`` trains it; ``train`` does both. A step whose
loss or gradient norm is not finite stops the run before anything of it is written (``TrainingDiverged``), so the
last checkpoint and pipeline folder stay those of the last sound step.
"""

import dataclasses
import hashlib
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, broadcast_object_list
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm.auto import tqdm

from .. import data as image_data
from ..guidance import add_class_embedding, forward, is_conditional, null_label, num_classes
from ..hub import check_push_access
from ..models import build_unet
from ..scheduling_ddpm_hf import DDPMHFScheduler
from .batches import BatchPlan, micro_batch
from .checkpoints import list_checkpoints, load_checkpoint, remove_leftovers, resolve_checkpoint, save_checkpoint
from .config import TrainConfig, check_config
from .outputs import finish, log_image, save_outputs, save_sample_grid, summary_lines
from .state import TrainState

__all__ = ["BatchPlan", "TrainConfig", "TrainState", "TrainingDiverged", "diffusion_loss", "prepare", "run", "train"]


def diffusion_loss(
    unet, scheduler: DDPMHFScheduler, x0, noise, timesteps, *, snr_gamma: float | None = None, class_labels=None
):
    """L_simple = E‖target − model(x_t, t)‖² with x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Ho et al. 2020, eq. 14).

    A class-conditional model sees ``class_labels`` (∅ where dropped; all ∅ when None): model(x_t, t, y).

    The target is ε ("epsilon"), x_0 ("sample") or v = √ᾱ_t ε − √(1−ᾱ_t) x_0 ("v_prediction", Salimans & Ho 2022).
    With ``snr_gamma`` each image's error is weighted by min-SNR-γ (Hang et al. 2023), SNR_t = ᾱ_t / (1−ᾱ_t):
    min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v and min(SNR, γ) for x_0, which equals weighting every
    target's error as an x_0 error by min(SNR, γ).
    """
    x_t = scheduler.add_noise(x0, noise, timesteps)
    prediction = forward(unet, x_t, timesteps, class_labels)
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


def init_unet(cfg: TrainConfig, channels: int, classes: int = 0) -> UNet2DModel:
    """The UNet to train: a pipeline folder's UNet (warm start), or fresh weights that depend only on ``cfg.seed``;
    with ``classes`` (a class-conditional run) and a UNet without class embeddings, that UNet with a zero class
    embedding added (``ddpm_hf.guidance.add_class_embedding``), so step 0 computes exactly what it did."""
    unet = _start_unet(cfg, channels)
    if not classes:
        return unet
    if not is_conditional(unet):
        return add_class_embedding(unet, classes).train()
    if num_classes(unet) != classes:
        raise ValueError(f"--pretrained_model_name_or_path has {num_classes(unet)} classes; the data has {classes}")
    return unet


def _start_unet(cfg: TrainConfig, channels: int) -> UNet2DModel:
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
        return image_data.load_image_folder(cfg.train_data_dir, cfg.resolution, classes=cfg.class_conditional)
    if cfg.dataset_name:
        return image_data.load_hub_dataset(cfg.dataset_name, cfg.resolution, image_column=cfg.image_column)
    data = image_data.load_dataset(cfg.dataset, "train")
    if data.images.shape[-1] != cfg.resolution:
        data = dataclasses.replace(data, images=image_data.resize_images(data.images, cfg.resolution))
    return data


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The Accelerator; refuses a launch whose processes do not form one process group, and fp16 on a CPU."""
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
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError("--mixed_precision fp16 needs a GPU: on a CPU Accelerate runs it in float32 (use bf16)")
    return accelerator


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm stopped being finite; raised before anything of that step is written."""


def prepare(cfg: TrainConfig) -> TrainState:
    """Check the settings, load the data, build the model, check Hub access and restore a checkpoint; raises
    ``ValueError`` on bad input before anything is written."""
    check_config(cfg)
    data = load_training_data(cfg)
    if cfg.class_conditional and (data.labels is None or data.class_names is None):
        raise ValueError(f"--class_conditional needs labelled data; {data.name} has no class labels")
    classes = len(data.class_names) if cfg.class_conditional else 0
    unet = init_unet(cfg, data.images.shape[1], classes)
    scheduler = DDPMHFScheduler(
        num_train_timesteps=cfg.ddpm_num_steps,
        beta_schedule=cfg.ddpm_beta_schedule,
        prediction_type=cfg.prediction_type,
    )
    out = Path(cfg.output_dir)
    resume = resolve_checkpoint(out, cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    accelerator = make_accelerator(cfg)
    if cfg.push_to_hub:  # one process asks the Hub; every process gets its answer
        problem = [None]
        if accelerator.is_main_process:
            try:
                check_push_access(cfg.hub_model_id, cfg.hub_token, cfg.hub_private_repo)
            except ValueError as e:
                problem = [str(e)]
        problem = broadcast_object_list(problem) if accelerator.num_processes > 1 else problem
        if problem[0]:
            raise ValueError(problem[0])
    plan = BatchPlan(
        cfg.train_batch_size,
        cfg.seed,
        cfg.random_flip,
        cfg.ddpm_num_steps,
        accelerator.num_processes,
        cfg.gradient_accumulation_steps,
        cfg.label_dropout if cfg.class_conditional else 0.0,
    )
    steps_per_epoch = data.images.shape[0] // plan.step_batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"the dataset has {data.images.shape[0]} images, fewer than one global batch ({plan.step_batch})"
        )
    max_steps = cfg.max_train_steps if cfg.max_train_steps is not None else cfg.num_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(
        parameter_groups(unet, cfg),
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
    prepared, optimizer = accelerator.prepare(unet, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    state = TrainState(
        cfg=cfg,
        accelerator=accelerator,
        data=data,
        unet=prepared,
        model=accelerator.unwrap_model(prepared),
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ema=ema,
        scheduler=scheduler,
        plan=plan,
        max_steps=max_steps,
        resume=resume,
        data_digest=_digest(data, cfg.class_conditional),
    )
    if resume:
        state.step = load_checkpoint(state, resume)
    return state


def parameter_groups(unet: UNet2DModel, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: every weight at ``--learning_rate``, the class embedding at ``--class_embedding_lr``
    when one is given (the LR schedule scales both alike)."""
    if cfg.class_embedding_lr is None or not is_conditional(unet):
        return [{"params": list(unet.parameters())}]
    embedding = list(unet.class_embedding.parameters())
    ids = {id(p) for p in embedding}
    rest = [p for p in unet.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": embedding, "lr": cfg.class_embedding_lr}]


def optimizer_step(state: TrainState, images: torch.Tensor) -> torch.Tensor:
    """One optimizer step of ``gradient_accumulation_steps`` micro-batches; returns the mean loss.

    Before the weights change, the step's loss and (after clipping's unscaling) its gradient norm must be finite on
    every process, else ``TrainingDiverged`` is raised on all of them alike. Under fp16 an infinite gradient norm is
    the GradScaler's business (it skips the step and lowers its scale); only the loss is checked there.

    Raises:
        TrainingDiverged: the loss or the gradient norm is NaN or infinite.
    """
    accelerator, cfg, plan = state.accelerator, state.cfg, state.plan
    labels = state.data.labels if cfg.class_conditional else None
    losses = []
    for k in range(plan.accumulation_steps):
        batch = micro_batch(images, state.step, k, accelerator.process_index, plan, labels, null_label(state.model))
        x0, noise, t, *y = (v.to(accelerator.device) for v in batch)
        with accelerator.accumulate(state.unet):
            loss = diffusion_loss(
                state.unet, state.scheduler, x0, noise, t, snr_gamma=cfg.snr_gamma, class_labels=y[0] if y else None
            )
            accelerator.backward(loss)
            losses.append(loss.detach())
            if accelerator.sync_gradients:
                limit = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
                grad_norm = accelerator.clip_grad_norm_(state.unet.parameters(), limit)
                check_finite(state, torch.stack(losses).mean(), grad_norm)
            state.optimizer.step()
            state.optimizer.zero_grad(set_to_none=True)
    return torch.stack(losses).mean()


def check_finite(state: TrainState, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    """Raise ``TrainingDiverged`` on every process when any process's loss or the gradient norm is not finite."""
    checked = [loss] if state.cfg.mixed_precision == "fp16" else [loss, torch.as_tensor(grad_norm, device=loss.device)]
    bad = (~torch.isfinite(torch.stack([v.float() for v in checked]))).any().float()
    if state.accelerator.num_processes > 1:
        bad = state.accelerator.reduce(bad, reduction="sum")
    if bad.item() == 0:
        return
    found = list_checkpoints(state.output_dir)
    kept = f"the last checkpoint is {found[-1]}" if found else "no checkpoint was written"
    raise TrainingDiverged(
        f"step {state.step + 1}: the loss ({loss.item():.4g}) or the gradient norm ({float(grad_norm):.4g}) is not "
        f"finite; training stopped before writing anything of this step ({kept}); try a lower --learning_rate, "
        "--max_grad_norm or --mixed_precision no"
    )


def run(state: TrainState) -> Path:
    """Train a prepared run, checkpoint, save the pipeline folder and card (and push); returns the output folder.

    Raises:
        TrainingDiverged: the loss or gradient norm stopped being finite; the checkpoints and the pipeline folder are
            left as the last sound step wrote them.
    """
    cfg, accelerator, out = state.cfg, state.accelerator, state.output_dir
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out, checkpoints=state.resume is None)
        if cfg.logger != "none":
            accelerator.init_trackers("ddpm-hf", config=_loggable(cfg))
    accelerator.print("\n".join(summary_lines(state)))
    evaluator = None
    if cfg.eval_steps and accelerator.is_main_process:
        from .periodic_eval import PeriodicEval  # loads the classifier and test split only when asked

        evaluator = PeriodicEval(
            cfg.eval_classifier,
            cfg.dataset,
            cfg.eval_num_samples,
            cfg.eval_inference_steps,
            out,
            batch_size=cfg.train_batch_size,
        )
    images = state.data.images.to(accelerator.device)
    progress = tqdm(
        total=state.max_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train"
    )
    started, start_step = time.perf_counter(), state.step
    state.unet.train()
    with progress:
        while state.step < state.max_steps:
            loss = optimizer_step(state, images)
            state.lr_scheduler.step()
            if state.ema is not None:
                state.ema.step(state.model.parameters())
            state.step += 1
            logs = {"loss": loss.item(), "lr": state.lr_scheduler.get_last_lr()[0]}
            progress.update(1)
            progress.set_postfix(**{k: f"{v:.3g}" for k, v in logs.items()})
            accelerator.log(logs, step=state.step)
            periodic(state, evaluator)
    seconds = time.perf_counter() - started
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        images_seen = (state.step - start_step) * state.plan.step_batch
        finish(state, {"steps": state.step, "images_seen": images_seen, "seconds": round(seconds, 1)})
    accelerator.end_training()
    return out


def periodic(state: TrainState, evaluator) -> None:
    """What runs every so many steps: checkpoints and the pipeline export, sample grids, evaluations (on the main
    process, while the others wait at a barrier)."""
    cfg, step, main, out = state.cfg, state.step, state.accelerator.is_main_process, state.output_dir
    if step % cfg.checkpointing_steps == 0 or step == state.max_steps:
        save_checkpoint(state)
        if main and step < state.max_steps:  # the last step's export follows the loop
            save_outputs(state)
    if cfg.save_images_steps and step % cfg.save_images_steps == 0 and main:
        grid = save_sample_grid(state, out / "samples" / f"step-{step}.png")
        log_image(state, "samples", grid)
    if cfg.eval_steps and step % cfg.eval_steps == 0:
        if evaluator is not None:
            metrics = evaluator(state)
            state.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
        state.accelerator.wait_for_everyone()


def train(cfg: TrainConfig) -> Path:
    """Train with ``cfg``: ``run(prepare(cfg))``; returns the output folder."""
    return run(prepare(cfg))


def _digest(data: image_data.ImageDataset, labelled: bool) -> str:
    """sha256 of the training images' bytes, and of their labels in a class-conditional run."""
    digest = hashlib.sha256(data.images.contiguous().numpy().tobytes())
    if labelled:
        digest.update(data.labels.numpy().astype("<i8").tobytes())
    return digest.hexdigest()


def _loggable(cfg: TrainConfig) -> dict:
    """The settings the tracker records: scalars only, never the Hub token."""
    settings = dataclasses.asdict(cfg).items()
    return {k: v for k, v in settings if k != "hub_token" and isinstance(v, (int, float, str, bool))}
