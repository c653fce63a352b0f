"""Images per second of ``ddpm_hf.sample`` next to diffusers' ``DDPMPipeline`` (float32, NCHW), same UNet, one run.

For each batch size the variants run interleaved (repeat r of each before repeat r+1), so drifting machine load hits
them alike; the best repeat is reported with its ratio to the diffusers baseline. Variants: ``sample`` with
``precision="auto"`` on the UNet as ``load_pipeline`` returns it (channels_last), with ``precision="float32"``, and
with ``precision="bfloat16"`` (autocast; timed only on CPUs with native bfloat16 or with ``--bf16``). The bfloat16 images are compared with
the float32 ones from the same seed (max abs difference on the [0, 1] scale). Usage:
    python bench/bench_sampling.py [--model models/ddpm-mnist] [--steps 50] [--batch 1 4 16] [--threads 2]
"""

import argparse
import copy
import os
import time

import torch
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_hf import DDPMHFScheduler, load_pipeline, sample
from ddpm_hf.models import build_unet
from ddpm_hf.samplers import cpu_has_native_bf16, resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="models/ddpm-mnist", help="pipeline folder (a random 'small' UNet if missing)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="time bfloat16 autocast even without native bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        pipe = load_pipeline(args.model)
        unet, scheduler = pipe.unet, pipe.scheduler
    except ValueError:
        unet, scheduler = build_unet("small", 28, 1).eval().to(memory_format=torch.channels_last), DDPMHFScheduler()
    nchw = copy.deepcopy(unet).to(memory_format=torch.contiguous_format)
    baseline = DDPMPipeline(unet=nchw, scheduler=DDPMScheduler.from_config(scheduler.config))
    baseline.set_progress_bar_config(disable=True)
    auto = resolve_precision("auto", torch.device("cpu"))
    print(
        f"{args.steps} steps, {args.threads} threads, UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M, "
        f"native bf16 CPU: {cpu_has_native_bf16()} (auto = {str(auto).removeprefix('torch.')}), "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print("| batch | variant | images/s | ratio to diffusers |\n|---:|---|---:|---:|")
    for batch in args.batch:

        def ours(precision, b=batch):
            return sample(
                unet, scheduler, b, seed=0, num_inference_steps=args.steps, precision=precision, output_type="pt"
            ).images

        variants = {
            "diffusers DDPMPipeline (float32, NCHW)": lambda b=batch: baseline(
                b, generator=torch.manual_seed(0), num_inference_steps=args.steps, output_type="np"
            ),
            'ddpm_hf.sample precision="auto"': lambda: ours("auto"),
            'ddpm_hf.sample precision="float32"': lambda: ours("float32"),
        }
        if args.bf16 or cpu_has_native_bf16():
            variants['ddpm_hf.sample precision="bfloat16"'] = lambda: ours("bfloat16")
        best = {name: float("inf") for name in variants}
        for name, run in variants.items():
            run()  # warm-up
        for _ in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
        base = batch / best["diffusers DDPMPipeline (float32, NCHW)"]
        for name, seconds in best.items():
            print(f"| {batch} | {name} | {batch / seconds:.2f} | {batch / seconds / base:.2f} |", flush=True)
        diff = (ours("bfloat16") - ours("float32")).abs().max()
        print(f"| {batch} | bfloat16 vs float32 images, same seed: max abs difference {diff:.4f} (0-1 scale) | | |")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
