"""Training checkpoints: ``accelerator.save_state`` plus EMA weights and the loop's position, written atomically.

A checkpoint is the folder ``checkpoint-<step>``. It is written as ``.tmp-checkpoint-<step>`` and renamed into place
only when complete, so a crash (even ``kill -9``) never leaves a ``checkpoint-*`` that looks complete but is not; the
next run deletes the ``.tmp-*`` leftovers.
Everything is loaded without unpickling arbitrary objects: model weights and EMA weights are safetensors, the loop
state is JSON, and accelerate loads the optimizer with ``weights_only=True``.
"""

import json
import pickle
import re
import shutil
from pathlib import Path

from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

STATE_FILE = "training_state.json"
EMA_FILE = "ema_model.safetensors"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# What reading a damaged checkpoint raises: missing files, bad JSON or keys, truncated safetensors or torch files.
_UNREADABLE = (OSError, KeyError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    step: int,
    lr_scheduler,
    ema: EMAModel | None,
    total_limit: int | None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically (all processes call this) and prune the oldest beyond ``total_limit``."""
    final, tmp = output_dir / f"checkpoint-{step}", output_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its random_states_<rank>.pkl into tmp
    if accelerator.is_main_process:
        if ema is not None:
            save_file(
                {f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}, tmp / EMA_FILE
            )
        state = {
            "global_step": step,
            "lr_scheduler": {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"},
            "ema_optimization_step": None if ema is None else int(ema.optimization_step),
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if total_limit is not None:
            for old in list_checkpoints(output_dir)[:-total_limit]:
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


def load_checkpoint(accelerator: Accelerator, path: Path, lr_scheduler, ema: EMAModel | None) -> int:
    """Restore model, optimizer, LR schedule and EMA from ``path``; return the global step to continue from."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        step = int(state["global_step"])
        accelerator.load_state(str(path))
        lr_scheduler.load_state_dict({**lr_scheduler.state_dict(), **state["lr_scheduler"]})
        if ema is not None:
            shadow = load_file(path / EMA_FILE)
            if len(shadow) != len(ema.shadow_params):
                raise ValueError(f"{EMA_FILE} holds {len(shadow)} tensors, the model has {len(ema.shadow_params)}")
            for i, p in enumerate(ema.shadow_params):
                p.data.copy_(shadow[f"shadow.{i}"].to(p.device))
            ema.optimization_step = int(state["ema_optimization_step"] or 0)
    except _UNREADABLE as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"checkpoint {path} is incomplete or corrupt: {reason}") from None
    return step
