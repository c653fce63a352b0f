"""A small CNN image classifier used to judge samples (``ddpm_hf.evaluate``).

Sample quality metrics on MNIST-like data need a network that knows the classes; an ImageNet Inception network
neither fits 28×28 grayscale images nor runs cheaply on a CPU. This module trains its own classifier on the
dataset's training split and stores it through ``huggingface_hub.PyTorchModelHubMixin`` (``save_pretrained`` /
``from_pretrained``: ``model.safetensors`` plus ``config.json`` of the constructor's arguments, never a pickle):

    x ∈ [-1, 1]^{C×H×W} → 3 × (3×3 conv, BatchNorm, ReLU; 2×2 max-pool after the first two)
      → flatten → linear → ReLU = ``features(x)`` (``feature_dim`` = 128, the penultimate layer)
      → linear → ``forward(x)`` (logits over ``num_classes``)

``features`` is the space of the classifier-FID; softmax(``forward``) gives the p(y | x) of the classifier
Inception Score. Reproduce the shipped model with ``python -m ddpm_hf.classifier --dataset mnist --out
models/mnist-classifier``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import EvalResult, ModelCard, ModelCardData, PyTorchModelHubMixin, snapshot_download
from safetensors import SafetensorError
from torch import nn

from ..cli import build_parser, input_error, setting
from ..data import BUILT_IN, load_dataset, to_model_range
from ..hub import settings_table
from ..pipeline_io import is_local
from ..validate import check_choice

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class Classifier(nn.Module, PyTorchModelHubMixin, library_name="ddpm-hf", tags=["image-classification"]):
    """CNN for small square images in [-1, 1]; ``save_pretrained`` / ``from_pretrained`` come from the Hub mixin.

    Args:
        in_channels: image channels.
        image_size: image side; must be divisible by 4 (two 2×2 poolings).
        widths: output channels of the three conv layers.
        feature_dim: width of the penultimate layer (the feature space of ``features``).
        num_classes: number of classes.
        dataset: the dataset it was trained on (recorded in ``config.json``).
        test_accuracy: its measured test accuracy (recorded in ``config.json``).
        train_steps: optimisation steps it was trained for (recorded).
        seed: the training seed (recorded).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        widths: tuple[int, ...] = (32, 64, 128),
        feature_dim: int = 128,
        num_classes: int = 10,
        dataset: str | None = None,
        test_accuracy: float | None = None,
        train_steps: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if image_size % 4 or len(widths) != 3:
            raise ValueError(f"image_size must be divisible by 4 and widths 3 long, got {image_size}, {widths}")
        self.config = {
            "in_channels": in_channels,
            "image_size": image_size,
            "widths": list(widths),
            "feature_dim": feature_dim,
            "num_classes": num_classes,
            "dataset": dataset,
            "test_accuracy": test_accuracy,
            "train_steps": train_steps,
            "seed": seed,
        }
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.penultimate = nn.Linear(channels * (image_size // 4) ** 2, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations.

        Args:
            x: (B, C, H, W) images in [-1, 1].

        Returns:
            (B, feature_dim) non-negative features.
        """
        return F.relu(self.penultimate(self.body(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits.

        Args:
            x: (B, C, H, W) images in [-1, 1].

        Returns:
            (B, num_classes) logits.
        """
        return self.head(self.features(x))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in each direction, filling with the background (-1).

    Args:
        x: (B, C, H, W) images in [-1, 1].
        max_shift: largest shift in pixels.
        generator: CPU generator for the shifts.

    Returns:
        (B, C, H, W) shifted images.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b, 1), generator=generator)
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)  # (B, H), (B, W)
    batch = torch.arange(b)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, H, W, C) → (B, C, H, W)


