"""The paper's own trained models, as diffusers conversions on the Hub, offered by the Space where the Hub answers.

Ho et al. (2020) released a CIFAR-10 model (35.7M parameters, 32×32) and 256×256 models of LSUN church, bedroom and
cat and of CelebA-HQ (about 114M parameters each); Google's conversions to diffusers sit on the Hub under the ids
below. The Space lists those that can answer on its hardware (``offered``), none with ``HF_HUB_OFFLINE=1``; each
loads on first use. ``probe`` asks the Hub, in a background thread, which it can reach; start-up never waits for it,
and an unreachable model then says why instead of loading. The download sizes are the float32 weights (4 bytes a
parameter). The CIFAR-10 model's test images are CIFAR-10's own test split, from the dataset repo ``uoft-cs/cifar10``
(``hub_images``), fetched the first time a tab asks for one.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from huggingface_hub import HfApi, constants

from . import hub_images

logger = logging.getLogger(__name__)

PROBE_SECONDS = 5.0  # per request to the Hub


@dataclass(frozen=True)
class PaperModel:
    """One of the paper's models: its repo id, what it draws (one, many), its download in MB, its image side and where
    its test images are on the Hub (dataset repo, parquet file), if anywhere."""

    repo_id: str
    title: str
    nouns: tuple[str, str]
    megabytes: int
    size: int
    test_images: tuple[str, str] | None = None

    def label(self, unreachable: bool = False) -> str:
        """The picker's label: the repo id, then what it is (or that the Hub cannot be reached for it)."""
        what = "not reachable here" if unreachable else f"the paper's {self.title} model, {self.size}×{self.size}"
        return f"{self.repo_id} ({what})"

    def downloading(self) -> str:
        return f"Loading the paper's {self.title} model from the Hub ({self.megabytes} MB to download the first time)…"

    def fetch_test_images(self) -> torch.Tensor:
        """uint8 (N, 3, size, size) test images of this model's dataset, from the Hub (``hub_images``).

        Raises:
            ValueError: the model has none, or they could not be fetched or read (no network, Hub off, a bad file):
                the message says so and asks for an upload.
        """
        if self.test_images is None:
            raise ValueError(f"the paper's {self.title} model has no test images here: upload an image instead")
        repo_id, filename = self.test_images
        try:
            return hub_images.hub_test_images(repo_id, filename)
        except Exception as e:  # noqa: BLE001 - no network, HF_HUB_OFFLINE, a 404, a bad file: the upload still works
            logger.warning("%s test images from %s/%s: %s", self.title, repo_id, filename, e)
            raise ValueError(
                f"the {self.title} test images could not be fetched from the Hub ({repo_id}: {type(e).__name__}): "
                "upload an image instead"
            ) from None


PAPER_MODELS = (
    PaperModel(
        "google/ddpm-cifar10-32",
        "CIFAR-10",
        ("picture", "pictures"),
        143,
        32,
        test_images=("uoft-cs/cifar10", "plain_text/test-00000-of-00001.parquet"),  # 23.9 MB
    ),
    PaperModel("google/ddpm-ema-church-256", "LSUN church", ("church", "churches"), 455, 256),
    PaperModel("google/ddpm-ema-bedroom-256", "LSUN bedroom", ("bedroom", "bedrooms"), 455, 256),
    PaperModel("google/ddpm-ema-cat-256", "LSUN cat", ("cat", "cats"), 455, 256),
    PaperModel("google/ddpm-ema-celebahq-256", "CelebA-HQ", ("face", "faces"), 455, 256),
)
BY_REPO = {m.repo_id: m for m in PAPER_MODELS}
# On a CPU only the 32-pixel model is offered: one 256×256 image from the fast sampler takes more than a minute on
# 2 cores (bench/bench_paper_models.py; the README has the figures).
CPU_SIZES = (32,)


def offered_here(model: PaperModel, device: torch.device) -> bool:
    """Whether ``model`` can answer a request in about a minute on ``device``: all on a GPU, CIFAR-10 on a CPU."""
    return device.type == "cuda" or model.size in CPU_SIZES


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it."""
    return bool(constants.HF_HUB_OFFLINE)


def offered(device: torch.device) -> list[PaperModel]:
    """The paper's models a Space on ``device`` lists: those ``offered_here``; none when the Hub is switched off."""
    return [] if hub_offline() else [m for m in PAPER_MODELS if offered_here(m, device)]


def probe(models, timeout: float = PROBE_SECONDS) -> dict[str, str]:
    """Why each of ``models`` cannot be had from the Hub (repo id → reason); the ones it answers for are left out.

    One ``model_info`` request each, ``timeout`` seconds at most.
    """
    api, unreachable = HfApi(), {}
    for model in models:
        try:
            api.model_info(model.repo_id, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - no network, a proxy, a 404: the model cannot be offered
            unreachable[model.repo_id] = f"the Hub did not answer for it here ({type(e).__name__})"
            logger.info("%s: %s", model.repo_id, e)
    return unreachable


def probe_in_background(models, refuse: Callable[[dict[str, str]], None]) -> threading.Thread:
    """``probe`` ``models`` in a daemon thread (start-up never waits for the Hub), then ``refuse`` the unreachable."""
    thread = threading.Thread(target=lambda: refuse(probe(models)), name="hub-probe", daemon=True)
    thread.start()
    return thread
