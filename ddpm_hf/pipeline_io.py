"""The pipeline folder: what training writes, what ``from_pretrained`` and the app read.

A folder written by ``save_pipeline`` is a diffusers ``DDPMPipeline`` folder (``model_index.json``, ``unet/`` with
safetensors weights, ``scheduler/``) that also carries ``scheduler/scheduling_ddpm_hf.py``, a verbatim copy of this
package's self-contained scheduler module, and names it in ``model_index.json``. So it loads

- anywhere, without this package: ``DiffusionPipeline.from_pretrained(path, trust_remote_code=True)``;
- with this package and no remote code run: ``ddpm_hf.load_pipeline(path)`` (a ``DDPMPipeline`` whose scheduler is
  ``ddpm_hf.DDPMHFScheduler``).

diffusers runs a component's shipped code only with ``trust_remote_code=True``, whoever calls it; ``load_pipeline``
therefore builds the pipeline from its parts (``UNet2DModel.from_pretrained(subfolder="unet")``,
``DDPMHFScheduler.from_pretrained(subfolder="scheduler")``) instead of calling ``DDPMPipeline.from_pretrained``.
"""

import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DiffusionPipeline, UNet2DModel

from . import pipeline_ddpm_guided, scheduling_ddpm_hf
from .guidance import is_conditional
from .pipeline_ddpm_guided import DDPMGuidedPipeline
from .scheduling_ddpm_hf import DDPMHFScheduler

SCHEDULER_MODULE = "scheduling_ddpm_hf"
GUIDED_MODULE = "pipeline_ddpm_guided"  # a class-conditional folder's pipeline code, at its root
PIPELINE_FILES = ("model_index.json", "unet", "scheduler")
FLAT_FILES = ("config.json", "scheduler_config.json")  # the older one-folder layout (google/ddpm-* on the Hub)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (what a rename inside it changed), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder``, then the folders themselves (deepest first), to disk."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)) + [folder]:
        fsync_path(path)


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system or
    file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _move_in(new: Path, target: Path, old_dir: Path) -> None:
    """Put the folder ``new`` at ``target``: swapped atomically with an existing one (which lands in ``old_dir``)."""
    if not target.exists():
        new.rename(target)
    elif exchange(new, target):
        return
    else:  # no atomic swap here: the old part is absent for the moment between these two renames
        target.rename(old_dir / target.name)
        new.rename(target)


