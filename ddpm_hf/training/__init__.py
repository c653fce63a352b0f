"""Training ε_θ with Accelerate (``train_accelerate.py`` is its command line).

- ``config``: every setting (``TrainConfig``) and the checks made before anything is written;
- ``batches``: which images, timesteps and noise each optimizer step takes, a pure function of (seed, step);
- ``state``: a run's state (``TrainState``) and what defines it, compared on resume;
- ``loop``: the loss, the optimizer step, ``prepare``, ``run`` and ``train``;
- ``checkpoints``: atomic, resumable checkpoints;
- ``outputs``: the pipeline folder, sample grids, the card and the Hub push;
- ``periodic_eval``: the classifier scores logged every ``--eval_steps``.
"""

from .batches import BatchPlan
from .config import TrainConfig, check_config
from .loop import TrainingDiverged, diffusion_loss, prepare, run, train
from .state import TrainState

__all__ = [
    "BatchPlan",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "check_config",
    "diffusion_loss",
    "prepare",
    "run",
    "train",
]