@dataclass
class ClassifierConfig:
    """What ``python -m ddpm_hf.classifier`` trains and where it writes; its defaults are ``train_classifier``'s."""

    dataset: str = setting("mnist", "the training split to learn: " + ", ".join(BUILT_IN))
    out: str = setting(None, "the folder to write model.safetensors, config.json and README.md to", required=True)
    steps: int = setting(1000, "optimisation steps (1000 at batch 128 ≈ 2.1 epochs of 60k images)")
    seed: int = setting(0, "seeds the initial weights, the batch order and the shifts")
    batch_size: int = setting(128, "images per step")
    learning_rate: float = setting(2e-3, "Adam's initial learning rate, decayed to 0 along a half cosine")
    max_shift: int = setting(2, "random translation range in pixels (0: no augmentation)")


def train_classifier(
    dataset_name: str,
    steps: int = ClassifierConfig.steps,
    seed: int = ClassifierConfig.seed,
    batch_size: int = ClassifierConfig.batch_size,
    learning_rate: float = ClassifierConfig.learning_rate,
    max_shift: int = ClassifierConfig.max_shift,
    log_every: int = 100,
) -> Classifier:
    """Train a ``Classifier`` on a dataset's training split with Adam, a cosine-decayed learning rate and random
    shifts.

    Args:
        dataset_name: "mnist" or "fashion-mnist" (see ``ddpm_hf.data.load_dataset``).
        steps: optimisation steps (1000 at batch 128 ≈ 2.1 epochs of the 60k images).
        seed: seeds the initial weights, the batch order and the shifts.
        batch_size: images per step.
        learning_rate: Adam's initial learning rate, decayed to 0 along a half cosine.
        max_shift: random translation range in pixels (0 turns augmentation off).
        log_every: print the running loss to stderr every this many steps (0: never).

    Returns:
        The trained classifier in eval mode, with ``config["dataset"]`` set.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    train = load_dataset(dataset_name, "train")
    images, labels = to_model_range(train.images), train.labels
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Classifier(
        in_channels=images.shape[1],
        image_size=images.shape[-1],
        num_classes=int(labels.max()) + 1,
        dataset=dataset_name,
        train_steps=steps,
        seed=seed,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    order, position, running = torch.randperm(len(images), generator=generator), 0, 0.0
    model.train()
    for step in range(1, steps + 1):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        index = order[position : position + batch_size]
        position += batch_size
        x = random_shift(images[index], max_shift, generator) if max_shift else images[index]
        loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        if log_every and step % log_every == 0:
            print(f"step {step}/{steps} loss {running / log_every:.4f}", file=sys.stderr, flush=True)
            running = 0.0
    return model.eval()


@torch.inference_mode()
def predict(model: Classifier, images_uint8: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities p(y | x) and penultimate features of uint8 images.

    Args:
        model: the classifier (put in eval mode here).
        images_uint8: (N, C, H, W) uint8 images.
        batch_size: images per forward pass.

    Returns:
        (N, num_classes) probabilities and (N, feature_dim) features, float64 numpy arrays.
    """
    model.eval()
    probs, features = [], []
    for start in range(0, len(images_uint8), batch_size):
        f = model.features(to_model_range(images_uint8[start : start + batch_size]))
        probs.append(torch.softmax(model.head(f).double(), 1).numpy())
        features.append(f.double().numpy())
    return np.concatenate(probs), np.concatenate(features)


