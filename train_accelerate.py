"""Train a DDPM with Accelerate: `accelerate launch train_accelerate.py --dataset mnist ...` or plain `python`.

A thin CLI over ``ddpm_hf.training.loop``: its flags are ``TrainConfig``'s fields (defaults and help text come from there).
Bad input found before training starts ends in a one-line error and exit code 2, before anything is written; a run
whose loss or gradient stops being finite ends in a one-line error and exit code 1, its last checkpoint and pipeline
folder intact; any other error during training keeps its traceback. ``--hub_token`` works but shows in the process
list: a warning says so (set HF_TOKEN or run `hf auth login` instead).
"""

import sys

PROG = "train_accelerate.py"


def build_parser():
    from ddpm_hf.cli import build_parser as parser_for
    from ddpm_hf.training.loop import TrainConfig

    return parser_for(TrainConfig, PROG, __doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    from ddpm_hf.cli import input_error
    from ddpm_hf.training.loop import TrainConfig, TrainingDiverged, prepare, run

    args = build_parser().parse_args(argv)
    if args.hub_token:
        print(
            f"{PROG}: warning: --hub_token is visible to every user of this machine (`ps`, shell history); "
            "set HF_TOKEN or run `hf auth login` instead",
            file=sys.stderr,
        )
    try:
        prepared = prepare(TrainConfig(**vars(args)))
    except ValueError as e:  # bad input (DataError is a ValueError); nothing was written
        return input_error(PROG, e)
    try:
        run(prepared)
    except TrainingDiverged as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
