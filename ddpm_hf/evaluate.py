"""``python -m ddpm_hf.evaluate``: the command line of ``ddpm_hf.evaluation.evaluate`` (whose names it re-exports)."""

import sys

from .evaluation.evaluate import EvalConfig, evaluate, generate, main, negative_log_likelihood

__all__ = ["EvalConfig", "evaluate", "generate", "main", "negative_log_likelihood"]

if __name__ == "__main__":
    sys.exit(main())
