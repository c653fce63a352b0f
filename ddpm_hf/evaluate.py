"""How good is a trained DDPM? Likelihood of test images and classifier-based quality of its samples.

- Negative log-likelihood: the variational bound (Ho et al. 2020, eq. 5; ``ddpm_hf.likelihood``) in bits/dim on
  test images, estimated per image from K stratified timesteps (unbiased). The standard error is across images;
  the images of a batch share their K timesteps (redrawn per batch), so it slightly understates the part of the
  spread that comes from sampling timesteps.
- Sample quality, judged by the dataset's classifier (``ddpm_hf.classifier``) in place of an ImageNet network:
  classifier Inception Score exp(E_x KL(p(y|x) ‖ p(y))) (Salimans et al. 2016; at most the number of classes), the
  share of confident predictions, the class histogram, and the Fréchet distance between Gaussians fitted to
  penultimate features ("classifier-FID"; Heusel et al. 2017, eq. 6). A train subset against the test images gives
  the real-vs-real floor of each number; a sweep over ``num_inference_steps`` shows quality against sampling cost.

Samples are drawn with one seeded generator per image (seed + i), so a sample does not depend on the batch size and
every sweep entry starts from the same x_T. ``python -m ddpm_hf.evaluate --help`` lists the options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .classifier import load_classifier, predict
from .data import load_dataset, to_model_range
from .likelihood import variational_bound
from .pipeline_io import load_pipeline
from .sampling import sample

DATASETS = ("mnist", "fashion-mnist")
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def inception_score(probs: np.ndarray) -> float:
    """Classifier Inception Score exp(E_x KL(p(y|x) ‖ p(y))), with p(y) the mean of p(y|x) over the inputs.

    Args:
        probs: (N, C) rows of class probabilities.

    Returns:
        A value in [1, C]: 1 when every row is the same, C for confident predictions spread evenly over C classes.
    """
    p = np.asarray(probs, dtype=np.float64)
    marginal = p.mean(0, keepdims=True)
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(np.where(p > 0, marginal, 1))), 0.0)
    return float(np.exp(terms.sum(1).mean()))


def confident_share(probs: np.ndarray, threshold: float = 0.9) -> float:
    """Share of inputs whose most likely class has probability ≥ ``threshold``.

    Args:
        probs: (N, C) rows of class probabilities.
        threshold: confidence level.

    Returns:
        A share in [0, 1].
    """
    return float((np.asarray(probs).max(1) >= threshold).mean())


def class_histogram(probs: np.ndarray) -> np.ndarray:
    """How many inputs fall in each class by arg-max.

    Args:
        probs: (N, C) rows of class probabilities (or logits).

    Returns:
        (C,) int64 counts summing to N.
    """
    probs = np.asarray(probs)
    return np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(np.int64)


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(eigenvalues.clip(min=0))) @ eigenvectors.T


def frechet_distance_from_moments(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance² between N(μ1, Σ1) and N(μ2, Σ2): ‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2}).

    Tr((Σ1Σ2)^{1/2}) is computed as Tr((Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}) (the two matrices are similar), which needs only
    symmetric eigendecompositions in float64.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.

    Returns:
        The distance (≥ 0 up to rounding).
    """
    mu1, mu2, sigma1, sigma2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrtm_psd(sigma1)
    cross = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two feature sets.

    Args:
        features1, features2: (N1, D) and (N2, D) features, N1, N2 ≥ 2.

    Returns:
        The distance; 0 for identical sets.
    """
    f1, f2 = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"features must be (N, D) with the same D and N >= 2, got {f1.shape} and {f2.shape}")
    return frechet_distance_from_moments(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def quality(judged: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> dict:
    """The metrics of a set of images from its classifier ``(probs, features)``, Fréchet distance to ``reference``.

    Returns:
        Dict with ``fid``, ``inception_score``, ``confident_share`` (p ≥ 0.9) and ``histogram`` (list of counts).
    """
    (probs, features), reference_features = judged, reference[1]
    return {
        "fid": frechet_distance(features, reference_features),
        "inception_score": inception_score(probs),
        "confident_share": confident_share(probs, 0.9),
        "histogram": class_histogram(probs).tolist(),
    }


def generate(unet, scheduler, num_samples: int, steps: int, seed: int, batch_size: int) -> torch.Tensor:
    """Draw samples in batches, image i from ``Generator().manual_seed(seed + i)``, reporting progress to stderr.

    Returns:
        (N, C, H, W) uint8 images (the samples rounded to 8 bits, as a saved PNG would hold them).
    """
    batches, start_time, out = -(-num_samples // batch_size), time.perf_counter(), []
    for b, start in enumerate(range(0, num_samples, batch_size)):
        size = min(batch_size, num_samples - start)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(start, start + size)]

        def progress(i: int, t: int, x: torch.Tensor, pred_x0: torch.Tensor, b: int = b) -> None:
            if (i + 1) % max(1, steps // 10) == 0 or i + 1 == steps:
                elapsed, done = time.perf_counter() - start_time, b * steps + i + 1
                eta = elapsed / done * (batches * steps - done)
                print(f"[sample steps={steps}] batch {b + 1}/{batches}: step {i + 1}/{steps}, {elapsed:.0f} s, "
                      f"~{eta:.0f} s left", file=sys.stderr, flush=True)  # fmt: skip

        images = sample(unet, scheduler, size, generator=generators, num_inference_steps=steps,
                        output_type="pt", callback=progress).images  # fmt: skip
        out.append((images.cpu() * 255).round().to(torch.uint8))
    return torch.cat(out)


def negative_log_likelihood(unet, scheduler, images_uint8: torch.Tensor, num_timesteps: int, seed: int,
                            batch_size: int) -> dict:  # fmt: skip
    """Variational bound in bits/dim per image (K stratified timesteps per batch, redrawn for each batch).

    Returns:
        Dict with ``mean``, ``standard_error`` (across images), ``num_images`` and ``num_timesteps``.
    """
    generator, totals = torch.Generator().manual_seed(seed), []
    for start in range(0, len(images_uint8), batch_size):
        x0 = to_model_range(images_uint8[start : start + batch_size]).to(unet.device)
        totals.append(variational_bound(unet, scheduler, x0, num_timesteps=num_timesteps, generator=generator).total)
        print(f"[nll K={num_timesteps}] {start + len(x0)}/{len(images_uint8)} images", file=sys.stderr, flush=True)
    total = torch.cat(totals).double()
    se = float(total.std() / len(total) ** 0.5) if len(total) > 1 else float("nan")
    return {"mean": float(total.mean()), "standard_error": se, "num_images": len(total),
            "num_timesteps": num_timesteps}  # fmt: skip


def _check_count(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def evaluate(
    model: str, dataset: str = "mnist", num_samples: int = 1000, steps: int = 1000, steps_sweep: tuple[int, ...] = (),
    nll_images: int = 1000, nll_timesteps: int = 100, seed: int = 0, batch_size: int = 250,
    classifier: str | None = None, device: str = "cpu",
) -> dict:  # fmt: skip
    """Evaluate a pipeline folder or Hub repo against a dataset's test split (see the module docstring).

    Args:
        model: pipeline folder or Hub repo id (``ddpm_hf.pipeline_io.load_pipeline``).
        dataset: "mnist" or "fashion-mnist".
        num_samples: N generated images, N test images and N train images (2..10000).
        steps: ``num_inference_steps`` of the main sample set.
        steps_sweep: further step counts to report quality for (same seeds).
        nll_images: test images for the likelihood (0 skips it).
        nll_timesteps: K stratified timesteps per image for the bound; T-1 or more gives the exact sum.
        seed: seeds the samples, the test/train subsets and the bound's timesteps and noise.
        batch_size: images per sampling / likelihood batch.
        classifier: classifier folder; None uses ``models/<dataset>-classifier``.
        device: torch device for the UNet.

    Returns:
        JSON-serialisable dict of settings and results (``format_report`` renders it).
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    _check_count("num_samples", num_samples, 2, 10000)
    _check_count("nll_images", nll_images, 0, 10000)
    _check_count("batch_size", batch_size, 1, 10**6)
    classifier_path = Path(classifier) if classifier else MODELS_DIR / f"{dataset}-classifier"
    classifier_model = load_classifier(classifier_path)
    pipeline = load_pipeline(model)
    unet, scheduler = pipeline.unet.to(device), pipeline.scheduler
    T = scheduler.config.num_train_timesteps
    for count in (steps, *steps_sweep):
        _check_count("steps", count, 1, T)
    _check_count("nll_timesteps", nll_timesteps, 1, T)
    size, channels = unet.config.sample_size, unet.config.in_channels
    wanted = (classifier_model.config["image_size"], classifier_model.config["in_channels"])
    if (size, channels) != wanted:
        raise ValueError(f"model {model} makes {channels}-channel {size}x{size} images, but the {dataset} classifier "
                         f"takes {wanted[1]}-channel {wanted[0]}x{wanted[0]}; pick the matching --dataset")  # fmt: skip
    test, train = load_dataset(dataset, "test"), load_dataset(dataset, "train")
    test_index = torch.randperm(len(test.images), generator=torch.Generator().manual_seed(seed))
    train_index = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(seed))[:num_samples]
    test_view = predict(classifier_model, test.images[test_index[:num_samples]])
    result = {
        "model": str(model), "dataset": dataset, "num_samples": num_samples, "steps": steps, "seed": seed,
        "batch_size": batch_size, "classifier": str(classifier_path),
        "classifier_test_accuracy": classifier_model.config.get("test_accuracy"),
        "test": {**quality(test_view, test_view), "fid": 0.0},  # the reference itself
        "train_floor": quality(predict(classifier_model, train.images[train_index]), test_view),
        "nll": None, "sweep": {}, "seconds": {},
    }  # fmt: skip
    if nll_images:
        start = time.perf_counter()
        result["nll"] = negative_log_likelihood(unet, scheduler, test.images[test_index[:nll_images]],
                                                min(nll_timesteps, T - 1), seed, batch_size)  # fmt: skip
        result["seconds"]["nll"] = time.perf_counter() - start
    for count in dict.fromkeys((steps, *steps_sweep)):
        start = time.perf_counter()
        images = generate(unet, scheduler, num_samples, count, seed, batch_size)
        result["sweep"][count] = quality(predict(classifier_model, images), test_view)
        result["seconds"][f"sample_{count}"] = time.perf_counter() - start
    result["generated"] = result["sweep"][steps]
    return result


