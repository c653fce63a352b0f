"""Microseconds per ``step`` call: DDPMHFScheduler next to diffusers' DDPMScheduler, measured in one run.

Each row times the two schedulers interleaved (repeat r of one, then repeat r of the other), so drifting machine load
hits both alike. The timestep is passed as DDPMPipeline passes it: an element of ``scheduler.timesteps`` (a 0-dim
tensor). The bare noise draw ``torch.randn(shape, generator=g)``, which every non-final step contains, is timed
alongside as the floor. ``--diagnose`` adds the effects behind widely different step timings: the first call, the
type of ``t``, ``previous_timestep``, the model-output finiteness check, and intra-op threads.

Usage:
    python bench/bench_scheduler.py [--threads 2] [--calls 200] [--repeats 5] [--warmup 50] [--diagnose]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from diffusers import DDPMScheduler

from ddpm_hf import DDPMHFScheduler

SHAPES = [(64, 1, 28, 28), (64, 1, 32, 32), (16, 3, 64, 64)]
# label: (num_inference_steps or None for the full chain, index into scheduler.timesteps): a middle timestep
SCHEDULES = {"T=1000, t=500": (None, 499), "50 steps, t=480": (50, 25)}
SCHEDULERS = {"diffusers": DDPMScheduler, "ddpm_hf": DDPMHFScheduler}


def time_interleaved(fns: dict[str, Callable[[], object]], calls: int, repeats: int, warmup: int) -> dict[str, float]:
    """Median over ``repeats`` of the mean µs per call of ``calls`` back-to-back calls, for each function."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def make_step(cls, schedule: tuple[int | None, int], shape: tuple[int, ...], as_int: bool = False):
    """A zero-argument ``step`` call on fixed inputs at ``scheduler.timesteps[index]``, with a seeded generator."""
    num_inference_steps, index = schedule
    scheduler = cls()
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    t = int(scheduler.timesteps[index]) if as_int else scheduler.timesteps[index]
    inputs = torch.Generator().manual_seed(1)
    sample, model_output = torch.randn(shape, generator=inputs), torch.randn(shape, generator=inputs)
    generator = torch.Generator().manual_seed(0)
    return lambda: scheduler.step(model_output, t, sample, generator=generator), int(t)


def noise_draw(shape: tuple[int, ...]) -> Callable[[], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return lambda: torch.randn(shape, generator=generator)


def main_table(args) -> None:
    print("| shape | schedule | diffusers µs | ddpm_hf µs | ratio (ours/diffusers) | noise draw µs |")
    print("|---|---|---:|---:|---:|---:|")
    for shape in SHAPES:
        for label, schedule in SCHEDULES.items():
            fns, ts = {}, set()
            for name, cls in SCHEDULERS.items():
                fns[name], t = make_step(cls, schedule, shape)
                ts.add(t)
            assert len(ts) == 1 and f"t={ts.pop()}" in label, label  # both step at the same, labelled t
            fns["randn"] = noise_draw(shape)
            us = time_interleaved(fns, args.calls, args.repeats, args.warmup)
            theirs, ours, draw = us["diffusers"], us["ddpm_hf"], us["randn"]
            print(f"| {shape} | {label} | {theirs:.0f} | {ours:.0f} | {ours / theirs:.2f} | {draw:.0f} |")


FIRST_CALL = """
import time, torch
from {module} import {cls}
torch.set_num_threads({threads})
s = {cls}()
x = torch.randn({shape})
start = time.perf_counter()
s.step(x, s.timesteps[499], x, generator=torch.Generator().manual_seed(0))
print(1e6 * (time.perf_counter() - start))
"""


def diagnose(args) -> None:
    """Why one measurement of the same step can read 0.6 ms or 7 ms."""
    shape = (64, 1, 32, 32)
    full, strided = SCHEDULES["T=1000, t=500"], SCHEDULES["50 steps, t=480"]
    print(f"Diagnosis at {shape} (µs per call, median of {args.repeats} × {args.calls}):")
    # the first call of a fresh process (lazy initialisation, allocator growth): each in its own interpreter
    for name, module in [("diffusers", "diffusers"), ("ddpm_hf", "ddpm_hf")]:
        code = FIRST_CALL.format(module=module, cls=SCHEDULERS[name].__name__, threads=args.threads, shape=shape)
        us = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        print(f"- {name}: first step call in a fresh process {us:.0f}")
    # the type of t, and previous_timestep
    fns = {}
    for name, cls in SCHEDULERS.items():
        for label, schedule in [("T=1000", full), ("50 steps", strided)]:
            for as_int in (True, False):
                fns[f"{name} step, {label}, t {'int' if as_int else '0-dim tensor'}"] = make_step(
                    cls, schedule, shape, as_int=as_int
                )[0]
    for name, cls in SCHEDULERS.items():
        scheduler = cls()
        scheduler.set_timesteps(50)
        t = scheduler.timesteps[25]
        key = f"{name} previous_timestep alone, 50 steps, 0-dim tensor"
        fns[key] = lambda s=scheduler, t=t: s.previous_timestep(t)
    model_output = torch.randn(shape)
    fns["torch.isfinite(model_output).all() (ddpm_hf's input check)"] = lambda: torch.isfinite(model_output).all()
    fns["torch.isfinite(model_output.sum()) (a one-pass alternative)"] = lambda: torch.isfinite(model_output.sum())
    for key, us in time_interleaved(fns, args.calls, args.repeats, args.warmup).items():
        print(f"- {key}: {us:.1f}")
    # intra-op threads
    threads = torch.get_num_threads()
    for n in sorted({1, 2, threads}):
        torch.set_num_threads(n)
        fns = {name: make_step(cls, full, shape)[0] for name, cls in SCHEDULERS.items()} | {"randn": noise_draw(shape)}
        us = time_interleaved(fns, args.calls, args.repeats, args.warmup)
        print(f"- torch threads {n}, T=1000 step: " + ", ".join(f"{k} {v:.0f}" for k, v in us.items()))
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--calls", type=int, default=200, help="step calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls before timing")
    parser.add_argument("--diagnose", action="store_true", help="also time first call, t type, threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} (1 min) at start; {args.calls} calls × {args.repeats} repeats, median\n"
    )
    busy = load[0] + torch.get_num_threads() - os.cpu_count()
    if torch.get_num_threads() > 1 and busy > 0.5:
        print(
            f"WARNING: the CPUs are already busy (load {load[0]:.1f} on {os.cpu_count()} CPUs): every op split across"
            f" {torch.get_num_threads()} threads waits for a descheduled one; the figures will be erratic and mostly"
            " measure that wait. Compare with --threads 1.\n"
        )
    if args.diagnose:
        diagnose(args)
        print()
    main_table(args)
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at end")


if __name__ == "__main__":
    main()
