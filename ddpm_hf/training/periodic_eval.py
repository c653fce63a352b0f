"""Evaluation during training (``--eval_steps``): the shipped classifier scores a small set of samples.

Every ``eval_steps`` steps, ``eval_num_samples`` images are sampled with ``eval_inference_steps`` DDPM steps from the
weights the run would export (EMA when on), and scored against as many test images: classifier-FID, classifier
Inception Score and confident share (``ddpm_hf.evaluation.metrics``). The numbers go to the tracker beside the loss and, one JSON
line per evaluation, to ``<output_dir>/eval_log.jsonl``. At small N the FID is biased upwards; compare runs at the
same N, and use ``python -m ddpm_hf.evaluate`` for the final numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data import load_dataset
from ..evaluation.classifier import load_classifier, predict
from ..evaluation.evaluate import generate
from ..evaluation.metrics import quality
from .outputs import inference_unet
from .state import TrainState

EVAL_LOG = "eval_log.jsonl"


class PeriodicEval:
    """Scores the run's current model; call it as ``evaluator(state)``.

    Args:
        classifier: the classifier folder or Hub repo id that judges the samples (``--eval_classifier``).
        dataset: "mnist" or "fashion-mnist": the test images the samples are compared with.
        num_samples: N samples and N test images.
        steps: reverse steps per sample.
        out: the run's folder (``eval_log.jsonl`` is appended there).
        batch_size: samples per batch of the reverse chain.
    """

    def __init__(
        self, classifier: str, dataset: str, num_samples: int, steps: int, out: Path, batch_size: int = 64
    ) -> None:
        self.classifier = load_classifier(classifier)
        test = load_dataset(dataset, "test")
        index = torch.randperm(len(test.images), generator=torch.Generator().manual_seed(0))[:num_samples]
        self.reference = predict(self.classifier, test.images[index])
        self.num_samples, self.steps, self.log = num_samples, steps, Path(out) / EVAL_LOG
        self.batch_size = batch_size

    def __call__(self, state: TrainState) -> dict:
        """Sample from ``state``'s inference weights, score, append to the log; returns the metrics."""
        start, step = time.perf_counter(), state.step
        unet = inference_unet(state.model, state.ema)
        images = generate(unet, state.scheduler, self.num_samples, self.steps, seed=0, batch_size=self.batch_size)
        scores = quality(predict(self.classifier, images.cpu()), self.reference)
        metrics = {k: v for k, v in scores.items() if k != "histogram"}
        record = {
            "step": step,
            **metrics,
            "num_samples": self.num_samples,
            "inference_steps": self.steps,
            "seconds": round(time.perf_counter() - start, 2),
        }
        with self.log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return metrics
