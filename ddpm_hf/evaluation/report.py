"""``ddpm_hf.evaluate``'s results (``Evaluation``) as a markdown report, the README's table of the shipped models and a
plot of classifier-FID against network evaluations."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from .result import BoundEstimate, Evaluation, Quality

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def _quality_rows(columns: list[tuple[str, Quality]]) -> list[str]:
    rows = [
        ("classifier-FID vs test ↓", lambda q: f"{q.fid:.3f}"),
        ("classifier Inception Score ↑ (max 10)", lambda q: f"{q.inception_score:.3f}"),
        ("confident share (p ≥ 0.9) ↑", lambda q: f"{q.confident_share:.3f}"),
        ("class histogram 0..9", lambda q: " ".join(str(c) for c in q.histogram)),
    ]
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    return lines + [f"| {label} | " + " | ".join(cell(q) for _, q in columns) + " |" for label, cell in rows]


def sweep_table(result: Evaluation) -> list[str]:
    """The sweep as markdown table lines: one row per (sampler, steps) under the real reference's row."""
    floor = result.train_floor
    lines = [
        "| sampler | steps (NFE) | classifier-FID ↓ | classifier IS ↑ | confident share ↑ | s / image |",
        "|---|---|---|---|---|---|",
        f"| real reference | – | {floor.fid:.3f} | {floor.inception_score:.3f} | {floor.confident_share:.3f} | – |",
    ]
    for e in result.sweep:
        lines.append(
            f"| {e.sampler} | {e.steps} | {e.quality.fid:.3f} | {e.quality.inception_score:.3f} | "
            f"{e.quality.confident_share:.3f} | {e.seconds_per_image:.3f} |"
        )
    return lines


def models_table(results: dict[str, Evaluation]) -> list[str]:
    """The default models side by side, as the README shows them: one column per model (name → its eval.json),
    rows for the bound and for each scored sampler (classifier-FID with its ratio to the real reference, IS, confident
    share), then the real reference."""
    scored = {name: {key: score.quality for key, score in r.scored().items()} for name, r in results.items()}
    lines = ["| | " + " | ".join(f"`{name}`" for name in results) + " |", "|---" * (len(results) + 1) + "|"]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(name, r) for name, r in results.items()) + " |")

    def quality(q: Quality | None, floor: Quality) -> str:
        if q is None:
            return "–"
        ratio = q.fid / floor.fid
        return f"{q.fid:.1f} ({ratio:.2f}×) / {q.inception_score:.2f} / {q.confident_share:.3f}"

    row("N samples; timesteps", lambda name, r: f"{r.num_samples}; {r.timestep_spacing or 'leading'}")
    row("NLL bound, bits/dim ↓", lambda name, r: f"{r.nll.mean:.3f} ± {r.nll.standard_error:.3f}" if r.nll else "–")
    row("bound estimator", lambda name, r: bound_estimator(r.nll) if r.nll else "–")
    keys = {key for found in scored.values() for key in found}
    for sampler, steps in sorted(keys, key=lambda k: (k[0] != "ddpm", -k[1])):
        row(
            f"{sampler} {steps} steps: FID (× ref.) / IS / confident share",
            lambda name, r, key=(sampler, steps): quality(scored[name].get(key), r.train_floor),
        )
    row("real reference: FID / IS / confident share", lambda name, r: quality(r.train_floor, r.train_floor))
    row(
        "test images: IS / confident share",
        lambda name, r: f"{r.test.inception_score:.2f} / {r.test.confident_share:.3f}",
    )
    return lines


def guidance_table(result: Evaluation) -> list[str]:
    """A class-conditional model's guidance table as markdown lines: one row per w under the real reference."""
    if not result.guidance:
        return []
    real = result.guidance_reference or {}
    n = result.guidance[0].per_class
    lines = [
        (
            f"Classifier-free guidance, {result.sampler} {result.steps} steps, {n} images per class (same seeds for "
            "every w): agreement = share the classifier assigns to the class asked for; class-FID = classifier-FID of "
            f"each class's samples against that class's test images, mean over classes; reference = {n} real training "
            "images per class."
        ),
        "",
        "| guidance w | agreement ↑ | confident share ↑ | class-FID ↓ | s / image | lowest class agreement |",
        "|---|---|---|---|---|---|",
    ]
    if real:
        lines.append(
            f"| real reference | {real['agreement']:.3f} | {real['confident_share']:.3f} | {real['class_fid']:.2f} "
            "| – | – |"
        )
    for g in result.guidance:
        worst = min(range(len(g.class_agreement)), key=g.class_agreement.__getitem__)
        lines.append(
            f"| {g.guidance_scale:g} | {g.agreement:.3f} | {g.confident_share:.3f} | {g.class_fid:.2f} | "
            f"{g.seconds_per_image:.3f} | class {worst}: {g.class_agreement[worst]:.2f} |"
        )
    return lines


def bound_estimator(nll: BoundEstimate) -> str:
    """How the bound was estimated, in words: exact small-t terms plus per-image strata, or shared strata."""
    if nll.exact_timesteps is None:
        return f"{nll.num_timesteps} stratified timesteps shared by each batch"
    return f"t ≤ {nll.exact_timesteps} exact, {nll.num_timesteps} strata above with t drawn per image"


