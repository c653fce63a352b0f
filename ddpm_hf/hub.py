"""The model card and the push to the Hugging Face Hub (huggingface_hub's ``ModelCard``, ``create_repo``,
``upload_folder``). The token is passed to the client and nowhere else: never printed, logged or written."""

import dataclasses
import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder

# What a pushed pipeline folder leaves out: training checkpoints, logs, per-step samples, temporary folders.
PUSH_IGNORE = ["checkpoint-*/**", ".tmp-*/**", "logs/**", "samples/**", "**/.tmp-*"]
PATH_SETTINGS = {"output_dir", "train_data_dir", "model_config", "resume_from_checkpoint"}
DATASET_IDS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}

CARD_TEMPLATE = """---
{card_data}
---

# {title}

A DDPM (Ho et al. 2020, [arXiv 2006.11239](https://arxiv.org/abs/2006.11239)) trained with
ddpm-hf's `train_accelerate.py` on {dataset}.

![samples]({grid})

## Use

```python
import torch
from diffusers import DiffusionPipeline

# the scheduler's code ships in scheduler/scheduling_ddpm_hf.py: no extra package needed
pipe = DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)
images = pipe(batch_size=16, num_inference_steps=1000, generator=torch.manual_seed(0)).images
```

With the `ddpm_hf` package installed, no remote code runs: `ddpm_hf.load_pipeline("{repo}")`.

## Training

| setting | value |
|---|---|
{settings}

{results}
"""


def write_model_card(out: Path, cfg, data, summary: dict, grid_name: str, results: str = "") -> Path:
    """Write ``out/README.md``: metadata (library, pipeline tag, tags, dataset, license), settings, a sample grid."""
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        license=data.license if data.license != "unknown" else "other",
        datasets=[dataset_id] if (dataset_id := DATASET_IDS.get(data.name, cfg.dataset_name)) else None,
        tags=["ddpm", "diffusers", "unconditional-image-generation", "ddpm-hf", data.name],
    )
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "hub_token" and v is not None}
    for key in PATH_SETTINGS & settings.keys():  # a public card names folders, not the trainer's file system
        settings[key] = Path(settings[key]).name
    settings.update({f"measured {k}": v for k, v in summary.items()})
    rows = "\n".join(f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in settings.items())
    text = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(), title=cfg.hub_model_id or Path(cfg.output_dir).name, dataset=data.name,
        grid=grid_name, repo=cfg.hub_model_id or "PATH/TO/FOLDER", settings=rows, results=results,
    )  # fmt: skip
    path = Path(out, "README.md")
    ModelCard(text).save(path)
    return path


def push_to_hub(out: Path, repo_id: str, token: str | None, private: bool = False) -> str:
    """Create ``repo_id`` if needed and upload the pipeline folder; returns the commit URL."""
    create_repo(repo_id, token=token, private=private, exist_ok=True)
    commit = upload_folder(
        repo_id=repo_id, folder_path=out, token=token, ignore_patterns=PUSH_IGNORE,
        commit_message="Upload DDPM pipeline trained with ddpm-hf",
    )  # fmt: skip
    return str(commit)
