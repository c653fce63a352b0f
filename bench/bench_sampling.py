"""Images per second of ``ddpm_hf.sample`` next to diffusers' ``DDPMPipeline`` (float32, NCHW), same UNet, one run.

For each batch size the variants run interleaved (repeat r of each before repeat r+1), so drifting machine load hits
them alike; the best repeat is reported with its ratio to the diffusers baseline and what the network ran as (memory
format and precision, ``ddpm_hf.speed.describe``). Each variant has its own copy of the UNet, so its timed choice and
memory format are its own. Variants: ``sample`` with ``precision="auto"`` (format and precision chosen by timing),
``precision="float32"`` (format chosen by timing), ``precision="auto"`` untimed (``autotune=False``: the weights'
layout as loaded, channels_last), ``precision="bfloat16"`` (only on CPUs with native bfloat16 or with ``--bf16``), and
with ``--compile`` the timed "auto" choice through ``torch.compile`` (compile time and the requests it takes to pay
back are printed). Each timed choice logs its candidates' forward times to stderr. The bfloat16 images are compared
with the float32 ones from the same seed. Usage:
    python bench/bench_sampling.py [--model models/ddpm-mnist] [--steps 50] [--batch 1 4 16] [--threads 2] [--compile]
"""

import argparse
import copy
import logging
import os
import time

import torch
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_hf import DDPMHFScheduler, load_pipeline, sample, speed
from ddpm_hf.models import build_unet
from ddpm_hf.samplers import cpu_has_native_bf16

BASELINE = "diffusers DDPMPipeline"


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
    parser.add_argument("--compile", action="store_true", help="also time the timed 'auto' choice compiled")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger(speed.__name__).setLevel(logging.INFO)  # each timed choice's candidates, to stderr
    try:
        pipe = load_pipeline(args.model)
        unet, scheduler = pipe.unet, pipe.scheduler
    except ValueError:
        unet, scheduler = build_unet("small", 28, 1).eval().to(memory_format=torch.channels_last), DDPMHFScheduler()
    nchw = copy.deepcopy(unet).to(memory_format=torch.contiguous_format)
    baseline = DDPMPipeline(unet=nchw, scheduler=DDPMScheduler.from_config(scheduler.config))
    baseline.set_progress_bar_config(disable=True)
    bf16 = args.bf16 or cpu_has_native_bf16()
    print(
        f"{args.steps} steps, {args.threads} threads, UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M, "
        f"native bf16 CPU: {cpu_has_native_bf16()}, load average {os.getloadavg()[0]:.2f} at start"
    )
    print("| batch | variant | runs as | images/s | ratio to diffusers |\n|---:|---|---|---:|---:|")
    headline = None
    for batch in args.batch:
        # name -> (its UNet, the sample() options); the baseline's UNet is the NCHW copy
        variants = {
            BASELINE: (nchw, None),
            'sample precision="auto"': (copy.deepcopy(unet), {"precision": "auto"}),
            'sample precision="float32"': (copy.deepcopy(unet), {"precision": "float32"}),
            'sample precision="auto", autotune=False': (copy.deepcopy(unet), {"precision": "auto", "autotune": False}),
        }
        if bf16:
            variants['sample precision="bfloat16"'] = (copy.deepcopy(unet), {"precision": "bfloat16"})
        if args.compile:
            variants['sample precision="auto", compile=True'] = (
                copy.deepcopy(unet),
                {"precision": "auto", "compile": True},
            )

        def run(name, b=batch, variants=variants):
            net, options = variants[name]
            if options is None:
                return baseline(b, generator=torch.manual_seed(0), num_inference_steps=args.steps, output_type="np")
            return sample(net, scheduler, b, seed=0, num_inference_steps=args.steps, output_type="pt", **options)

        best, first = dict.fromkeys(variants, float("inf")), {}
        for name in variants:  # warm-up: times the choices (a few hundred ms) and compiles
            start = time.perf_counter()
            run(name)
            first[name] = time.perf_counter() - start
        for _ in range(args.repeats):
            for name in variants:
                start = time.perf_counter()
                run(name)
                best[name] = min(best[name], time.perf_counter() - start)
        base = batch / best[BASELINE]
        for name, seconds in best.items():
            runs_as = "float32, NCHW" if name == BASELINE else speed.describe(variants[name][0])
            print(f"| {batch} | {name} | {runs_as} | {batch / seconds:.2f} | {batch / seconds / base:.2f} |")
        compiled = 'sample precision="auto", compile=True'
        if compiled in variants:
            eager = best['sample precision="auto"']
            gain = eager - best[compiled]
            payback = f"{(first[compiled] - best[compiled]) / gain:.0f} requests" if gain > 0 else "never (no gain)"
            print(
                f"| {batch} | compile + first request {first[compiled]:.1f} s; a request {best[compiled]:.2f} s "
                f"compiled vs {eager:.2f} s eager; pays back after {payback} | | | |"
            )
        if bf16:
            diff = (run('sample precision="bfloat16"').images - run('sample precision="float32"').images).abs().max()
            print(
                f"| {batch} | bfloat16 vs float32 images, same seed: max abs difference {diff:.4f} (0-1 scale) | | | |"
            )
        if batch == 16:
            auto = 'sample precision="auto"'
            headline = (best[BASELINE] / best[auto], speed.describe(variants[auto][0]))
    if headline:
        print(
            f"16 images × {args.steps} steps: sample() is {headline[0]:.2f}× DDPMPipeline "
            f'(precision="auto" runs {headline[1]})'
        )
    print(f"load average {os.getloadavg()[0]:.2f} at end", flush=True)


if __name__ == "__main__":
    main()
