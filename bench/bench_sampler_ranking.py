"""Which sampler is the fast option, judged in three feature spaces on the same images.

Draws ``--num_samples`` images from each (sampler, steps) with ``ddpm_hf.evaluate.generate`` (image i from seed i,
so every sampler starts from the same x_T) and scores each set against the same real test images in:
- the shipped classifier's penultimate features: classifier-FID, as ``python -m ddpm_hf.evaluate`` reports it;
- a second classifier of the same architecture trained here from another seed (``--second_seed``; 1000 steps,
  ~2.5 min on one thread): classifier-FID in its own feature space;
- raw pixels: kernel distance (KID, Bińkowski et al. 2018: unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³ on pixels in [0, 1]), with its standard error over 10 disjoint blocks.
Each column also gets its real floor (as many training images against the same test images), and the samplers are
ranked within each column. The last lines say whether the rankings agree, and whether pixel KID resolves them at
all. Samples are cached as uint8 ``.npy`` under ``--cache`` so a rerun only scores. Usage:
    python bench/bench_sampler_ranking.py [--model models/ddpm-mnist] [--dataset mnist] [--num_samples 1000]
        [--runs ddpm:50 sde-dpm++:20 dpm++:20]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_hf import load_pipeline
from ddpm_hf.data import load_dataset
from ddpm_hf.evaluation.classifier import load_classifier, predict, train_classifier
from ddpm_hf.evaluation.evaluate import generate
from ddpm_hf.evaluation.metrics import confident_share, frechet_distance


def kernel_distance(x: np.ndarray, y: np.ndarray, blocks: int = 10) -> tuple[float, float]:
    """Unbiased MMD² between two image sets with the cubic polynomial kernel on flattened pixels in [0, 1].

    Args:
        x, y: (N, ...) uint8 images, the same N, divisible by ``blocks``.
        blocks: disjoint blocks for the standard error.

    Returns:
        (MMD² over all images, its standard error from the spread over blocks).
    """

    def mmd2(a: np.ndarray, b: np.ndarray) -> float:
        n, d = len(a), a.shape[1]
        k_aa, k_bb, k_ab = ((p @ q.T / d + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
        off = n * (n - 1)
        return float((k_aa.sum() - np.trace(k_aa)) / off + (k_bb.sum() - np.trace(k_bb)) / off - 2 * k_ab.mean())

    a, b = (np.asarray(v, dtype=np.float64).reshape(len(v), -1) / 255 for v in (x, y))
    per_block = [mmd2(p, q) for p, q in zip(np.array_split(a, blocks), np.array_split(b, blocks), strict=True)]
    return mmd2(a, b), float(np.std(per_block, ddof=1) / np.sqrt(blocks))


def samples(unet, scheduler, sampler: str, steps: int, n: int, cache: Path) -> np.ndarray:
    """N uint8 images from (sampler, steps), seeds 0..N-1, read from or written to the cache."""
    path = cache / f"{sampler}-{steps}-n{n}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    start = time.perf_counter()
    images = generate(unet, scheduler, n, steps, 0, 250, sampler=sampler).numpy()
    print(f"{sampler} {steps} steps: {n} images in {time.perf_counter() - start:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, images, allow_pickle=False)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/ddpm-mnist")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--runs", nargs="+", default=["ddpm:50", "sde-dpm++:20", "dpm++:20"], help="sampler:steps")
    parser.add_argument("--second_seed", type=int, default=1)
    parser.add_argument("--cache", default="runs/sampler-ranking")
    args = parser.parse_args()
    cache, n = Path(args.cache), args.num_samples
    pipe = load_pipeline(args.model)
    first = load_classifier(f"models/{args.dataset}-classifier")
    second_dir = cache / f"{args.dataset}-classifier-seed{args.second_seed}"
    if not second_dir.exists():
        start = time.perf_counter()
        train_classifier(args.dataset, seed=args.second_seed, log_every=0).save_pretrained(second_dir)
        print(f"second classifier (seed {args.second_seed}) trained in {time.perf_counter() - start:.0f} s")
    second = load_classifier(second_dir)

    test, train = load_dataset(args.dataset, "test"), load_dataset(args.dataset, "train")
    # the same real images as python -m ddpm_hf.evaluate --seed 0: test reference, training floor
    reference = test.images[torch.randperm(len(test.images), generator=torch.Generator().manual_seed(0))[:n]]
    floor = train.images[torch.randperm(len(train.images), generator=torch.Generator().manual_seed(0))[:n]]
    views = {name: predict(judge, reference)[1] for name, judge in (("first", first), ("second", second))}

    def score(images: torch.Tensor) -> dict:
        p1, f1 = predict(first, images)
        p2, f2 = predict(second, images)
        kid, kid_se = kernel_distance(images.numpy(), reference.numpy())
        return {
            "fid1": frechet_distance(f1, views["first"]),
            "fid2": frechet_distance(f2, views["second"]),
            "kid": kid,
            "kid_se": kid_se,
            "conf1": confident_share(p1),
            "conf2": confident_share(p2),
        }

    real = score(floor)
    rows = {}
    for run in args.runs:
        sampler, steps = run.split(":")
        images = samples(pipe.unet, pipe.scheduler, sampler, int(steps), n, cache)
        rows[f"{sampler}, {steps} steps"] = score(torch.from_numpy(images))
    ranks = {
        key: {name: 1 + sorted(rows, key=lambda r, key=key: rows[r][key]).index(name) for name in rows}
        for key in ("fid1", "fid2", "kid")
    }
    print(f"\n{args.model}, N = {n}, seeds 0..{n - 1}, trailing timesteps; FID × its real floor, (rank)")
    print("| sampler | FID, shipped classifier | FID, second classifier | pixel KID × 10³ | confident share |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| real training images (floor) | {real['fid1']:.1f} | {real['fid2']:.1f} | "
        f"{real['kid'] * 1e3:.2f} ± {real['kid_se'] * 1e3:.2f} | {real['conf1']:.3f} / {real['conf2']:.3f} |"
    )
    for name, s in rows.items():
        print(
            f"| {name} | {s['fid1']:.1f} = {s['fid1'] / real['fid1']:.2f}× ({ranks['fid1'][name]}) | "
            f"{s['fid2']:.1f} = {s['fid2'] / real['fid2']:.2f}× ({ranks['fid2'][name]}) | "
            f"{s['kid'] * 1e3:.2f} ± {s['kid_se'] * 1e3:.2f} ({ranks['kid'][name]}) | "
            f"{s['conf1']:.3f} / {s['conf2']:.3f} |"
        )
    orders = {key: "; ".join(sorted(rows, key=lambda r, key=key: rows[r][key])) for key in ranks}
    if orders["fid1"] == orders["fid2"]:
        print(f"Both classifiers rank them (best first): {orders['fid1']}.")
    else:
        print(f"The classifiers disagree: {orders['fid1']} (shipped) against {orders['fid2']} (second).")
    kids = [s["kid"] for s in rows.values()]
    if max(kids) - min(kids) < 2 * max(s["kid_se"] for s in rows.values()):
        print("Pixel KID cannot separate them at this N: they differ by less than two standard errors.")
    elif orders["kid"] != orders["fid1"]:
        print(f"Pixel KID ranks them otherwise: {orders['kid']}.")


if __name__ == "__main__":
    main()
