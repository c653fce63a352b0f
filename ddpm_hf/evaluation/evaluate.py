"""How good is a trained DDPM? Likelihood of test images and classifier-based quality of its samples.

- Negative log-likelihood: the variational bound (Ho et al. 2020, eq. 5; ``ddpm_hf.likelihood.estimate_bound``) in
  bits/dim on test images: the terms at t ≤ S summed exactly, the rest from K strata with a timestep drawn per image
  (unbiased). The standard error is across images and includes the timestep draw.
- Sample quality, judged by the dataset's classifier (``ddpm_hf.classifier``) in place of an ImageNet network
  (``ddpm_hf.evaluation.metrics``): classifier-FID, classifier Inception Score and confident share. A train subset against the
  test images gives the real-vs-real reference of each number at the same N.
- Quality against cost: ``--samplers ddpm,ddim,dpm++ --steps_sweep 10,20,50,...`` scores every (sampler, steps)
  pair with the same seeds, with the wall time per image and the network evaluations (NFE); ``--plot`` draws
  classifier-FID against NFE.

Samples are drawn with one seeded generator per image (seed + i), so a sample does not depend on the batch size and
every sweep entry starts from the same x_T. The result is an ``ddpm_hf.evaluation.result.Evaluation``; ``--output_json``
writes it for ``python -m ddpm_hf.hub card``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..cli import build_parser, input_error, setting, shipped
from ..data import BUILT_IN, load_dataset, to_model_range, to_uint8
from ..guidance import check_guidance, is_conditional, num_classes
from ..likelihood import estimate_bound
from ..pipeline_io import load_pipeline
from ..sampling import SAMPLERS, STRIDED_SPACING, sample
from ..validate import check_choice, check_int
from .classifier import load_classifier, predict
from .guidance_table import real_reference, score_guidance
from .metrics import quality
from .result import SETTINGS, BoundEstimate, Evaluation, Quality, SampleScore


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class EvalConfig:
    """Every evaluation setting; ``python -m ddpm_hf.evaluate --help`` lists them with these defaults."""

    model: str | None = setting(
        None,
        "pipeline folder or Hub repo id (CLI default: this checkout's models/ddpm-<dataset>)",
        cli_default=lambda flags: shipped(f"ddpm-{flags.dataset}"),
    )
    dataset: str = setting("mnist", "mnist or fashion-mnist (the test split and classifier to judge against)")
    num_samples: int = setting(1000, "N generated, N test and N train images")
    steps: int = setting(1000, "num_inference_steps of the main sample set")
    sampler: str = setting("ddpm", "sampler of the main sample set: " + ", ".join(SAMPLERS))
    precision: str = setting("float32", "the network's precision while sampling: float32, bfloat16, float16 or auto")
    samplers: tuple[str, ...] = setting((), "samplers of the sweep, e.g. ddpm,ddim,dpm++ (default: --sampler)")
    steps_sweep: tuple[int, ...] = setting((), "step counts of the sweep, e.g. 10,20,50,100,250,1000")
    nll_images: int = setting(1000, "test images for the likelihood bound (0: skip)")
    nll_timesteps: int = setting(
        50, "K strata of the bound's timesteps above --nll_exact_timesteps, one t per image each"
    )
    nll_exact_timesteps: int = setting(50, "S: the bound's terms at t = 1..S are summed exactly (the largest ones)")
    seed: int = setting(0, "seeds the samples, the test/train subsets and the bound's timesteps and noise")
    batch_size: int = setting(250, "images per sampling / likelihood batch")
    classifier: str | None = setting(
        None,
        "classifier folder or Hub repo id (CLI default: this checkout's models/<dataset>-classifier)",
        cli_default=lambda flags: shipped(f"{flags.dataset}-classifier"),
    )
    device: str = setting(
        help="torch device for the UNet (default: cuda when available)", default_factory=_default_device
    )
    guidance_scales: tuple[float, ...] = setting(
        (), "a class-conditional model: score classifier-free guidance at these w, e.g. 0,1,2,3,5"
    )
    per_class: int = setting(100, "images per class at each --guidance_scales entry")
    samples_dir: str | None = setting(
        None, "also save each guidance set's images as uint8 guidance-w<w>.npy here (for other judges)"
    )
    output_json: str | None = setting(None, "also write the results to this JSON file")
    plot: str | None = setting(None, "write a PNG of classifier-FID against network evaluations (with a sweep)")


def generate(
    unet,
    scheduler,
    num_samples: int,
    steps: int,
    seed: int,
    batch_size: int,
    *,
    sampler="ddpm",
    precision="float32",
    class_labels: list[int] | None = None,
    guidance_scale: float | None = None,
):
    """Draw samples in batches, image i from ``Generator().manual_seed(seed + i)``, reporting progress to stderr.
    The network runs untimed (``autotune=False``: in its weights' memory format as loaded), so the scores do not
    depend on which layout a machine's timing would pick. A class-conditional model samples image i of
    ``class_labels[i]`` with ``guidance_scale`` (no labels: unconditionally, ∅).

    Returns:
        (N, C, H, W) uint8 images (the samples rounded to 8 bits, as a saved PNG would hold them).
    """
    batches, start_time, out = -(-num_samples // batch_size), time.perf_counter(), []
    for b, start in enumerate(range(0, num_samples, batch_size)):
        size = min(batch_size, num_samples - start)

        def progress(i: int, t: int, x: torch.Tensor, pred_x0: torch.Tensor, b: int = b) -> None:
            if (i + 1) % max(1, steps // 10) == 0 or i + 1 == steps:
                elapsed, done = time.perf_counter() - start_time, b * steps + i + 1
                eta = elapsed / done * (batches * steps - done)
                where = f"[sample {sampler} steps={steps}] batch {b + 1}/{batches}: step {i + 1}/{steps}"
                print(f"{where}, {elapsed:.0f} s, ~{eta:.0f} s left", file=sys.stderr, flush=True)

        guide = {"guidance_scale": guidance_scale}
        if class_labels is not None:
            guide["class_labels"] = class_labels[start : start + size]
        images = sample(
            unet,
            scheduler,
            size,
            **guide,
            seed=seed + start,
            num_inference_steps=steps,
            output_type="pt",
            callback=progress,
            sampler=sampler,
            precision=precision,
            autotune=False,
        ).images
        out.append(to_uint8(images.cpu(), value_range=(0, 1)))
    return torch.cat(out)


def negative_log_likelihood(
    unet, scheduler, images_uint8: torch.Tensor, exact_timesteps: int, num_timesteps: int, seed: int, batch_size: int
) -> BoundEstimate:
    """The variational bound in bits/dim: mean over images of ``estimate_bound`` and its standard error (across
    images, including the timestep draw), with S = ``exact_timesteps`` and K = ``num_timesteps``."""
    generator, totals = torch.Generator().manual_seed(seed), []
    for start in range(0, len(images_uint8), batch_size):
        x0 = to_model_range(images_uint8[start : start + batch_size]).to(unet.device)
        options = {"exact_timesteps": exact_timesteps, "num_timesteps": num_timesteps, "generator": generator}
        totals.append(estimate_bound(unet, scheduler, x0, **options))
        done = f"{start + len(x0)}/{len(images_uint8)}"
        print(f"[nll S={exact_timesteps} K={num_timesteps}] {done} images", file=sys.stderr, flush=True)
    total = torch.cat(totals).double()
    se = float(total.std() / len(total) ** 0.5) if len(total) > 1 else float("nan")
    return BoundEstimate(float(total.mean()), se, len(total), num_timesteps, exact_timesteps)


def check_eval_config(cfg: EvalConfig) -> None:
    """Refuse bad settings that need no model (``ValueError`` naming the setting)."""
    check_choice("dataset", cfg.dataset, BUILT_IN)
    if not cfg.model or not cfg.classifier:
        raise ValueError("give the model and the classifier (each a folder or Hub repo id) to evaluate with")
    for name in (cfg.sampler, *cfg.samplers):
        check_choice("sampler", name, SAMPLERS)
    check_int("num_samples", cfg.num_samples, 2, 10000)
    check_int("nll_images", cfg.nll_images, 0, 10000)
    check_int("batch_size", cfg.batch_size, 1, 10**6)
    for w in cfg.guidance_scales:
        check_guidance(w)
    check_int("per_class", cfg.per_class, 2, 10000)
    if cfg.plot and not cfg.steps_sweep:
        raise ValueError("--plot draws the sweep: give --steps_sweep too")


def _score(unet, scheduler, cfg: EvalConfig, sampler: str, steps: int, judge) -> SampleScore:
    """Quality of ``num_samples`` images from (sampler, steps), with wall time per image and NFE."""
    start = time.perf_counter()
    images = generate(
        unet, scheduler, cfg.num_samples, steps, cfg.seed, cfg.batch_size, sampler=sampler, precision=cfg.precision
    )
    seconds = time.perf_counter() - start
    return SampleScore(sampler, steps, steps, judge(images), seconds / cfg.num_samples)


def evaluate(cfg: EvalConfig) -> Evaluation:
    """Evaluate a pipeline folder or Hub repo against a dataset's test split (see the module docstring).

    Returns:
        The settings, the real images' scores (``test``, ``train_floor``), the bound (``nll``, or None), the sweep's
        sample sets and the main one (``generated``).
    """
    check_eval_config(cfg)
    model = cfg.model
    classifier_model = load_classifier(cfg.classifier)
    pipeline = load_pipeline(model)
    unet, scheduler = pipeline.unet.to(cfg.device), pipeline.scheduler
    T = scheduler.config.num_train_timesteps
    for count in (cfg.steps, *cfg.steps_sweep):
        check_int("steps", count, 1, T)
    check_int("nll_exact_timesteps", cfg.nll_exact_timesteps, 0, T - 1)
    check_int("nll_timesteps", cfg.nll_timesteps, 1, max(1, T - 1 - cfg.nll_exact_timesteps))
    size, channels = unet.config.sample_size, unet.config.in_channels
    wanted = (classifier_model.config["image_size"], classifier_model.config["in_channels"])
    if (size, channels) != wanted:
        raise ValueError(
            f"model {model} makes {channels}-channel {size}x{size} images, but the {cfg.dataset} "
            f"classifier takes {wanted[1]}-channel {wanted[0]}x{wanted[0]}; pick the matching --dataset"
        )
    test, train = load_dataset(cfg.dataset, "test"), load_dataset(cfg.dataset, "train")
    test_index = torch.randperm(len(test.images), generator=torch.Generator().manual_seed(cfg.seed))
    train_index = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(cfg.seed))
    test_view = predict(classifier_model, test.images[test_index[: cfg.num_samples]])

    def judge(images: torch.Tensor) -> Quality:
        return Quality.from_json(quality(predict(classifier_model, images), test_view))

    test_quality = replace(judge(test.images[test_index[: cfg.num_samples]]), fid=0.0)  # the reference itself
    floor = judge(train.images[train_index[: cfg.num_samples]])
    nll = nll_seconds = None
    if cfg.nll_images:
        start = time.perf_counter()
        nll = negative_log_likelihood(
            unet,
            scheduler,
            test.images[test_index[: cfg.nll_images]],
            cfg.nll_exact_timesteps,
            cfg.nll_timesteps,
            cfg.seed,
            cfg.batch_size,
        )
        nll_seconds = time.perf_counter() - start
    sweep = tuple(
        _score(unet, scheduler, cfg, sampler, count, judge)
        for sampler in dict.fromkeys(cfg.samplers or (cfg.sampler,))
        for count in dict.fromkeys(cfg.steps_sweep)
    )
    guidance, guidance_reference = _guidance(unet, scheduler, cfg, classifier_model, test, train)
    main = [e for e in sweep if (e.sampler, e.steps) == (cfg.sampler, cfg.steps)]
    settings = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in SETTINGS}
    return Evaluation(
        **settings,
        timestep_spacing=STRIDED_SPACING,
        classifier_test_accuracy=classifier_model.config.get("test_accuracy"),
        test=test_quality,
        train_floor=floor,
        nll=nll,
        sweep=sweep,
        nll_seconds=nll_seconds,
        generated=main[0] if main else _score(unet, scheduler, cfg, cfg.sampler, cfg.steps, judge),
        guidance=guidance,
        guidance_reference=guidance_reference,
    )


def _guidance(unet, scheduler, cfg: EvalConfig, classifier_model, test, train) -> tuple[tuple, dict | None]:
    """The guidance table (``ddpm_hf.evaluation.guidance_table``) of a class-conditional model, when ``guidance_scales`` asks."""
    if not cfg.guidance_scales:
        return (), None
    if not is_conditional(unet):
        raise ValueError(f"--guidance_scales needs a class-conditional model; {cfg.model} has no class embedding")
    reference, real = real_reference(classifier_model, test, train, cfg.per_class, cfg.seed)
    options = {"sampler": cfg.sampler, "precision": cfg.precision}

    def draw(labels, scale):
        images = generate(
            unet,
            scheduler,
            len(labels),
            cfg.steps,
            cfg.seed,
            cfg.batch_size,
            **options,
            class_labels=labels,
            guidance_scale=scale,
        )
        if cfg.samples_dir:
            Path(cfg.samples_dir).mkdir(parents=True, exist_ok=True)
            np.save(Path(cfg.samples_dir, f"guidance-w{scale:g}.npy"), images.numpy())
        return images

    k = num_classes(unet)
    rows = tuple(score_guidance(draw, classifier_model, reference, w, k, cfg.per_class) for w in cfg.guidance_scales)
    return rows, real


def main(argv: list[str] | None = None) -> int:
    """CLI: evaluate a DDPM pipeline; prints a markdown report to stdout and progress to stderr."""
    from .report import format_report, plot_fid_vs_nfe

    parser = build_parser(EvalConfig, "python -m ddpm_hf.evaluate", main.__doc__)
    cfg = EvalConfig(**vars(parser.parse_args(argv)))
    start = time.perf_counter()
    try:
        result = evaluate(cfg)
    except ValueError as e:
        sys.exit(input_error(parser.prog, e))
    print(format_report(result))
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if cfg.output_json:
        result.write(cfg.output_json)
    if cfg.plot:
        plot_fid_vs_nfe(result, cfg.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
