"""The models a Space offers: name → pipeline folder or Hub repo id, loaded on first use and shared by requests.

Each model has its own lock, so a slow load (an extra Hub model) holds up only requests for that model; a load that
failed is remembered for ``RETRY_SECONDS`` and answered at once with the same message. With ``DDPM_HF_COMPILE=1`` a
loaded UNet is compiled in a background thread (``ddpm_hf.speed.compile_in_background``); its chains run eager until
the compiled network is ready.
"""

import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from huggingface_hub import ModelCard

from .. import data, speed
from ..pipeline_io import load_pipeline
from . import costs, limits, paper

RETRY_SECONDS = 600.0


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Model:
    """A loaded model: its pipeline, the built-in dataset it was trained on (from its card), and its image shape."""

    name: str
    pipe: object
    dataset: str | None
    cost: costs.Cost | None = None  # a reverse step's seconds here, measured when loaded

    @property
    def size(self) -> int:
        size = self.pipe.unet.config.sample_size
        return size if isinstance(size, int) else size[0]

    @property
    def channels(self) -> int:
        return self.pipe.unet.config.in_channels

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def class_names(self) -> list[str] | None:
        """A class-conditional model's class names (its pipeline's config); None for an unconditional model."""
        return list(self.pipe.config.class_names) if getattr(self.pipe.config, "class_names", None) else None

    @property
    def guidance_scale(self) -> float | None:
        """A class-conditional model's default guidance w; None for an unconditional model."""
        return float(self.pipe.config.guidance_scale) if self.class_names else None

    def class_request(self, choice: str | None, num_images: int) -> tuple[tuple | None, int, int | None]:
        """The class of each image for a class choice: (labels or None, number of images, grid columns or None).

        "any" (or an unconditional model): no labels; a class name: that class for every image; "all classes":
        one row per class of ``ceil(num_images / 4)`` images each.
        """
        names = self.class_names
        if not names or choice in (None, "", limits.ANY_CLASS):
            return None, num_images, None
        if choice == limits.ALL_CLASSES:
            per_row = -(-num_images // 4)
            return tuple(k for k in range(len(names)) for _ in range(per_row)), per_row * len(names), per_row
        if choice not in names:
            raise ValueError(
                f"Class must be one of {limits.ANY_CLASS!r}, {limits.ALL_CLASSES!r} or {', '.join(names)}; "
                f"got {choice!r}"
            )
        return (names.index(choice),) * num_images, num_images, None

    @property
    def paper_model(self) -> paper.PaperModel | None:
        """The paper's model this is (a ``google/ddpm-*`` repo), or None."""
        return paper.BY_REPO.get(self.name)

    def test_sample(self) -> torch.Tensor:
        """uint8 (N, C, H, W) test images for this model: its built-in dataset's (``test_images``), or for one of the
        paper's models those it names on the Hub (CIFAR-10's, fetched on first use).

        Raises:
            ValueError: the model has none here (no built-in dataset in its card; one of the paper's models without
                test images, or whose images the Hub did not give): the message asks for an upload.
        """
        if self.dataset is not None:
            return test_images(self.dataset)
        if self.paper_model:
            return self.paper_model.fetch_test_images()
        raise ValueError(f"model {self.name!r} names no built-in dataset in its card: upload an image instead")

    @property
    def grey(self) -> bool:
        """A one-channel model of white-on-black pictures (the built-in datasets): drawn on a black canvas."""
        return self.channels == 1 and self.dataset in data.BUILT_IN

    def ran(self, forwards: int, steps: int, seconds: float) -> None:
        """A chain of ``steps`` steps on ``forwards`` images took ``seconds``: the cost follows it down
        (``costs.Cost.after_run``)."""
        if self.cost is not None and steps > 0:
            self.cost = self.cost.after_run(forwards, steps, seconds)

    def default_request(self) -> costs.Sized:
        """The Sample tab's starting request, sized to this model's measured cost."""
        return costs.default_request(self.cost, guided=bool(self.class_names))

    def describe(self) -> str:
        n = sum(p.numel() for p in self.pipe.unet.parameters())
        cfg = self.scheduler.config
        trained = f", trained on {data.BUILT_IN[self.dataset].title}" if self.dataset else ""
        if self.paper_model:
            trained = f", the paper's {self.paper_model.title} model"
        conditional = f", class-conditional ({len(self.class_names)} classes)" if self.class_names else ""
        return (
            f"{self.size}×{self.size}×{self.channels} images{trained}{conditional}; UNet of {n / 1e6:.2f}M parameters; "
            f"T = {cfg.num_train_timesteps}, {cfg.beta_schedule} β from {cfg.beta_start:g} to {cfg.beta_end:g}; "
            f"on {device().type}"
            + (f", the network running in {ran.replace('_', '-')}" if (ran := speed.describe(self.pipe.unet)) else "")
            + (f"; one step of one image takes {self.cost.step_seconds(1):.2f} s here" if self.cost else "")
        )


def card_dataset(source: str) -> str | None:
    """The built-in dataset ("mnist", "fashion-mnist") named in a model card's ``datasets:`` metadata, if any."""
    path = Path(source, "README.md")
    try:
        card = ModelCard.load(path) if path.is_file() else ModelCard.load(source)  # a Hub repo id: its card
    except Exception:  # noqa: BLE001 - no card, no network, bad YAML: the model still works, without test images
        return None
    names = {spec.hub_id: name for name, spec in data.BUILT_IN.items()}
    for dataset in card.data.datasets or []:
        if dataset in names or dataset in data.BUILT_IN:
            return names.get(dataset, dataset)
    return None


@cache
def test_images(dataset: str) -> torch.Tensor:
    """uint8 (N, C, H, W) test images of a built-in dataset (MNIST: the 256 that ship with the package at least)."""
    return data.load_test_sample(dataset).images


class Registry:
    """Models by name; ``get`` loads on first use. Clients name models, never paths. A model ``refuse``d (one of the
    paper's that the Hub did not answer for) says why instead of loading."""

    def __init__(self, sources: dict[str, str]):
        self.sources = dict(sources)
        self.refused: dict[str, str] = {}  # name → why it cannot be had here
        self._models: dict[str, Model] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._locks = {name: threading.Lock() for name in self.sources}

    def refuse(self, reasons: dict[str, str]) -> None:
        self.refused.update({name: why for name, why in reasons.items() if name in self.sources})

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) of each model offered, for the picker: the paper's with what they are, or that the Hub did
        not answer for them."""
        labels = {m.repo_id: m.label(m.repo_id in self.refused) for m in paper.PAPER_MODELS}
        return [(labels.get(name, name), name) for name in self.sources]

    def loaded(self, name) -> bool:
        return name in self._models

    def get(self, name) -> Model:
        if name not in self.sources:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(self.sources) or '(none)'}")
        if name in self._models:
            return self._models[name]
        with self._locks[name]:
            if name in self._models:
                return self._models[name]
            if name in self.refused:
                raise ValueError(f"{name} cannot be loaded: {self.refused[name]}")
            failed = self._failed.get(name)
            if failed and time.monotonic() - failed[0] < RETRY_SECONDS:
                raise ValueError(failed[1])
            source = self.sources[name]
            try:
                pipe = load_pipeline(source)
            except ValueError as e:  # its message names the server-side path: show the model's name instead
                message = str(e).replace(source, repr(name))
                self._failed[name] = (time.monotonic(), message)
                raise ValueError(message) from None
            pipe.unet.to(device())
            try:
                cost = costs.measure(pipe.unet, pipe.scheduler)
            except RuntimeError:  # a device that only runs inside a request (ZeroGPU): the app's fixed limits hold
                cost = None
            if speed.compile_requested():
                speed.compile_in_background(pipe.unet, limits.DEFAULT_IMAGES)
            self._models[name] = Model(name, pipe, card_dataset(source), cost)
            return self._models[name]
