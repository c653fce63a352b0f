"""Training speed on the CPU: images/s, peak RSS and the data path's share of a step, for the default model.

Runs ``ddpm_hf.training.loop.optimizer_step`` (the body of ``train``'s loop: data, forward, backward, clipping, AdamW) for
the "small" preset at 28x28 on MNIST, after a warm-up, and times the data path alone (``micro_batch``: the step's
batch plus this process's slice) on the same steps. The EMA update, which the default run also
does each step, is timed on its own.

Usage: ``OMP_NUM_THREADS=1 python bench/bench_training.py [--steps 20] [--warmup 3] [--batch 64]``. Figures from a
machine shared with other work are lower bounds.
"""

import argparse
import os
import resource
import statistics
import tempfile
import time

import torch

from ddpm_hf.training.batches import micro_batch
from ddpm_hf.training.loop import TrainConfig, optimizer_step, prepare


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    parser.add_argument("--batch", type=int, default=64, help="images per step")
    parser.add_argument("--preset", default="small", help="UNet preset")
    args = parser.parse_args()

    cfg = TrainConfig(
        model_preset=args.preset,
        train_batch_size=args.batch,
        max_train_steps=args.warmup + args.steps,
        use_ema=True,
        logger="none",
        cpu=True,
        output_dir=os.path.join(tempfile.gettempdir(), "ddpm-hf-bench"),
    )  # never written: prepare() writes nothing, and run() is not called
    r = prepare(cfg)
    images, peak_after_prepare = r.data.images, peak_rss_mib()
    accelerator, unet, ema = r.accelerator, r.unet, r.ema
    unet.train()

    def data_path(step: int) -> None:
        [v.to(accelerator.device) for v in micro_batch(images, step, 0, accelerator.process_index, r.plan)]

    def one_step(step: int) -> None:
        r.step = step
        optimizer_step(r, images).item()

    for step in range(args.warmup):
        one_step(step)
    timed_steps = range(args.warmup, args.warmup + args.steps)
    step_s = [timed(lambda s=s: one_step(s)) for s in timed_steps]
    data_s = [timed(lambda s=s: data_path(s)) for s in timed_steps]
    ema_s = [timed(lambda: ema.step(r.model.parameters())) for _ in timed_steps]

    step_total, data_total, ema_total = sum(step_s), sum(data_s), sum(ema_s)
    n_params = sum(p.numel() for p in unet.parameters())
    rows = [
        ("training throughput (optimizer step)", f"{args.batch * args.steps / step_total:.1f} img/s"),
        ("  with the EMA update too", f"{args.batch * args.steps / (step_total + ema_total):.1f} img/s"),
        ("optimizer step, median", f"{1000 * statistics.median(step_s):.0f} ms"),
        ("data path (step batch + slice), median", f"{1000 * statistics.median(data_s):.2f} ms"),
        ("data path share of a step", f"{100 * data_total / step_total:.2f} %"),
        ("EMA update, median", f"{1000 * statistics.median(ema_s):.1f} ms ({100 * ema_total / step_total:.1f} %)"),
        ("peak RSS, whole run", f"{peak_rss_mib():.0f} MiB"),
        ("  of it, reached while loading data and model", f"{peak_after_prepare:.0f} MiB"),
    ]
    print(
        f"preset {args.preset} ({n_params / 1e6:.2f}M parameters), {images.shape[-1]}x{images.shape[-1]}, "
        f"batch {args.batch}, {args.steps} steps after {args.warmup} warm-up, CPU, {torch.get_num_threads()} "
        f"torch thread(s)"
    )
    width = max(len(name) for name, _ in rows)
    print(f"| {'quantity':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