def save_pipeline(
    unet: UNet2DModel,
    scheduler: DDPMHFScheduler,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    guidance_scale: float = 1.0,
) -> Path:
    """Write a pipeline folder loadable with or without ``ddpm_hf`` (see the module docstring).

    A class-conditional UNet gives a ``DDPMGuidedPipeline`` folder: its ``model_index.json`` names the pipeline
    file it carries (``pipeline_ddpm_guided.py``) and records ``class_names`` and the default ``guidance_scale``.

    The new pipeline is written completely into a temporary folder beside the parts and flushed to disk; then
    ``unet/`` and ``scheduler/`` are each swapped with the old ones in one atomic step and ``model_index.json`` is
    replaced last. So a crash at any instant (even ``kill -9``) leaves ``path`` with complete parts that load: the
    old pipeline, the new one, or the new UNet beside the old scheduler config. Other files in ``path`` (a model
    card, checkpoints, logs) are kept.

    Args:
        unet: the ε-network (``UNet2DModel``); its weights are saved as safetensors.
        scheduler: the scheduler whose config is saved.
        path: the pipeline folder (created if missing).
        class_names: a conditional UNet's class names (default "0", "1", ...).
        guidance_scale: a conditional UNet's default guidance w.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    conditional = is_conditional(unet)
    with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-pipeline-") as tmp:
        new = Path(tmp, "new")
        if conditional:
            pipe = DDPMGuidedPipeline(unet, scheduler, class_names=class_names, guidance_scale=guidance_scale)
        else:
            pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.save_pretrained(new, safe_serialization=True)
        shutil.copyfile(scheduling_ddpm_hf.__file__, new / "scheduler" / (SCHEDULER_MODULE + ".py"))
        unet_config = new / "unet" / "config.json"  # named by its folder, not by the path it was loaded from here
        config = json.loads(unet_config.read_text()) | {"_name_or_path": path.name}
        unet_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        index_file = new / "model_index.json"
        index = json.loads(index_file.read_text())
        index["scheduler"] = [SCHEDULER_MODULE, type(scheduler).__name__]
        if conditional:
            index["_class_name"] = [GUIDED_MODULE, DDPMGuidedPipeline.__name__]
            shutil.copyfile(pipeline_ddpm_guided.__file__, new / (GUIDED_MODULE + ".py"))
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        fsync_tree(new)
        for name in ("unet", "scheduler"):
            _move_in(new / name, path / name, Path(tmp))
        if conditional:
            os.replace(new / (GUIDED_MODULE + ".py"), path / (GUIDED_MODULE + ".py"))
        os.replace(index_file, path / "model_index.json")  # last: a first save loads only once every part is there
        fsync_path(path)
    return path


def is_local(source: str) -> bool:
    """Whether ``source`` names a local path rather than a Hub repo id: it exists, starts like a path (".", "/",
    "~"), or has more parts than ``namespace/name``."""
    return (
        os.path.exists(source) or source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1)
    )


def _load_parts(source: str, flat: bool, kwargs: dict) -> tuple[UNet2DModel, DDPMHFScheduler]:
    """The UNet (safetensors weights only) and the scheduler, from ``unet/`` and ``scheduler/``, or from the folder
    itself in the flat layout that the paper's models on the Hub have (config.json, scheduler_config.json and the
    weights side by side); a Hub repo is tried in the pipeline layout first."""
    if not flat:
        try:
            unet = UNet2DModel.from_pretrained(source, subfolder="unet", use_safetensors=True, **kwargs)
            return unet, DDPMHFScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
        except OSError:
            if is_local(source):
                raise
    unet = UNet2DModel.from_pretrained(source, use_safetensors=True, **kwargs)
    return unet, DDPMHFScheduler.from_pretrained(source, **kwargs)


def load_pipeline(path_or_repo: str | os.PathLike, **kwargs) -> DDPMPipeline | DDPMGuidedPipeline:
    """Load a pipeline folder (local or a Hub repo id) as a ``DDPMPipeline`` with ``DDPMHFScheduler``; a
    class-conditional folder as a ``DDPMGuidedPipeline`` with its class names and default guidance. The paper's own
    models load too (``load_pipeline("google/ddpm-cifar10-32")``): their scheduler config (diffusers'
    ``DDPMScheduler``: ``variance_type="fixed_large"``, ``clip_sample=True``) becomes this package's scheduler.

    Args:
        path_or_repo: a folder written by ``save_pipeline`` (or any DDPM pipeline folder), or a Hub repo id.
        **kwargs: passed to both ``from_pretrained`` calls (``revision``, ``token``, ``local_files_only``, ...).

    Returns:
        The pipeline, on the CPU, in eval mode, its UNet in channels_last memory format (faster on CPU).

    Raises:
        ValueError: the path is missing, is not a pipeline folder, or its weights are unreadable.
    """
    source = str(path_or_repo)
    flat = False
    if is_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ValueError(f"model {source}: no such folder")
        flat = all((folder / name).is_file() for name in FLAT_FILES)
        missing = [name for name in PIPELINE_FILES if not (folder / name).exists()]
        if missing and not flat:
            raise ValueError(f"model {source} is not a pipeline folder: it lacks {', '.join(missing)}")
    try:
        unet, scheduler = _load_parts(source, flat, kwargs)
        index = DiffusionPipeline.load_config(source, **kwargs) if is_conditional(unet) else None
    except (OSError, ValueError) as e:  # diffusers reports a truncated safetensors file as an OSError too
        where = "folder" if Path(source).expanduser().is_dir() else "local folder or Hub repo"
        raise ValueError(f"model {source} ({where}) could not be loaded: {str(e).splitlines()[0]}") from None
    unet = unet.eval().to(memory_format=torch.channels_last)
    if index is not None:
        options = {k: index[k] for k in ("class_names", "guidance_scale") if k in index}
        return DDPMGuidedPipeline(unet, scheduler, **options)
    return DDPMPipeline(unet=unet, scheduler=scheduler)