def readme_table(models_dir: str | Path = "models") -> str:
    """The README's table of the shipped DDPMs, from each ``<models_dir>/ddpm-*/eval.json`` (for a class-conditional
    model, its unconditional samples), then the guidance table of the class-conditional ones.

    Public though only a test calls it: it is how the README's tables are made after a model is re-evaluated.
    """
    folders = sorted(p for p in Path(models_dir).glob("ddpm-*") if (p / "eval.json").is_file())
    folders.sort(key=lambda p: ("fashion" in p.name, "conditional" in p.name))  # MNIST first, then Fashion-MNIST
    results = {p.name: Evaluation.read(p / "eval.json") for p in folders}
    guided = {name: r for name, r in results.items() if r.guidance}
    return "\n".join(models_table(results) + (["", *guidance_summary(guided)] if guided else []))


def guidance_summary(results: dict[str, Evaluation]) -> list[str]:
    """The class-conditional models side by side: per guidance w, agreement / confident share / class-FID."""
    scales = sorted({g.guidance_scale for r in results.values() for g in r.guidance})
    lines = [
        "| guidance w: agreement / confident share / class-FID | "
        + " | ".join(
            f"`{name}` ({r.sampler} {r.steps}, {r.guidance[0].per_class} per class)" for name, r in results.items()
        )
        + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for w in scales:
        cells = []
        for r in results.values():
            g = next((g for g in r.guidance if g.guidance_scale == w), None)
            cells.append(f"{g.agreement:.3f} / {g.confident_share:.3f} / {g.class_fid:.1f}" if g else "–")
        lines.append(f"| w = {w:g} | " + " | ".join(cells) + " |")
    real = [r.guidance_reference for r in results.values()]
    lines.append(
        "| real training images | "
        + " | ".join(
            f"{x['agreement']:.3f} / {x['confident_share']:.3f} / {x['class_fid']:.1f}" if x else "–" for x in real
        )
        + " |"
    )
    return lines


def format_report(result: Evaluation) -> str:
    """Render ``evaluate``'s result as markdown (deterministic apart from the sweep's wall-time column).

    Returns:
        The report text.
    """
    n, steps, seed, sampler = result.num_samples, result.steps, result.seed, result.sampler
    acc = result.classifier_test_accuracy
    accuracy = f" (test accuracy {100 * acc:.2f}%)" if acc is not None else ""
    lines = [
        f"## DDPM evaluation: `{result.model}` on {result.dataset}",
        "",
        (
            f"N = {n} generated vs {n} test images (train subset of {n} for the real reference), sampler = {sampler}, "
            f"num_inference_steps = {steps}, seed = {seed}; classifier `{result.classifier}`{accuracy}."
        ),
        "",
    ]
    nll = result.nll
    if nll is not None:
        lines += [
            "| negative log-likelihood (variational bound) | mean | standard error | N test images | estimator |",
            "|---|---|---|---|---|",
            (
                f"| bits/dim ↓ | {nll.mean:.4f} | {nll.standard_error:.4f} | {nll.num_images} | "
                f"{bound_estimator(nll)} |"
            ),
            "",
        ]
    columns = [
        (f"generated ({sampler}, {steps} steps)", result.generated.quality),
        ("real reference: train subset", result.train_floor),
        ("test images", result.test),
    ]
    lines += _quality_rows(columns)
    if result.sweep:
        lines += [
            "",
            f"Quality against sampling cost (N = {n}, same seeds for every entry):",
            "",
            *sweep_table(result),
        ]
    if result.guidance:
        lines += ["", *guidance_table(result)]
    return "\n".join(lines)


def plot_fid_vs_nfe(result: Evaluation, path: str | Path, size: tuple[int, int] = (640, 420)) -> Path:
    """Draw classifier-FID (linear y) against network evaluations per image (log x), one line per sampler, with the
    real reference as a grey horizontal line; saved as PNG.

    Returns:
        ``path`` as a ``Path``.
    """
    sweep = result.sweep
    if not sweep:
        raise ValueError("the results hold no sweep to plot; run with --steps_sweep")
    width, height = size
    left, right, top, bottom = 64, 130, 30, 48
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    nfes = [e.nfe for e in sweep]
    lo_x, hi_x = math.log10(min(nfes)), math.log10(max(nfes))
    hi_x = hi_x if hi_x > lo_x else lo_x + 1
    floor = result.train_floor.fid
    top_y = max(max(e.quality.fid for e in sweep), floor) * 1.05 or 1.0

    def xy(nfe: float, fid: float) -> tuple[float, float]:
        x = left + (math.log10(nfe) - lo_x) / (hi_x - lo_x) * (width - left - right)
        return x, height - bottom - fid / top_y * (height - top - bottom)

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for k in range(5):
        fid = top_y * k / 4
        y = xy(min(nfes), fid)[1]
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((4, y - 6), f"{fid:.2f}", fill="black")
    for nfe in sorted(set(nfes)):
        x = xy(nfe, 0)[0]
        draw.line((x, height - bottom, x, height - bottom + 4), fill="black")
        draw.text((x - 8, height - bottom + 8), str(nfe), fill="black")
    draw.text((left, height - 18), "network evaluations per image (log scale)", fill="black")
    draw.text((left, 8), f"classifier-FID vs NFE on {result.dataset} (N = {result.num_samples})", fill="black")
    y_floor = xy(min(nfes), floor)[1]
    draw.line((left, y_floor, width - right, y_floor), fill=(150, 150, 150), width=2)
    draw.text((width - right + 8, y_floor - 6), "real reference", fill=(110, 110, 110))
    for i, sampler in enumerate(dict.fromkeys(e.sampler for e in sweep)):
        colour = COLOURS[i % len(COLOURS)]
        points = [xy(e.nfe, e.quality.fid) for e in sorted(sweep, key=lambda e: e.nfe) if e.sampler == sampler]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((width - right + 8, top + 16 * i), sampler, fill=colour)
    image.save(path)
    return Path(path)