def accuracy(model: Classifier, images_uint8: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of uint8 images whose arg-max class equals the label."""
    return float((predict(model, images_uint8)[0].argmax(1) == labels.numpy()).mean())


def load_classifier(source: str | os.PathLike, **hub_kwargs) -> Classifier:
    """Load a classifier written by ``Classifier.save_pretrained`` (safetensors only; nothing is unpickled).

    Args:
        source: a local folder holding ``model.safetensors`` and ``config.json``, or a Hub repo id (those two files
            are downloaded, nothing else).
        **hub_kwargs: for a repo id, passed to ``huggingface_hub.snapshot_download`` (``revision``, ``token``, ...).

    Returns:
        The classifier in eval mode; ``model.config`` holds its ``config.json``.

    Raises:
        ValueError: the folder, the repo or a file is missing, the config is not JSON, or the weights do not fit it.
    """
    path = Path(source).expanduser()
    if not is_local(str(source)):
        try:
            path = Path(snapshot_download(str(source), allow_patterns=[WEIGHTS_NAME, CONFIG_NAME], **hub_kwargs))
        except (OSError, ValueError) as e:  # no such repo, no access, offline, or not a repo id
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(f"classifier {source} (local folder or Hub repo) could not be loaded: {reason}") from None
    if not (path / WEIGHTS_NAME).is_file() or not (path / CONFIG_NAME).is_file():
        raise ValueError(
            f"classifier {path}: needs {WEIGHTS_NAME} and {CONFIG_NAME} (train one with "
            "`python -m ddpm_hf.classifier --dataset DATASET --out FOLDER`)"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the mixin announces local loads on stdout
            model = Classifier.from_pretrained(path, strict=True)
    except json.JSONDecodeError as e:
        raise ValueError(f"classifier {path / CONFIG_NAME}: not valid JSON ({e})") from None
    except (SafetensorError, RuntimeError, OSError, TypeError) as e:  # a corrupt file; a size, key or type mismatch
        raise ValueError(f"classifier {path}: weights do not load ({str(e).splitlines()[0]})") from None
    return model.eval()


def model_card(cfg: ClassifierConfig, model: Classifier, seconds: float, command: str) -> ModelCard:
    """The README.md written beside the weights: what the classifier is for, its settings and architecture (from
    ``cfg`` and ``model.config``), and its test accuracy, also as Hub metadata."""
    spec, accuracy = BUILT_IN[cfg.dataset], model.config["test_accuracy"]
    data = ModelCardData(
        library_name="ddpm-hf",
        pipeline_tag="image-classification",
        license=spec.license,
        datasets=[spec.hub_id],
        tags=["image-classification", "ddpm-hf", cfg.dataset],
        model_name=f"{cfg.dataset}-classifier",
        eval_results=[
            EvalResult(
                task_type="image-classification",
                dataset_type=spec.hub_id,
                dataset_name=spec.title,
                dataset_split="test",
                metric_type="accuracy",
                metric_value=accuracy,
            )
        ],
    )
    training = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"}
    architecture = {k: model.config[k] for k in ("in_channels", "image_size", "widths", "feature_dim", "num_classes")}
    text = f"""# {spec.title} classifier for sample evaluation

A small CNN (`ddpm_hf.classifier.Classifier`: 3 conv layers with BatchNorm, a {model.config["feature_dim"]}-d
penultimate layer, a linear head) that `python -m ddpm_hf.evaluate` uses for the classifier Inception Score, the
confident share and the classifier-FID (Fréchet distance in the penultimate feature space).

Test accuracy (all {spec.title} test images): **{100 * accuracy:.2f}%**, after {seconds:.0f} s of training on the
{spec.title} training split with `ddpm_hf.classifier.train_classifier`: Adam with a cosine-decayed learning rate
and random shifts. Command: `{command}`

{chr(10).join(settings_table({**training, **architecture}))}

Load with `ddpm_hf.classifier.load_classifier(folder or Hub repo id)`. Data license: {spec.license}.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")


def main(argv: list[str] | None = None) -> int:
    """CLI: train a classifier, measure its test accuracy and write weights, config and README to ``--out``."""
    parser = build_parser(ClassifierConfig, "python -m ddpm_hf.classifier", main.__doc__)
    cfg = ClassifierConfig(**vars(parser.parse_args(argv)))
    training = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dataset", "out")}
    try:
        check_choice("--dataset", cfg.dataset, BUILT_IN)
        start = time.perf_counter()
        model = train_classifier(cfg.dataset, **training)
        seconds = time.perf_counter() - start
        test = load_dataset(cfg.dataset, "test")
    except ValueError as e:  # DataError is a ValueError
        return input_error(parser.prog, e)
    model.config["test_accuracy"] = round(accuracy(model, test.images, test.labels), 4)
    command = "python -m ddpm_hf.classifier " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model_card(cfg, model, seconds, command).save(out / "README.md")
    model.save_pretrained(out, config=model.config)
    print(f"test accuracy {100 * model.config['test_accuracy']:.2f}% after {seconds:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
