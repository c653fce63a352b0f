"""Training checkpoints: ``accelerator.save_state`` plus EMA weights, the loop's position and what defines the run,
written atomically; each a function of the run's ``TrainState``.

A checkpoint is the folder ``checkpoint-<step>``. It is written as ``.tmp-checkpoint-<step>``, its files and the folder
are flushed to disk (fsync), and only then is it renamed into place and older checkpoints pruned; so a crash (even
``kill -9`` or a power cut) never leaves a ``checkpoint-*`` that looks complete but is not, and never loses the last
complete one. The next run deletes the ``.tmp-*`` leftovers. EMA weights are stored by parameter name.
``training_state.json`` holds the step, the LR schedule's position and the run definition
(``ddpm_hf.training.state.run_definition``): a resume under settings that define another run is refused by name, and a
checkpoint without a definition (written by an older version) resumes with a warning that it could not be checked;
one whose EMA weights are stored by position (``shadow.<i>``, the first versions) is refused with a message that says
so, as their order cannot be checked against the model.
Everything is loaded without unpickling arbitrary objects: model weights and EMA weights are safetensors, the loop
state is JSON, and accelerate loads the optimizer with ``weights_only=True``. Every file is checked for damage first
(JSON, safetensors headers, the zip archives of torch files), and a damaged checkpoint's message names the newest
sound one before it.
"""

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..pipeline_io import fsync_path, fsync_tree
from .state import TrainState, check_resume, run_definition

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


def save_checkpoint(state: TrainState) -> Path:
    """Write ``checkpoint-<state.step>`` atomically (all processes call this) and prune the oldest beyond
    ``--checkpoints_total_limit`` (that many are kept, this one included).

    Returns:
        The checkpoint folder.
    """
    accelerator, output_dir, total_limit = state.accelerator, state.output_dir, state.cfg.checkpoints_total_limit
    final, tmp = output_dir / f"checkpoint-{state.step}", output_dir / f".tmp-checkpoint-{state.step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its random_states_<rank>.pkl into tmp
    if accelerator.is_main_process:
        if state.ema is not None:
            names = [name for name, _ in state.model.named_parameters()]
            shadow = {n: p.detach().cpu().contiguous() for n, p in zip(names, state.ema.shadow_params)}
            save_file(shadow, tmp / EMA_FILE)
        saved = {
            "global_step": state.step,
            "lr_scheduler": {k: v for k, v in state.lr_scheduler.state_dict().items() if k != "lr_lambdas"},
            "ema_optimization_step": None if state.ema is None else int(state.ema.optimization_step),
            "run": run_definition(state),
        }
        (tmp / STATE_FILE).write_text(json.dumps(saved, indent=2))
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


def check_files(path: Path) -> dict:
    """Read ``path``'s loop state and check every file for damage without loading any weights.

    Returns:
        The parsed ``training_state.json``.

    Raises:
        One of ``_UNREADABLE``: a file is missing, truncated or garbled.
    """
    state = json.loads((path / STATE_FILE).read_text())
    int(state["global_step"])
    for file in sorted([*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.pt")]):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), "pt") as weights:  # the header must describe exactly the bytes that follow
                    weights.keys()
                continue
            with zipfile.ZipFile(file) as archive:  # torch files (optimizer, GradScaler) are zip archives
                if (bad := archive.testzip()) is not None:
                    raise zipfile.BadZipFile(f"member {bad} is damaged")
        except (SafetensorError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{file.name}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    return state


def previous_sound_checkpoint(path: Path) -> Path | None:
    """The newest checkpoint before ``path`` in its folder whose files pass ``check_files``, or None."""
    step = int(_NAME.match(path.name).group(1)) if _NAME.match(path.name) else None
    for candidate in reversed(list_checkpoints(path.parent)):
        if step is not None and int(_NAME.match(candidate.name).group(1)) >= step:
            continue
        try:
            check_files(candidate)
        except _UNREADABLE:
            continue
        return candidate
    return None


def _load_ema(state: TrainState, file: Path) -> None:
    """Copy the EMA weights, stored by parameter name, from ``file`` into ``state.ema``."""
    shadow = load_file(file)
    names = [name for name, _ in state.model.named_parameters()]
    missing = [name for name in names if name not in shadow]
    if missing or len(shadow) != len(names):
        raise ValueError(f"{EMA_FILE} holds {len(shadow)} tensors that do not match the model's {len(names)}")
    for name, p in zip(names, state.ema.shadow_params):
        p.data.copy_(shadow[name].to(p.device))


def _check_ema_layout(path: Path) -> None:
    """Refuse a checkpoint whose EMA weights are stored by position (``shadow.<i>``) rather than by parameter name."""
    if not (path / EMA_FILE).is_file():
        return  # a missing file is damage: load_checkpoint reports it
    with safe_open(str(path / EMA_FILE), "pt") as weights:
        names = weights.keys()
    if "shadow.0" in names:
        raise ValueError(
            f"{path.name} stores its EMA weights by position (shadow.<i>), as the first versions of ddpm-hf did; this "
            "version reads them by parameter name only: resume it with the version that wrote it, or start a new run "
            f"from its exported pipeline (--pretrained_model_name_or_path {path.parent})"
        )


def load_checkpoint(state: TrainState, path: Path) -> int:
    """Restore model, optimizer, LR schedule and EMA from ``path`` into ``state``.

    Returns:
        The global step to continue from.

    Raises:
        ValueError: a file is missing, truncated or garbled (the message names the newest sound checkpoint before
            it), the checkpoint's run was defined by other settings (the message names them), or its EMA weights
            are stored by position.
    """
    try:
        saved = check_files(path)
    except _UNREADABLE as e:
        raise ValueError(_corrupt(path, e)) from None
    check_resume(saved.get("run"), state, path)
    if state.ema is not None:
        _check_ema_layout(path)
    try:
        state.accelerator.load_state(str(path))
        lr_scheduler = state.lr_scheduler
        lr_scheduler.load_state_dict({**lr_scheduler.state_dict(), **saved["lr_scheduler"]})
        if state.ema is not None:
            _load_ema(state, path / EMA_FILE)
            state.ema.optimization_step = int(saved["ema_optimization_step"] or 0)
    except _UNREADABLE as e:
        raise ValueError(_corrupt(path, e)) from None
    return int(saved["global_step"])


def _corrupt(path: Path, error: BaseException) -> str:
    """The one-line message for a damaged checkpoint, naming the newest sound one before it."""
    reason = (str(error).splitlines() or [type(error).__name__])[0]
    previous = previous_sound_checkpoint(path)
    advice = (
        f"the previous sound checkpoint is {previous.name}: resume with --resume_from_checkpoint {previous}"
        if previous
        else "no earlier sound checkpoint is left"
    )
    return f"checkpoint {path} is incomplete or corrupt: {reason}; {advice}"
