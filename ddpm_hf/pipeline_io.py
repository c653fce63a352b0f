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

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import DDPMPipeline, UNet2DModel

from . import scheduling_ddpm_hf
from .scheduling_ddpm_hf import DDPMHFScheduler

SCHEDULER_MODULE = "scheduling_ddpm_hf"
PIPELINE_FILES = ("model_index.json", "unet", "scheduler")


def save_pipeline(unet: UNet2DModel, scheduler: DDPMHFScheduler, path: str | os.PathLike) -> Path:
    """Write a pipeline folder loadable with or without ``ddpm_hf`` (see the module docstring).

    The parts are written into a temporary folder beside ``path`` and then moved into place one by one, so an
    interrupted save never leaves a half-written ``unet/`` or ``model_index.json``; other files in ``path`` (a model
    card, checkpoints, logs) are kept.

    Args:
        unet: the ε-network (``UNet2DModel``); its weights are saved as safetensors.
        scheduler: the scheduler whose config is saved.
        path: the pipeline folder (created if missing).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-pipeline-") as tmp:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(scheduling_ddpm_hf.__file__, Path(tmp, "scheduler", SCHEDULER_MODULE + ".py"))
        index_file = Path(tmp, "model_index.json")
        index = json.loads(index_file.read_text())
        index["scheduler"] = [SCHEDULER_MODULE, type(scheduler).__name__]
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        for name in PIPELINE_FILES:
            target = path / name
            if target.is_dir():
                old = Path(tempfile.mkdtemp(dir=path, prefix=".tmp-old-"))
                target.rename(old / name)
                Path(tmp, name).rename(target)
                shutil.rmtree(old)
            else:
                os.replace(Path(tmp, name), target)
    return path


def load_pipeline(path_or_repo: str | os.PathLike, **kwargs) -> DDPMPipeline:
    """Load a pipeline folder (local or a Hub repo id) as a ``DDPMPipeline`` with ``DDPMHFScheduler``.

    Args:
        path_or_repo: a folder written by ``save_pipeline`` (or any DDPM pipeline folder), or a Hub repo id.
        **kwargs: passed to both ``from_pretrained`` calls (``revision``, ``token``, ``local_files_only``, ...).

    Returns:
        The pipeline, on the CPU, in eval mode, its UNet in channels_last memory format (faster on CPU).

    Raises:
        ValueError: the path is missing, is not a pipeline folder, or its weights are unreadable.
    """
    source = str(path_or_repo)
    if os.path.exists(source) or source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ValueError(f"model {source}: no such folder")
        missing = [name for name in PIPELINE_FILES if not (folder / name).exists()]
        if missing:
            raise ValueError(f"model {source} is not a pipeline folder: it lacks {', '.join(missing)}")
    try:
        unet = UNet2DModel.from_pretrained(source, subfolder="unet", use_safetensors=True, **kwargs)
        scheduler = DDPMHFScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as e:  # diffusers reports a truncated safetensors file as an OSError too
        where = "folder" if Path(source).expanduser().is_dir() else "local folder or Hub repo"
        raise ValueError(f"model {source} ({where}) could not be loaded: {str(e).splitlines()[0]}") from None
    return DDPMPipeline(unet=unet.eval().to(memory_format=torch.channels_last), scheduler=scheduler)
