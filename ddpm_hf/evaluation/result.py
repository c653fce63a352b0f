"""``ddpm_hf.evaluate``'s result as typed records, and their JSON (the ``eval.json`` beside each shipped model).

The JSON keys are the field names, in the order ``evaluate`` has always written them. Two keys came later
(``timestep_spacing``, ``nll_exact_timesteps`` and the bound's ``exact_timesteps``): an older file reads them as None
and ``to_json`` leaves a None of them out, so every file written so far reads and writes back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# the run's settings, as the JSON's first keys; those in LATER_KEYS are absent from files written before them
SETTINGS = (
    "model",
    "dataset",
    "num_samples",
    "steps",
    "sampler",
    "precision",
    "samplers",
    "steps_sweep",
    "nll_images",
    "nll_timesteps",
    "nll_exact_timesteps",
    "seed",
    "batch_size",
    "classifier",
    "timestep_spacing",
    "classifier_test_accuracy",
)
LATER_KEYS = frozenset({"nll_exact_timesteps", "timestep_spacing"})


@dataclass(frozen=True)
class Quality:
    """A set of images as the dataset's classifier sees it (``ddpm_hf.evaluation.metrics.quality``).

    Attributes:
        fid: classifier-FID against the test images.
        inception_score: classifier Inception Score (at most the number of classes).
        confident_share: share of images whose top class has p ≥ 0.9.
        histogram: images per class by arg-max.
    """

    fid: float
    inception_score: float
    confident_share: float
    histogram: tuple[int, ...]

    @classmethod
    def from_json(cls, obj: dict) -> Quality:
        return cls(obj["fid"], obj["inception_score"], obj["confident_share"], tuple(obj["histogram"]))

    def to_json(self) -> dict:
        return {
            "fid": self.fid,
            "inception_score": self.inception_score,
            "confident_share": self.confident_share,
            "histogram": list(self.histogram),
        }


@dataclass(frozen=True)
class SampleScore:
    """One scored sample set: ``num_samples`` images from ``sampler`` in ``steps`` steps (``nfe`` network
    evaluations per image), their quality and the wall time per image."""

    sampler: str
    steps: int
    nfe: int
    quality: Quality
    seconds_per_image: float

    @classmethod
    def from_json(cls, obj: dict) -> SampleScore:
        quality = Quality.from_json(obj)
        return cls(obj["sampler"], obj["steps"], obj["nfe"], quality, obj["seconds_per_image"])

    def to_json(self) -> dict:
        head = {"sampler": self.sampler, "steps": self.steps, "nfe": self.nfe}
        return {**head, **self.quality.to_json(), "seconds_per_image": self.seconds_per_image}


@dataclass(frozen=True)
class GuidanceScore:
    """One guidance scale's samples as the classifier sees them (``ddpm_hf.evaluation.guidance_table``): the share the classifier
    assigns to the class asked for (overall and per class), the confident share, the mean class-FID, s / image."""

    guidance_scale: float
    per_class: int
    agreement: float
    confident_share: float
    class_fid: float
    seconds_per_image: float
    class_agreement: tuple[float, ...]

    @classmethod
    def from_json(cls, obj: dict) -> GuidanceScore:
        return cls(**{**obj, "class_agreement": tuple(obj["class_agreement"])})

    def to_json(self) -> dict:
        return {**self.__dict__, "class_agreement": list(self.class_agreement)}


@dataclass(frozen=True)
class BoundEstimate:
    """The variational bound in bits/dim over test images (``ddpm_hf.likelihood.estimate_bound``).

    Attributes:
        mean: the mean over images.
        standard_error: across images, including the timestep draw.
        num_images: test images.
        num_timesteps: K, the strata above ``exact_timesteps``.
        exact_timesteps: S, the terms at t ≤ S summed exactly; None for the earlier estimate whose K strata were
            shared by each batch.
    """

    mean: float
    standard_error: float
    num_images: int
    num_timesteps: int
    exact_timesteps: int | None = None

    @classmethod
    def from_json(cls, obj: dict) -> BoundEstimate:
        shared = obj["mean"], obj["standard_error"], obj["num_images"], obj["num_timesteps"]
        return cls(*shared, obj.get("exact_timesteps"))

    def to_json(self) -> dict:
        head = {"mean": self.mean, "standard_error": self.standard_error, "num_images": self.num_images}
        exact = {} if self.exact_timesteps is None else {"exact_timesteps": self.exact_timesteps}
        return {**head, **exact, "num_timesteps": self.num_timesteps}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: its settings (the first fields, as ``python -m ddpm_hf.evaluate`` took them), the real images'
    scores, the bound and every scored sample set.

    Attributes:
        model: the pipeline folder or Hub repo evaluated, as given.
        classifier: the judging classifier, as given.
        timestep_spacing: the strided chains' timesteps (None: written before it was recorded, "leading").
        classifier_test_accuracy: from the classifier's config, or None.
        test: the N test images scored against themselves (their FID is 0).
        train_floor: N training images against the test images: the floor of every number at this N.
        nll: the bound, or None when it was skipped.
        sweep: the (sampler, steps) sets of the sweep.
        nll_seconds: the bound's wall time, or None.
        generated: the main sample set (``sampler``, ``steps``); the sweep's entry when the sweep has it.
        history: lines on how the model came to be, for its card (only where someone added them to the file).
        guidance: a class-conditional model's guidance table (``ddpm_hf.evaluation.guidance_table``), one entry per w.
        guidance_reference: the same numbers for real training images (agreement, confident share, class-FID).
    """

    model: str
    dataset: str
    num_samples: int
    steps: int
    sampler: str
    precision: str
    samplers: tuple[str, ...]
    steps_sweep: tuple[int, ...]
    nll_images: int
    nll_timesteps: int
    nll_exact_timesteps: int | None
    seed: int
    batch_size: int
    classifier: str
    timestep_spacing: str | None
    classifier_test_accuracy: float | None
    test: Quality
    train_floor: Quality
    nll: BoundEstimate | None
    sweep: tuple[SampleScore, ...]
    nll_seconds: float | None
    generated: SampleScore
    history: tuple[str, ...] = ()
    guidance: tuple[GuidanceScore, ...] = ()
    guidance_reference: dict | None = None

    def scored(self) -> dict[tuple[str, int], SampleScore]:
        """Every scored sample set, the main one and the sweep's, by (sampler, steps)."""
        return {(self.sampler, self.steps): self.generated} | {(e.sampler, e.steps): e for e in self.sweep}

    @classmethod
    def from_json(cls, obj: dict) -> Evaluation:
        """Read the JSON object ``to_json`` writes (or an older one; see the module docstring)."""
        settings = {key: obj.get(key) if key in LATER_KEYS else obj[key] for key in SETTINGS}
        settings.update(samplers=tuple(obj["samplers"]), steps_sweep=tuple(obj["steps_sweep"]))
        return cls(
            **settings,
            test=Quality.from_json(obj["test"]),
            train_floor=Quality.from_json(obj["train_floor"]),
            nll=BoundEstimate.from_json(obj["nll"]) if obj["nll"] is not None else None,
            sweep=tuple(SampleScore.from_json(entry) for entry in obj["sweep"]),
            nll_seconds=obj["seconds"].get("nll"),
            generated=SampleScore.from_json(obj["generated"]),
            history=tuple(obj.get("history", ())),
            guidance=tuple(GuidanceScore.from_json(entry) for entry in obj.get("guidance", ())),
            guidance_reference=obj.get("guidance_reference"),
        )

    def to_json(self) -> dict:
        """The JSON object (lists for tuples; keys in ``SETTINGS`` order, then the scores)."""
        obj = {key: getattr(self, key) for key in SETTINGS if key not in LATER_KEYS or getattr(self, key) is not None}
        obj.update(samplers=list(self.samplers), steps_sweep=list(self.steps_sweep))
        obj |= {
            "test": self.test.to_json(),
            "train_floor": self.train_floor.to_json(),
            "nll": self.nll.to_json() if self.nll is not None else None,
            "sweep": [entry.to_json() for entry in self.sweep],
            "seconds": {} if self.nll_seconds is None else {"nll": self.nll_seconds},
            "generated": self.generated.to_json(),
        }
        if self.guidance:
            obj |= {"guidance": [e.to_json() for e in self.guidance], "guidance_reference": self.guidance_reference}
        return obj | ({"history": list(self.history)} if self.history else {})

    @classmethod
    def read(cls, path: str | Path) -> Evaluation:
        """Load an ``eval.json`` file."""
        return cls.from_json(json.loads(Path(path).read_text()))

    def write(self, path: str | Path) -> Path:
        """Write ``to_json`` as indented JSON (as ``--output_json`` does); returns the path."""
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return Path(path)
