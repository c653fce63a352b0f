"""Two real processes on the CPU (gloo, ``DistributedType.MULTI_CPU``) train exactly as one process with twice the
batch, and a launch whose processes would each train alone is refused.

The processes are started as a user starts them, with ``accelerate launch --multi_gpu --num_processes 2 ...``. A probe
(written into the test's tmp folder, not shipped) runs ``train_accelerate.main`` and, just before
``end_training``, writes what each rank holds: its distributed type, world size and weights.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import write_image_folder
from safetensors.torch import load_file

from ddpm_hf.training.loop import TrainConfig, init_unet, train

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
LAUNCH = [
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]
STEPS, BATCH = 3, 8  # 3 optimizer steps at global batch 8: 2 processes x 4, or 1 process x 8

PROBE = r"""
import json, os, sys
from pathlib import Path
from accelerate import Accelerator
from safetensors.torch import save_file

sys.path.insert(0, os.environ["REPO_ROOT"])
import train_accelerate

probe_dir, end_training = Path(os.environ["PROBE_DIR"]), Accelerator.end_training


def record_then_end(self):
    unet = self.unwrap_model(self._models[0])
    rank = self.process_index
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    save_file(state, probe_dir / f"rank{rank}.safetensors")
    seen = {"distributed_type": str(self.distributed_type), "num_processes": self.num_processes,
            "process_index": rank, "world_size": int(os.environ["WORLD_SIZE"])}
    (probe_dir / f"rank{rank}.json").write_text(json.dumps(seen))
    end_training(self)


Accelerator.end_training = record_then_end
sys.argv[0] = "train_accelerate.py"
sys.exit(train_accelerate.main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(images: Path, out: Path, batch: int) -> list[str]:
    return [
        "--train_data_dir",
        str(images),
        "--model_preset",
        "tiny",
        "--train_batch_size",
        str(batch),
        "--max_train_steps",
        str(STEPS),
        "--checkpointing_steps",
        str(STEPS),
        "--use_ema",
        "--logger",
        "none",
        "--learning_rate",
        "0.1",
        "--adam_epsilon",
        "1.0",
        "--lr_scheduler",
        "constant",
        "--ddpm_num_inference_steps",
        "2",
        "--output_dir",
        str(out),
    ]


def launch(script: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` two processes on a free port, without any ACCELERATE_* setting from outside."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    command = [str(ACCELERATE), "launch", *LAUNCH, "--main_process_port", str(free_port()), str(script), *args]
    return subprocess.run(
        command, check=False, cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=280
    )


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], atol=atol, rtol=0, msg=key)


@pytest.mark.timeout(300)
def test_two_cpu_processes_at_half_batch_train_like_one_process(tmp_path):
    images, out, probe_dir = write_image_folder(tmp_path / "images", n=32), tmp_path / "two", tmp_path / "probe"
    probe_dir.mkdir()
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    args = ["--cpu", *train_args(images, out, BATCH // 2)]
    proc = launch(probe, args, REPO_ROOT=str(REPO), PROBE_DIR=str(probe_dir))
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [json.loads((probe_dir / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["process_index"] for r in ranks] == [0, 1]
    for seen in ranks:
        assert seen["distributed_type"] == "DistributedType.MULTI_CPU"
        assert seen["num_processes"] == seen["world_size"] == 2
    rank0, rank1 = (load_file(probe_dir / f"rank{i}.safetensors") for i in range(2))
    assert_close(rank0, rank1, atol=0)  # DDP kept the replicas identical

    checkpoint = out / f"checkpoint-{STEPS}"
    saved = {p.name for p in checkpoint.iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= saved  # both ranks' parts
    assert not list(out.glob(".tmp-*"))

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    cfg = TrainConfig(
        train_data_dir=str(images),
        model_preset="tiny",
        train_batch_size=BATCH,
        max_train_steps=STEPS,
        checkpointing_steps=STEPS,
        use_ema=True,
        logger="none",
        learning_rate=0.1,
        adam_epsilon=1.0,
        lr_scheduler="constant",
        ddpm_num_inference_steps=2,
        output_dir=str(tmp_path / "one"),
    )
    one = train(cfg)
    raw = load_file(one / f"checkpoint-{STEPS}" / "model.safetensors")
    assert_close(rank0, raw, atol=1e-5)
    assert_close(load_file(checkpoint / "model.safetensors"), raw, atol=1e-5)
    unet = "unet/diffusion_pytorch_model.safetensors"  # the EMA weights
    assert_close(load_file(out / unet), load_file(one / unet), atol=1e-5)
    # Adam with ε = 1 steps by ≈ lr·g: with the usual ε its update m/√v is ≈ ±1 for a near-zero gradient, so the
    # last-bit differences of two reduction orders (DDP's average vs one batch) could flip a weight by 2·lr.
    # The comparison can fail: the weights moved by far more than the tolerance.
    initial = init_unet(cfg, channels=1).state_dict()
    assert max((raw[k] - initial[k]).abs().max().item() for k in raw) > 1e-3


@pytest.mark.timeout(300)
def test_multi_gpu_on_a_cpu_without_cpu_is_refused(tmp_path):
    images, out = write_image_folder(tmp_path / "images", n=16), tmp_path / "run"
    proc = launch(REPO / "train_accelerate.py", train_args(images, out, 4))
    assert proc.returncode != 0
    message = "train_accelerate.py: error: 2 processes were launched but Accelerate sees 1 (DistributedType.NO)"
    assert message in proc.stderr
    assert not out.exists()
