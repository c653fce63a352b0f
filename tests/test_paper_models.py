"""The paper's own models (``google/ddpm-cifar10-32`` and the 256-pixel ones) through the real huggingface_hub
download path: a folder in their layout (flat: config.json, safetensors weights and scheduler_config.json side by
side; the CIFAR-10 UNet's architecture flags; diffusers' DDPMScheduler with σ² = β and clipping), written by stock
diffusers with random weights, served by the loopback Hub as that repo id. ``load_pipeline`` runs it with this
package's scheduler, and gives diffusers' images in both memory formats and both precisions, plus the bound."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_emulator import HubEmulator

REPO_ID = "google/ddpm-cifar10-32"

CLIENT = r"""
import json, sys
import torch
from diffusers import DDPMPipeline, DDPMScheduler
from ddpm_hf import DDPMHFScheduler, estimate_bound, load_pipeline, sample, seed_generators

repo = sys.argv[1]
pipe = load_pipeline(repo)
out = {"scheduler": type(pipe.scheduler).__name__, "variance_type": pipe.scheduler.config.variance_type,
       "clip_sample": pipe.scheduler.config.clip_sample, "channels": pipe.unet.config.in_channels}
scheduler = DDPMHFScheduler.from_pretrained(repo)  # the scheduler alone, as a diffusers user loads it
out["same_config"] = dict(scheduler.config) == dict(pipe.scheduler.config)
theirs = DDPMPipeline(pipe.unet, DDPMScheduler.from_pretrained(repo))
theirs.set_progress_bar_config(disable=True)
diffs = {}
for fmt in ("contiguous_format", "channels_last"):
    pipe.unet.to(memory_format=getattr(torch, fmt))
    for precision in ("float32", "bfloat16"):
        ours = sample(pipe.unet, pipe.scheduler, 2, seed=3, num_inference_steps=4, timestep_spacing=None,
                      precision=precision, autotune=False, output_type="np").images
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            ref = theirs(2, generator=seed_generators(3, 2), num_inference_steps=4, output_type="np").images
        diffs[f"{fmt}/{precision}"] = float(abs(ours - ref).max())
        if fmt == "channels_last":
            out[precision] = ours.tolist()
out["diffs"] = diffs
x0 = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
bits = estimate_bound(pipe.unet, pipe.scheduler, x0, exact_timesteps=3, num_timesteps=3,
                      generator=torch.Generator().manual_seed(0))
out["bits"] = bits.tolist()
print(json.dumps(out))
"""


@pytest.mark.timeout(600)
def test_the_papers_cifar10_repo_runs_with_this_scheduler_as_diffusers_does(tmp_path, cifar_repo_files):
    assert set(cifar_repo_files) == {
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
        "model_index.json",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    with HubEmulator() as hub:
        hub.add_repo(REPO_ID, files=cifar_repo_files)
        env = {**base, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "127.0.0.1"}
        proc = subprocess.run(
            [sys.executable, "-c", CLIENT, REPO_ID],
            env=env,
            capture_output=True,
            text=True,
            timeout=580,
            check=False,
            cwd=Path(__file__).parents[1],
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert any(path.startswith(f"/{REPO_ID}/resolve/") for _, path in hub.requests)
        assert hub.unknown_routes == []
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["scheduler"] == "DDPMHFScheduler" and out["same_config"]
    assert out["variance_type"] == "fixed_large" and out["clip_sample"] is True and out["channels"] == 3
    for key, diff in out["diffs"].items():
        # bfloat16: diffusers draws the step's noise in the network's output dtype, this package in float32
        assert diff < (2e-4 if key.endswith("float32") else 0.1), (key, diff)
    import numpy as np

    assert np.abs(np.array(out["float32"]) - np.array(out["bfloat16"])).max() > 0  # bf16 really ran
    assert all(0 < b < 20 for b in out["bits"])
