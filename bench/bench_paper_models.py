"""What the paper's own models cost on this machine: the CIFAR-10 model (32×32) and the 256×256 LSUN / CelebA-HQ ones.

    python bench/bench_paper_models.py [--sizes 32,256] [--threads 2]

No download: each model is written by stock diffusers in its Hub repo's layout and architecture (the widths, blocks
and flags of ``google/ddpm-cifar10-32`` and ``google/ddpm-ema-church-256``; bedroom, cat and CelebA-HQ share the
church model's architecture) with random weights, which cost the same time as the trained ones, and loaded with
``ddpm_hf.load_pipeline`` as the Space loads them. For each it prints the parameter count, the cost the Space
measures (``ddpm_hf.space.costs.measure``: seconds of one reverse step, fixed + per image), one image from the fast
sampler at its default steps (timed end to end, with the precision the library chooses), and the Space's default
request for the model on this machine (``costs.default_request``) with its predicted time.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ddpm_hf import load_pipeline, sample, speed
from ddpm_hf.samplers import cpu_has_native_bf16
from ddpm_hf.space import costs, limits

FLAGS = {"flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0, "norm_eps": 1e-6, "layers_per_block": 2}
LAYOUTS = {  # the Hub repos' UNet configs (diffusers' conversions of the paper's checkpoints)
    32: {
        "repo": "google/ddpm-cifar10-32",
        "sample_size": 32,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    },
    256: {
        "repo": "google/ddpm-ema-church-256",
        "sample_size": 256,
        "block_out_channels": (128, 128, 256, 256, 512, 512),
        "down_block_types": ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    },
}


def write_layout(size: int, folder: Path) -> Path:
    layout = {k: v for k, v in LAYOUTS[size].items() if k != "repo"}
    torch.manual_seed(0)
    UNet2DModel(in_channels=3, out_channels=3, **layout, **FLAGS).save_pretrained(folder, safe_serialization=True)
    DDPMScheduler(variance_type="fixed_large", clip_sample=True).save_pretrained(folder)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,256", help="which layouts: 32 (CIFAR-10), 256 (LSUN, CelebA-HQ)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, native bf16: {cpu_has_native_bf16()}")
    sampler, steps = costs.FAST_SAMPLER, limits.default_steps(costs.FAST_SAMPLER)
    print(
        f"| model | parameters | one step: fixed + per image | 1 image, {sampler} {steps} steps | ran as | "
        "the Space's default request here |"
    )
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            pipe = load_pipeline(write_layout(size, Path(tmp)))
        n = sum(p.numel() for p in pipe.unet.parameters())
        cost = costs.measure(pipe.unet, pipe.scheduler)
        start = time.perf_counter()
        sample(pipe.unet, pipe.scheduler, 1, seed=0, num_inference_steps=steps, sampler=sampler, output_type="pt")
        one = time.perf_counter() - start
        d = costs.default_request(cost)
        predicted = cost.seconds(d.num_images, d.num_inference_steps)
        print(
            f"| {LAYOUTS[size]['repo']} | {n / 1e6:.1f}M | {cost.fixed:.3f} + {cost.per_image:.3f} s | {one:.1f} s "
            f"| {speed.describe(pipe.unet)} | {d.num_images} × {d.sampler} {d.num_inference_steps} "
            f"(≈ {predicted:.0f} s) |"
        )


if __name__ == "__main__":
    main()
