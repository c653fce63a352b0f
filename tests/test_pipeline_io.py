"""The pipeline folder loads both ways: with ddpm_hf (no remote code) and, without it, via trust_remote_code."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unet
from diffusers import DDPMPipeline

import ddpm_hf
from ddpm_hf import DDPMHFScheduler, load_pipeline, sample, save_pipeline


def test_ddpmpipeline_with_our_scheduler_samples_and_round_trips_through_save_pretrained(tmp_path):
    pipe = DDPMPipeline(unet=tiny_unet(), scheduler=DDPMHFScheduler(beta_schedule="squaredcos_cap_v2"))
    pipe.set_progress_bar_config(disable=True)
    before = pipe(2, generator=torch.manual_seed(0), num_inference_steps=5, output_type="np").images
    pipe.save_pretrained(tmp_path / "plain")  # diffusers' own writer records "ddpm_hf.scheduling_ddpm_hf"
    index = json.loads((tmp_path / "plain" / "model_index.json").read_text())
    assert index["scheduler"] == ["ddpm_hf.scheduling_ddpm_hf", "DDPMHFScheduler"]
    assert (tmp_path / "plain" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = DDPMPipeline.from_pretrained(tmp_path / "plain")  # (a): ddpm_hf is imported, no remote code
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, ddpm_hf.DDPMHFScheduler)
    assert loaded.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    after = loaded(2, generator=torch.manual_seed(0), num_inference_steps=5, output_type="np").images
    assert (before == after).all()


def test_save_pipeline_folder_loads_with_ddpm_hf(tiny_pipeline_dir):
    index = json.loads((tiny_pipeline_dir / "model_index.json").read_text())
    assert index["scheduler"] == ["scheduling_ddpm_hf", "DDPMHFScheduler"]
    shipped = (tiny_pipeline_dir / "scheduler" / "scheduling_ddpm_hf.py").read_text()
    with open(ddpm_hf.scheduling_ddpm_hf.__file__) as f:
        assert shipped == f.read()
    pipe = load_pipeline(tiny_pipeline_dir)
    assert isinstance(pipe, DDPMPipeline) and isinstance(pipe.scheduler, DDPMHFScheduler)
    assert not pipe.unet.training
    torch.testing.assert_close(pipe.unet.state_dict()["conv_in.weight"], tiny_unet().state_dict()["conv_in.weight"])


def test_save_pipeline_folder_loads_without_ddpm_hf(tiny_pipeline_dir, tmp_path):
    """(b): in a fresh Python where ddpm_hf cannot be imported, stock diffusers loads the shipped scheduler code."""
    code = textwrap.dedent(f"""
        import json
        import sys
        sys.modules["ddpm_hf"] = None  # importing ddpm_hf now fails
        import torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(tiny_pipeline_dir)!r}, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(2, generator=torch.manual_seed(0), num_inference_steps=5, output_type="np").images
        print(type(pipe).__name__, type(pipe.scheduler).__name__, type(pipe.scheduler).__module__, images.shape)
        print(json.dumps(images[0, :2, :2, 0].tolist()))
    """)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.strip().splitlines()[-2:]
    assert first.startswith("DDPMPipeline DDPMHFScheduler") and "(2, 16, 16, 1)" in first
    assert first.split()[2].startswith("diffusers_modules.")  # the class came from the folder, not our package
    ours = sample(
        tiny_unet(),
        DDPMHFScheduler(),
        2,
        generator=torch.manual_seed(0),
        num_inference_steps=5,
        precision="float32",
        output_type="np",
        timestep_spacing=None,  # the scheduler's own spacing, as DDPMPipeline runs it
    ).images
    np.testing.assert_allclose(np.array(json.loads(second)), ours[0, :2, :2, 0], atol=1e-6)


def test_save_pipeline_keeps_other_files_and_replaces_parts(tiny_pipeline_dir):
    (tiny_pipeline_dir / "README.md").write_text("card")
    save_pipeline(tiny_unet(seed=1), DDPMHFScheduler(), tiny_pipeline_dir)
    assert (tiny_pipeline_dir / "README.md").read_text() == "card"
    assert not [p for p in tiny_pipeline_dir.iterdir() if p.name.startswith(".tmp")]
    loaded = load_pipeline(tiny_pipeline_dir).unet.state_dict()["conv_in.weight"]
    torch.testing.assert_close(loaded, tiny_unet(seed=1).state_dict()["conv_in.weight"])


def test_load_errors_name_the_problem(tiny_pipeline_dir, tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_pipeline(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a pipeline folder: it lacks model_index.json, unet, scheduler"):
        load_pipeline(tmp_path / "empty")
    weights = tiny_pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"\(folder\) could not be loaded: .*diffusion_pytorch_model.safetensors"):
        load_pipeline(tiny_pipeline_dir)


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "ddpm-mnist"


def test_a_saved_unet_names_its_folder_not_the_path_it_came_from(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(str(tiny_pipeline_dir.resolve()))  # from_pretrained records this absolute path
    out = save_pipeline(pipe.unet, pipe.scheduler, tmp_path / "warm-started")
    assert json.loads((out / "unet" / "config.json").read_text())["_name_or_path"] == "warm-started"
    for shipped in SHIPPED.parent.glob("ddpm-*/unet/config.json"):
        assert "/" not in json.loads(shipped.read_text())["_name_or_path"], shipped


def test_the_shipped_default_model_loads_offline_both_ways(tmp_path):
    """models/ddpm-mnist: with ddpm_hf (no remote code), and in a fresh Python without it; same images."""
    with open(ddpm_hf.scheduling_ddpm_hf.__file__) as f:  # the copy inside the model is this package's scheduler
        assert (SHIPPED / "scheduler" / "scheduling_ddpm_hf.py").read_text() == f.read()
    pipe = load_pipeline(SHIPPED)
    assert pipe.unet.config.sample_size == 28 and isinstance(pipe.scheduler, DDPMHFScheduler)
    ours = sample(
        pipe.unet,
        pipe.scheduler,
        2,
        generator=torch.manual_seed(0),
        num_inference_steps=3,
        precision="float32",
        output_type="np",
        timestep_spacing=None,  # the scheduler's own spacing, as DDPMPipeline runs it
    ).images
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["ddpm_hf"] = None
        import torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(SHIPPED)!r}, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(2, generator=torch.manual_seed(0), num_inference_steps=3, output_type="np").images
        print(json.dumps(images[:, :, :, 0].tolist()))
    """)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.array(json.loads(result.stdout.strip().splitlines()[-1])), ours[..., 0], atol=1e-4)


