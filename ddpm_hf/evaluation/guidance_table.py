"""How well a class-conditional model draws the class it is asked for, at each classifier-free guidance w.

For each w, ``per_class`` images of every class are drawn with the same seeds (image i from seed + i, so every w
starts from the same x_T) and judged by the dataset's classifier (``ddpm_hf.classifier``):

- agreement: the share of images whose arg-max class is the class asked for (and the same per class);
- confident share: the share whose top class has p ≥ 0.9;
- class-FID: classifier-FID of each class's samples against that class's test images, averaged over classes; its
  reference is the same number for ``per_class`` real training images of each class;
- seconds per image, as drawn here.

``python -m ddpm_hf.evaluate --guidance_scales 0,1,2,3,5`` adds the table to an evaluation (``eval.json``'s
"guidance" entry); the model card renders it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..data import ImageDataset
from .classifier import predict
from .metrics import confident_share, frechet_distance
from .result import GuidanceScore


def requested_classes(num_classes: int, per_class: int) -> list[int]:
    """Class k for images k·per_class … (k+1)·per_class − 1."""
    return [k for k in range(num_classes) for _ in range(per_class)]


def class_fid(features: np.ndarray, labels: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean over classes of the Fréchet distance between the features of ``labels == k`` and the reference's."""
    ref_features, ref_labels = reference
    classes = np.unique(labels)
    return float(np.mean([frechet_distance(features[labels == k], ref_features[ref_labels == k]) for k in classes]))


def real_reference(classifier, test: ImageDataset, train: ImageDataset, per_class: int, seed: int) -> tuple:
    """(test features and labels, the class-FID and confident share of ``per_class`` real training images of each
    class): what the generated numbers are compared with."""
    _, test_features = predict(classifier, test.images)
    reference = (test_features, test.labels.numpy())
    order = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(seed))
    labels = train.labels[order]
    picked = torch.cat([order[labels == k][:per_class] for k in range(len(train.class_names))])
    probs, features = predict(classifier, train.images[picked])
    real_labels = train.labels[picked].numpy()
    real = {
        "agreement": float((probs.argmax(1) == real_labels).mean()),
        "confident_share": confident_share(probs, 0.9),
        "class_fid": class_fid(features, real_labels, reference),
    }
    return reference, real


def score_guidance(generate, classifier, reference, scale: float, num_classes: int, per_class: int) -> GuidanceScore:
    """Draw ``per_class`` images of each class at guidance ``scale`` with ``generate(class_labels, scale)`` (uint8
    images) and score them against ``reference`` (test features and labels)."""
    wanted = requested_classes(num_classes, per_class)
    start = time.perf_counter()
    images = generate(wanted, scale)
    seconds = (time.perf_counter() - start) / len(wanted)
    probs, features = predict(classifier, images)
    labels = np.asarray(wanted)
    hit = probs.argmax(1) == labels
    return GuidanceScore(
        guidance_scale=float(scale),
        per_class=per_class,
        agreement=float(hit.mean()),
        confident_share=confident_share(probs, 0.9),
        class_fid=class_fid(features, labels, reference),
        seconds_per_image=seconds,
        class_agreement=tuple(float(hit[labels == k].mean()) for k in range(num_classes)),
    )
