"""Images per second of ``ddpm_hf.sample`` next to diffusers' ``DDPMPipeline`` + ``DDPMScheduler``, same UNet.

Each variant samples ``--batch`` images at each step count; the table prints images/s and the ratio to the diffusers
baseline. ``sample`` keeps activations in channels_last (NHWC) memory format; ``load_pipeline`` also returns the UNet in
channels_last. Variants: the API with a contiguous (NCHW) UNet, with a channels_last UNet (what ``load_pipeline``
gives), and with ``torch.compile`` (``--compile``, slow to warm up). Usage:
    python bench/bench_sampling.py [--model models/ddpm-mnist] [--steps 100 1000] [--batch 16] [--threads 2]
"""

import argparse
import copy
import time

import torch
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_hf import DDPMHFScheduler, load_pipeline, sample
from ddpm_hf.models import build_unet


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="models/ddpm-mnist", help="pipeline folder (a random 'small' UNet if missing)"
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(unet)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        pipe = load_pipeline(args.model)
        unet, scheduler = pipe.unet.to(memory_format=torch.contiguous_format), pipe.scheduler
    except ValueError:
        unet, scheduler = build_unet("small", 28, 1).eval(), DDPMHFScheduler()
    baseline = DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(scheduler.config))
    baseline.set_progress_bar_config(disable=True)
    cl_unet = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    variants = {
        "diffusers DDPMPipeline": lambda n: baseline(
            args.batch, generator=torch.manual_seed(0), num_inference_steps=n
        ),
        "ddpm_hf.sample, NCHW UNet": lambda n: sample(unet, scheduler, args.batch, seed=0, num_inference_steps=n),
        "ddpm_hf.sample, channels_last UNet": lambda n: sample(
            cl_unet, scheduler, args.batch, seed=0, num_inference_steps=n
        ),
    }
    if args.compile:
        compiled = torch.compile(copy.deepcopy(cl_unet))
        variants["ddpm_hf.sample, torch.compile"] = lambda n: sample(
            compiled, scheduler, args.batch, seed=0, num_inference_steps=n
        )
    print(f"batch {args.batch}, {args.threads} threads, UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M")
    print("| variant | steps | images/s | ratio to diffusers |\n|---|---:|---:|---:|")
    for n in args.steps:
        base = None
        for name, run in variants.items():
            rate = args.batch / timed(lambda run=run, n=n: run(n), args.repeats)
            base = base or rate
            print(f"| {name} | {n} | {rate:.2f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
