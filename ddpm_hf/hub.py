"""The model card and the push to the Hugging Face Hub (huggingface_hub's ``ModelCard``, ``ModelCardData``,
``EvalResult``, ``create_repo``, ``upload_folder``). The token is passed to the client and nowhere else: never printed,
logged or written.

A card is rendered by code from two JSON files, never from pasted numbers: ``training_info.json`` (the recipe, images
seen, wall time, hardware; written by training) and the results of ``python -m ddpm_hf.evaluate --output_json``.
The results fill both the card's table and the Hub's ``model-index`` metadata. Rebuild a card with
``python -m ddpm_hf.hub card FOLDER --eval_json eval.json [--history "..."]``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData, create_repo, repo_info, upload_folder, whoami
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from .cli import build_commands, input_error, setting
from .data import BUILT_IN
from .evaluation.report import bound_estimator, guidance_table, sweep_table
from .evaluation.result import Evaluation

TRAINING_INFO = "training_info.json"
SAMPLE_GRID = "samples.png"  # 16 samples with seed 0, written at the end of training
SWEEP_PLOT = "fid-vs-nfe.png"  # ``python -m ddpm_hf.evaluate --plot``'s picture, shown on the card when present
# What a push uploads: the pipeline, its card and pictures, nothing else (checkpoints, logs, temporary folders stay).
PUSH_ALLOW = [
    "model_index.json",
    "unet/*",
    "scheduler/*",
    "README.md",
    SAMPLE_GRID,
    SWEEP_PLOT,
    TRAINING_INFO,
    "eval.json",
]
PATH_SETTINGS = {
    "output_dir",
    "train_data_dir",
    "model_config",
    "resume_from_checkpoint",
    "pretrained_model_name_or_path",
    "eval_classifier",
}
TASK = "unconditional-image-generation"
# (Quality field, metric type on the Hub, name in the card)
METRICS = [
    ("fid", "fid", "classifier-FID"),
    ("inception_score", "inception_score", "classifier Inception Score"),
    ("confident_share", "confident_share", "confident share (p ≥ 0.9)"),
]

USE = """## Use

```python
import torch
from diffusers import DiffusionPipeline

# the scheduler's code ships in scheduler/scheduling_ddpm_hf.py: no extra package needed
pipe = DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)
images = pipe(batch_size=16, num_inference_steps=1000, generator=torch.manual_seed(0)).images
```

With the `ddpm_hf` package installed, no remote code runs: `ddpm_hf.load_pipeline("{repo}")`.
"""


def card_recipe(settings: dict) -> dict:
    """The training settings a public card shows: no token, no ``None``, folders by name only."""
    recipe = {k: v for k, v in settings.items() if k != "hub_token" and v is not None}
    for key in PATH_SETTINGS & recipe.keys():
        recipe[key] = Path(str(recipe[key])).name
    return recipe


def settings_table(settings: dict) -> list[str]:
    """A card's table of settings, one row per key: strings as they are, other values as JSON."""
    rows = [f"| {key} | {value if isinstance(value, str) else json.dumps(value)} |" for key, value in settings.items()]
    return ["| setting | value |", "|---|---|", *rows]


def eval_metrics(results: Evaluation) -> list[tuple[str, str, str, float]]:
    """(metric type, card name, config, value) of the headline numbers of an ``evaluate`` result."""
    settings = f"N={results.num_samples}, {results.sampler} {results.steps} steps"
    generated = results.generated.quality
    rows = [(hub, f"{name} ({settings})", key, getattr(generated, key)) for key, hub, name in METRICS]
    if results.nll:
        rows.append(("bits_per_dim", "NLL bound, bits/dim (test)", "nll", results.nll.mean))
    return [(hub, name, key, float(value)) for hub, name, key, value in rows]


def _results_section(results: Evaluation, plot: str | None) -> str:
    floor = results.train_floor
    lines = [
        "## Evaluation",
        "",
        (
            f"`python -m ddpm_hf.evaluate` on {results.dataset} (classifier "
            f"`{Path(results.classifier).name}`, seed {results.seed}); the real reference scores {results.num_samples}"
            " training images against the test images."
        ),
        "",
        "| metric | this model | real reference |",
        "|---|---|---|",
    ]
    for _, name, key, value in eval_metrics(results):
        if key == "nll":  # the bound has no real reference; its standard error stands beside it
            nll = results.nll
            spread = (
                f"± {nll.standard_error:.4f} (standard error; {nll.num_images} test images, {bound_estimator(nll)})"
            )
            lines.append(f"| {name} | {value:.4f} {spread} | |")
        else:
            lines.append(f"| {name} | {value:.4f} | {getattr(floor, key):.4f} |")
    if results.sweep:
        lines += [
            "",
            (
                f"Quality against sampling cost, the same {results.num_samples} seeds for every sampler and step"
                " count (s / image: wall time on the evaluating machine):"
            ),
            "",
            *sweep_table(results),
        ]
        if plot:
            lines += ["", f"![classifier-FID against network evaluations]({plot})"]
    if results.guidance:
        lines += ["", *guidance_table(results)]
    return "\n".join(lines) + "\n"


