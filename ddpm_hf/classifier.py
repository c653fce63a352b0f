"""``python -m ddpm_hf.classifier``: the command line of ``ddpm_hf.evaluation.classifier`` (whose names it
re-exports)."""

import sys

from .evaluation.classifier import (
    Classifier,
    ClassifierConfig,
    accuracy,
    load_classifier,
    main,
    model_card,
    predict,
    train_classifier,
)

__all__ = [
    "Classifier",
    "ClassifierConfig",
    "accuracy",
    "load_classifier",
    "main",
    "model_card",
    "predict",
    "train_classifier",
]

if __name__ == "__main__":
    sys.exit(main())
