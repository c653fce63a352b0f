"""What a training run leaves behind: the pipeline folder (EMA weights, loadable with and without ddpm_hf), the model
card and the tensorboard logs (never the Hub token)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_training import UNET_FILE, assert_same_tensors, finished_run, fresh_accelerate_state, tiny_config, weights

from ddpm_hf.data import ImageDataset
from ddpm_hf.hub import card_recipe, write_model_card
from ddpm_hf.pipeline_io import load_pipeline
from ddpm_hf.training.checkpoints import EMA_FILE
from ddpm_hf.training.loop import train

__all__ = ["finished_run", "fresh_accelerate_state"]  # fixtures shared with test_training


# The pipeline folder ------------------------------------------------------------------------------------------------


def test_the_pipeline_folder_holds_the_ema_weights(finished_run):
    for name in (
        "model_index.json",
        UNET_FILE,
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "scheduler/scheduling_ddpm_hf.py",
        "README.md",
        "samples.png",
    ):
        assert (finished_run / name).is_file(), name
    index = json.loads((finished_run / "model_index.json").read_text())
    assert index["scheduler"] == ["scheduling_ddpm_hf", "DDPMHFScheduler"]

    exported = weights(finished_run / UNET_FILE)
    raw = weights(finished_run / "checkpoint-6" / "model.safetensors")
    shadow = weights(finished_run / "checkpoint-6" / EMA_FILE)
    names = [name for name, _ in load_pipeline(finished_run).unet.named_parameters()]
    assert sorted(shadow) == sorted(names) and set(names) <= exported.keys()  # the EMA is stored by parameter name
    assert_same_tensors({n: exported[n] for n in names}, shadow, 0)
    assert any(not torch.allclose(exported[n], raw[n]) for n in names)  # EMA after 6 steps is not the raw model


def test_the_pipeline_folder_loads_and_samples(finished_run):
    pipe = load_pipeline(finished_run)
    assert type(pipe.scheduler).__module__ == "ddpm_hf.scheduling_ddpm_hf"
    images = pipe(batch_size=1, num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (1, 28, 28, 1) and np.isfinite(images).all()


LOAD_WITHOUT_DDPM_HF = r"""
import json, sys
sys.modules["ddpm_hf"] = None  # any import of the package fails
import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
images = pipe(batch_size=1, num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
print(json.dumps({"scheduler": type(pipe.scheduler).__module__, "shape": list(images.shape)}))
"""


@pytest.mark.timeout(300)
def test_the_pipeline_folder_loads_without_ddpm_hf(finished_run, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", LOAD_WITHOUT_DDPM_HF, str(finished_run)]
    proc = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["scheduler"] == "diffusers_modules.local.scheduling_ddpm_hf"  # the copy shipped in the folder
    assert out["shape"] == [1, 28, 28, 1]


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_model_card(finished_run):
    card = (finished_run / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "diffusers"
    assert meta["pipeline_tag"] == "unconditional-image-generation"
    assert meta["license"] == "cc-by-sa-3.0"
    assert meta["datasets"] == ["ylecun/mnist"]
    assert {"ddpm", "diffusers", "unconditional-image-generation", "mnist"} <= set(meta["tags"])
    rows = dict(line.strip("|").split("|")[:2] for line in card.splitlines() if line.startswith("| "))
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["model_preset"] == "tiny" and rows["max_train_steps"] == "6" and rows["use_ema"] == "true"
    assert rows["steps"] == "6" and rows["images_seen"] == "48" and "hub_token" not in rows
    assert rows["hardware"].startswith("CPU") and float(rows["seconds"]) > 0
    assert "![samples](samples.png)" in card and (finished_run / "samples.png").is_file()
    assert Image.open(finished_run / "samples.png").size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 grid of 28px, 2px gaps
    assert "DiffusionPipeline.from_pretrained(" in card and "trust_remote_code=True" in card


def test_the_model_card_names_a_hub_dataset_and_its_license(tmp_path):
    data = ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), None, "someone/butterflies", "cc-by-4.0")
    cfg = tiny_config(tmp_path, dataset_name="someone/butterflies", hub_token="hf_card_must_not_see_this")
    info = {
        "recipe": card_recipe(dataclasses.asdict(cfg)),
        "dataset": data.name,
        "dataset_id": cfg.dataset_name,
        "license": data.license,
        "run": {"steps": 1},
    }
    card = write_model_card(tmp_path, info).read_text()
    meta = front_matter(card)
    assert meta["datasets"] == ["someone/butterflies"] and meta["license"] == "cc-by-4.0"
    assert "hf_card_must_not_see_this" not in card


# Tracking -----------------------------------------------------------------------------------------------------------


def test_tensorboard_logs_land_in_output_dir_logs_without_the_token(tmp_path):
    token = "hf_tracker_must_not_see_this_0123"
    out = train(
        tiny_config(tmp_path / "run", max_train_steps=2, checkpointing_steps=2, logger="tensorboard", hub_token=token)
    )
    logged = [p for p in (out / "logs").rglob("*") if p.is_file()]
    assert any(p.name.startswith("events.out.tfevents") for p in logged)
    hparams = yaml.safe_load(next(p for p in logged if p.name == "hparams.yml").read_text())
    assert hparams["model_preset"] == "tiny" and "hub_token" not in hparams
    assert all(token.encode() not in p.read_bytes() for p in out.rglob("*") if p.is_file())