def _class_list(names: list[str]) -> str:
    """ "0 = T-shirt/top, 1 = Trouser, …", or "0 to 9" when each class is named by its index."""
    if names == [str(i) for i in range(len(names))]:
        return f"named by their index, 0 to {len(names) - 1}"
    return ", ".join(f"{i} = {name}" for i, name in enumerate(names))


def conditioning_section(conditioning: dict, repo: str) -> list[str]:
    """A class-conditional model's classes, label dropout and default guidance, with the call that uses them."""
    names = conditioning["class_names"]
    w = conditioning["guidance_scale"]
    return [
        "## Classes and guidance",
        "",
        (
            f"Class-conditional with classifier-free guidance (Ho & Salimans 2022): {len(names)} classes, "
            f"{_class_list(names)}. During training "
            f"{conditioning['label_dropout']:.0%} of the labels were dropped to ∅ (index {len(names)}), so the same "
            "network is also the unconditional model. Each step uses ε(x, ∅) + w (ε(x, y) − ε(x, ∅)), both terms "
            f"from one batched forward; the default w is {w:g} (0: unconditional, 1: plain conditional)."
        ),
        "",
        "```python",
        "from diffusers import DiffusionPipeline",
        "",
        "# the pipeline's code ships in pipeline_ddpm_guided.py",
        f'pipe = DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)',
        (
            f"images = pipe(class_labels=[{', '.join(str(i) for i in range(min(len(names), 4)))}], "
            f"guidance_scale={w:g}, num_inference_steps=50).images"
        ),
        "```",
        "",
    ]


def render_card(
    info: dict,
    repo_id: str | None = None,
    grid: str | None = SAMPLE_GRID,
    eval_results: Evaluation | None = None,
    history: list[str] | None = None,
    plot: str | None = None,
) -> ModelCard:
    """The card for a pipeline folder from ``training_info.json``'s content and ``evaluate``'s results.

    Args:
        info: ``{"recipe": {...}, "dataset": name, "dataset_id": Hub id or None, "license": ..., "run": {...}}``.
        repo_id: the Hub repo the card is for (names the model in the metadata and the code snippet).
        grid: a sample grid file in the folder, or None.
        eval_results: ``ddpm_hf.evaluate``'s result (``Evaluation.read`` of its ``--output_json``), or None.
        history: lines on how the model came to be (e.g. a warm start from another run).
        plot: a picture of classifier-FID against network evaluations in the folder, or None.

    Returns:
        The ``ModelCard`` (YAML metadata with ``model-index`` when there are results).
    """
    dataset = info.get("dataset", "unknown")
    dataset_id = BUILT_IN[dataset].hub_id if dataset in BUILT_IN else info.get("dataset_id")
    name = repo_id or Path(str(info.get("recipe", {}).get("output_dir", "ddpm"))).name
    results = []
    for hub_type, metric_name, _, value in eval_metrics(eval_results) if eval_results else []:
        results.append(
            EvalResult(
                task_type=TASK,
                dataset_type=dataset_id or dataset,
                dataset_name=dataset,
                metric_type=hub_type,
                metric_name=metric_name,
                metric_value=round(value, 4),
            )
        )
    license_id = info.get("license", "unknown")
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag=TASK,
        license=license_id if license_id != "unknown" else "other",
        datasets=[dataset_id] if dataset_id else None,
        tags=["ddpm", "diffusers", TASK, "ddpm-hf", dataset]
        + (["class-conditional"] if info.get("conditioning") else []),
        model_name=name if results else None,
        eval_results=results or None,
    )
    parts = [
        f"# {name}",
        "",
        (
            "A DDPM (Ho et al. 2020, [arXiv 2006.11239](https://arxiv.org/abs/2006.11239)) "
            f"trained with ddpm-hf's `train_accelerate.py` on {dataset}."
        ),
        "",
    ]
    if grid:
        parts += [f"![samples]({grid})", ""]
    parts.append(USE.format(repo=repo_id or f"path/to/{name}"))
    if info.get("conditioning"):
        parts += conditioning_section(info["conditioning"], repo_id or f"path/to/{name}")
    if history:
        parts += ["## History", "", *[f"- {line}" for line in history], ""]
    run = info.get("run", {})
    if info.get("recipe") or run:
        parts += ["## Training", "", *settings_table({**info.get("recipe", {}), **run}), ""]
    if eval_results:
        parts.append(_results_section(eval_results, plot))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(parts))


