"""Train a DDPM with Accelerate: `accelerate launch train_accelerate.py --dataset mnist ...` or plain `python`.

A thin CLI over ``ddpm_hf.training``: its flags are ``TrainConfig``'s fields (defaults and help text come from there).
Bad input found before training starts ends in a one-line error and exit code 2, before anything is written; an
error during training keeps its traceback.
"""

import sys


def build_parser():
    from ddpm_hf.cli import build_parser as parser_for
    from ddpm_hf.training import TrainConfig

    return parser_for(TrainConfig, "train_accelerate.py", __doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    from ddpm_hf.cli import input_error
    from ddpm_hf.training import TrainConfig, prepare, run

    args = build_parser().parse_args(argv)
    try:
        prepared = prepare(TrainConfig(**vars(args)))
    except ValueError as e:  # bad input (DataError is a ValueError); nothing was written
        return input_error("train_accelerate.py", e)
    run(prepared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