KILL_WRITER = r"""
import json, os, shutil, signal, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from conftest import tiny_unet
from safetensors.torch import load_file
from ddpm_hf import DDPMHFScheduler, load_pipeline, save_pipeline

path, kills = sys.argv[1], int(sys.argv[3])
versions = [(tiny_unet(16, 1, seed=1), DDPMHFScheduler(variance_type="fixed_small")),
            (tiny_unet(16, 1, seed=2), DDPMHFScheduler(variance_type="fixed_large"))]
save_pipeline(*versions[0], path)
start = time.perf_counter()
for _ in range(3):
    save_pipeline(*versions[0], path)
duration = (time.perf_counter() - start) / 3
weights = [{k: v.clone() for k, v in unet.state_dict().items()} for unet, _ in versions]
outcomes = []
for k in range(kills):
    new = (k + 1) % 2  # each kill interrupts a save of the other version over the one in place
    pid = os.fork()
    if pid == 0:
        save_pipeline(*versions[new], path)
        os._exit(0)
    time.sleep(duration * 1.2 * k / kills)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    leftover = any(name.startswith(".tmp-pipeline-") for name in os.listdir(path))
    pipe = load_pipeline(path)  # must load after every kill
    state = pipe.unet.state_dict()
    unet = [i for i, w in enumerate(weights) if all(torch.equal(state[n], w[n]) for n in w)]
    outcomes.append({"unet": unet, "variance": pipe.scheduler.config.variance_type, "mid_write": leftover})
    for name in os.listdir(path):  # what the kill left (training removes it the same way at its next start)
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(path, name))
    save_pipeline(*versions[new], path)  # a clean state for the next kill, holding version `new`
print(json.dumps({"seconds_per_save": duration, "outcomes": outcomes}))
"""


@pytest.mark.timeout(300)
def test_a_save_killed_at_any_point_leaves_a_pipeline_that_loads(tmp_path):
    tests = Path(__file__).resolve().parent
    command = [sys.executable, "-c", KILL_WRITER, str(tmp_path / "pipe"), str(tests), "20"]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=280, cwd=tests.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])["outcomes"]
    assert len(outcomes) == 20
    for outcome in outcomes:
        assert len(outcome["unet"]) == 1, outcome  # the UNet is wholly the old one or wholly the new one
    assert any(o["mid_write"] for o in outcomes), outcomes  # some kills landed while the new parts were written
    assert {o["unet"][0] for o in outcomes} == {0, 1}  # both old and new are seen: the kills span the save