def write_model_card(folder: str | Path, info: dict, **options) -> Path:
    """Render ``render_card(info, **options)`` (``repo_id``, ``grid``, ``eval_results``, ``history``, ``plot``) into
    ``folder/README.md``; returns its path."""
    path = Path(folder, "README.md")
    render_card(info, **options).save(path)
    return path


def check_push_access(repo_id: str, token: str | None, private: bool = False) -> str:
    """Check before training that a push to ``repo_id`` can succeed: the repo id's form, the token (``whoami``),
    that it may write (not a read-only token; the repo's namespace is the user's or one of their organisations'), and
    that ``private`` does not ask for a private repo where a public one exists (``create_repo`` would keep it public).

    A fine-grained token's per-repo permissions are not read here; a push it may not make fails at the end.

    Args:
        repo_id: ``namespace/name``, or ``name`` for the token owner's namespace.
        token: the Hub token, or None for HF_TOKEN / the cached login.
        private: whether the repo is meant to be private (``--hub_private_repo``).

    Returns:
        The full repo id.

    Raises:
        ValueError: one line naming the flag or the token and what is wrong.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"--hub_model_id {repo_id!r} is not a valid repo id: {_first_line(e)}") from None
    try:
        user = whoami(token=token)
    except HfHubHTTPError as e:
        raise ValueError(f"--push_to_hub: the Hub refused the token ({_first_line(e)})") from None
    except OSError as e:
        raise ValueError(f"--push_to_hub: could not reach the Hub to check the token ({_first_line(e)})") from None
    if user.get("auth", {}).get("accessToken", {}).get("role") == "read":
        raise ValueError(f"--push_to_hub: the token of {user['name']} is read-only; use one with write access")
    namespace, _, name = repo_id.rpartition("/")
    namespace = namespace or user["name"]
    writable = [user["name"], *(org["name"] for org in user.get("orgs", []))]
    if namespace not in writable:
        raise ValueError(
            f"--hub_model_id {repo_id}: the token of {user['name']} cannot write to {namespace!r} "
            f"(it may write to {', '.join(writable)})"
        )
    full_id = f"{namespace}/{name}"
    try:
        existing = repo_info(full_id, token=token)
    except RepositoryNotFoundError:
        return full_id  # created by the push
    except (HfHubHTTPError, OSError) as e:
        raise ValueError(f"--hub_model_id {full_id}: could not read the repo ({_first_line(e)})") from None
    if private and not existing.private:
        raise ValueError(
            f"--hub_private_repo: {full_id} exists and is public; make it private on the Hub or drop the flag"
        )
    return full_id


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def push_to_hub(out: Path, repo_id: str, token: str | None, private: bool = False) -> str:
    """Create ``repo_id`` if needed and upload the pipeline files and card (``PUSH_ALLOW``); returns the commit URL."""
    create_repo(repo_id, token=token, private=private, exist_ok=True)
    commit = upload_folder(
        repo_id=repo_id,
        folder_path=out,
        token=token,
        allow_patterns=PUSH_ALLOW,
        commit_message="Upload DDPM pipeline trained with ddpm-hf",
    )
    return str(commit)


@dataclass
class CardSettings:
    """``python -m ddpm_hf.hub card``'s arguments."""

    folder: str = setting(None, "the pipeline folder", positional=True)
    eval_json: str | None = setting(None, "results written by `python -m ddpm_hf.evaluate --output_json`")
    history: list[str] = setting(help="a line of the model's history", default_factory=list)  # noqa: RUF009 (a factory)
    repo_id: str | None = setting(None, "the Hub repo the card is for")


def render_folder_card(settings: CardSettings) -> Path:
    """Rewrite ``settings.folder``/README.md from its ``training_info.json``, the evaluation JSON and the pictures
    present; returns the card's path."""
    folder = Path(settings.folder)
    info = json.loads((folder / TRAINING_INFO).read_text()) if (folder / TRAINING_INFO).is_file() else {}
    results = Evaluation.read(settings.eval_json) if settings.eval_json else None
    history = settings.history or (results.history if results else ()) or info.get("history")
    grid = SAMPLE_GRID if (folder / SAMPLE_GRID).is_file() else None
    plot = SWEEP_PLOT if (folder / SWEEP_PLOT).is_file() else None
    return write_model_card(
        folder, info, repo_id=settings.repo_id, grid=grid, eval_results=results, history=history, plot=plot
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``card FOLDER --eval_json FILE [--history TEXT ...] [--repo_id ID]`` rewrites FOLDER/README.md."""
    card = (CardSettings, "render FOLDER/README.md from training_info.json and evaluation JSON")
    parser = build_commands("python -m ddpm_hf.hub", "Model cards for pipeline folders.", {"card": card})
    args = vars(parser.parse_args(argv))
    del args["command"]
    try:
        path = render_folder_card(CardSettings(**args))
    except (OSError, ValueError, KeyError) as e:
        return input_error(parser.prog, e)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