def format_report(result: dict) -> str:
    """Render ``evaluate``'s result as markdown (deterministic: no timings).

    Returns:
        The report text.
    """
    n, steps, seed = result["num_samples"], result["steps"], result["seed"]
    acc = result["classifier_test_accuracy"]
    lines = [
        f"## DDPM evaluation: `{result['model']}` on {result['dataset']}",
        "",
        f"N = {n} generated vs {n} test images (train subset of {n} for the real floor), num_inference_steps = "
        f"{steps}, seed = {seed}; classifier `{result['classifier']}`"
        + (f" (test accuracy {100 * acc:.2f}%)" if acc is not None else "") + ".",
        "",
    ]  # fmt: skip
    nll = result["nll"]
    if nll is not None:
        k = nll["num_timesteps"]
        lines += [
            "| negative log-likelihood (variational bound) | mean | standard error | N test images | K timesteps |",
            "|---|---|---|---|---|",
            f"| bits/dim ↓ | {nll['mean']:.4f} | {nll['standard_error']:.4f} | {nll['num_images']} | {k} |",
            "",
        ]  # fmt: skip
    columns = [(f"generated ({steps} steps)", result["generated"]), ("real floor: train subset", result["train_floor"]),
               ("test images", result["test"])]  # fmt: skip
    rows = [
        ("classifier-FID vs test ↓", lambda q: f"{q['fid']:.3f}"),
        ("classifier Inception Score ↑ (max 10)", lambda q: f"{q['inception_score']:.3f}"),
        ("confident share (p ≥ 0.9) ↑", lambda q: f"{q['confident_share']:.3f}"),
        ("class histogram 0..9", lambda q: " ".join(str(c) for c in q["histogram"])),
    ]
    lines += ["| metric | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(q) for _, q in columns) + " |" for label, cell in rows]
    sweep_header = "| num_inference_steps | classifier-FID ↓ | classifier IS ↑ | confident share ↑ |"
    lines += ["", sweep_header, "|---|---|---|---|"]
    for count, q in sorted(result["sweep"].items(), key=lambda item: -int(item[0])):
        lines.append(f"| {count} | {q['fid']:.3f} | {q['inception_score']:.3f} | {q['confident_share']:.3f} |")
    return "\n".join(lines)


def _steps_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """CLI: evaluate a DDPM pipeline; prints a markdown report to stdout and progress to stderr."""
    parser = argparse.ArgumentParser(prog="python -m ddpm_hf.evaluate", description=main.__doc__)
    parser.add_argument("--model", default=str(MODELS_DIR / "ddpm-mnist"), help="pipeline folder or Hub repo id")
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument("--num_samples", type=int, default=1000, help="N generated, test and train images")
    parser.add_argument("--steps", type=int, default=1000, help="num_inference_steps of the main sample set")
    parser.add_argument("--steps_sweep", type=_steps_list, default=(), help="e.g. 1000,250,100,50")
    parser.add_argument("--nll_images", type=int, default=1000, help="test images for the bound (0: skip)")
    parser.add_argument("--nll_timesteps", type=int, default=100, help="K stratified timesteps per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--classifier", default=None, help="classifier folder (default models/<dataset>-classifier)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        result = evaluate(args.model, args.dataset, args.num_samples, args.steps, args.steps_sweep, args.nll_images,
                          args.nll_timesteps, args.seed, args.batch_size, args.classifier, args.device)  # fmt: skip
    except ValueError as e:
        parser.exit(2, f"error: {str(e).splitlines()[0]}\n")
    print(format_report(result))
    print(f"done in {time.perf_counter() - start:.0f} s: " + ", ".join(
        f"{name} {seconds:.0f} s" for name, seconds in result["seconds"].items()), file=sys.stderr)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
