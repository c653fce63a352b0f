"""Training checkpoints: ``accelerator.save_state`` plus EMA weights and the loop's position, written atomically.

A checkpoint is the folder ``checkpoint-<step>``. It is written as ``.tmp-checkpoint-<step>``, its files and the folder
are flushed to disk (fsync), and only then is it renamed into place and older checkpoints pruned; so a crash (even
``kill -9`` or a power cut) never leaves a ``checkpoint-*`` that looks complete but is not, and never loses the last
complete one. The next run deletes the ``.tmp-*`` leftovers. EMA weights are stored by parameter name; checkpoints
that stored them by position (``shadow.<i>``) still load.
Everything is loaded without unpickling arbitrary objects: model weights and EMA weights are safetensors, the loop
state is JSON, and accelerate loads the optimizer with ``weights_only=True``.
"""

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .pipeline_io import fsync_path, fsync_tree

STATE_FILE = "training_state.json"
EMA_FILE = "ema_model.safetensors"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# What reading a damaged checkpoint raises: missing files, bad JSON or keys, truncated safetensors, pickles or zips.
# Not RuntimeError: running out of memory while loading a sound checkpoint is no sign of damage.
_UNREADABLE = (OSError, KeyError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError, zipfile.BadZipFile)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, step: int, parts: dict, total_limit: int | None
) -> Path:
    """Write ``checkpoint-<step>`` atomically (all processes call this) and prune the oldest beyond ``total_limit``.

    Args:
        accelerator: saves model, optimizer and RNG states.
        output_dir: the run's folder.
        step: the global step just completed.
        parts: ``{"lr_scheduler": ..., "ema": EMAModel | None, "model": the unwrapped model}``.
        total_limit: keep this checkpoint and the newest ``total_limit - 1`` others; None keeps all.

    Returns:
        The checkpoint folder.
    """
    final, tmp = output_dir / f"checkpoint-{step}", output_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its random_states_<rank>.pkl into tmp
    if accelerator.is_main_process:
        ema, lr_scheduler = parts["ema"], parts["lr_scheduler"]
        if ema is not None:
            names = [name for name, _ in parts["model"].named_parameters()]
            save_file({n: p.detach().cpu().contiguous() for n, p in zip(names, ema.shadow_params)}, tmp / EMA_FILE)
        state = {
            "global_step": step,
            "lr_scheduler": {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"},
            "ema_optimization_step": None if ema is None else int(ema.optimization_step),
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_path(output_dir)
        if total_limit is not None:
            others = [p for p in list_checkpoints(output_dir) if p != final]
            for old in others[: max(0, len(others) - (total_limit - 1))]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def remove_leftovers(output_dir: Path, checkpoints: bool) -> None:
    """Delete the ``.tmp-*`` folders an interrupted save left in ``output_dir``, and with ``checkpoints`` every
    ``checkpoint-*`` too (a fresh run over an old one must not resume, or keep pruning, the old run's checkpoints)."""
    stale = [p for p in output_dir.glob(".tmp-*") if p.is_dir()]
    for path in stale + (list_checkpoints(output_dir) if checkpoints else []):
        shutil.rmtree(path)


def resolve_checkpoint(output_dir: Path, resume_from_checkpoint: str) -> Path:
    """The checkpoint folder that ``--resume_from_checkpoint`` names: a path, or ``latest`` in ``output_dir``."""
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise ValueError(f"--resume_from_checkpoint latest: no checkpoint-* folder in {output_dir}")
        return found[-1]
    path = Path(resume_from_checkpoint)
    if not path.is_dir() and (output_dir / resume_from_checkpoint).is_dir():
        path = output_dir / resume_from_checkpoint
    if not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such checkpoint folder")
    return path


def _check_zip_files(path: Path) -> None:
    """Refuse a truncated or garbled torch file (a zip archive) before torch parses it."""
    for file in sorted(path.glob("*.bin")):
        with zipfile.ZipFile(file) as archive:
            if (bad := archive.testzip()) is not None:
                raise zipfile.BadZipFile(f"{file.name}: member {bad} is damaged")


def _load_ema(ema: EMAModel, model: nn.Module, file: Path) -> None:
    """Copy the EMA weights from ``file``: by parameter name, or by position (``shadow.<i>``, older checkpoints)."""
    shadow = load_file(file)
    names = [name for name, _ in model.named_parameters()]
    if "shadow.0" in shadow:
        names = [f"shadow.{i}" for i in range(len(names))]
    missing = [name for name in names if name not in shadow]
    if missing or len(shadow) != len(names):
        raise ValueError(f"{EMA_FILE} holds {len(shadow)} tensors that do not match the model's {len(names)}")
    for name, p in zip(names, ema.shadow_params):
        p.data.copy_(shadow[name].to(p.device))


def load_checkpoint(accelerator: Accelerator, path: Path, parts: dict) -> int:
    """Restore model, optimizer, LR schedule and EMA from ``path`` (``parts`` as for ``save_checkpoint``).

    Returns:
        The global step to continue from.

    Raises:
        ValueError: a file is missing, truncated or garbled.
    """
    try:
        state = json.loads((path / STATE_FILE).read_text())
        step = int(state["global_step"])
        _check_zip_files(path)
        accelerator.load_state(str(path))
        lr_scheduler, ema = parts["lr_scheduler"], parts["ema"]
        lr_scheduler.load_state_dict({**lr_scheduler.state_dict(), **state["lr_scheduler"]})
        if ema is not None:
            _load_ema(ema, parts["model"], path / EMA_FILE)
            ema.optimization_step = int(state["ema_optimization_step"] or 0)
    except _UNREADABLE as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"checkpoint {path} is incomplete or corrupt: {reason}") from None
    return step
