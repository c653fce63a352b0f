"""--push_to_hub end to end against the loopback Hub emulator (tests/hub_emulator.py), with the real client.

The real CLI trains a tiny model and pushes it; then a fresh cache downloads the repo, and offline, loads it by repo
id both with ``ddpm_hf.load_pipeline`` and with stock diffusers (``trust_remote_code=True``, ``ddpm_hf`` blocked).
The client reads HF_ENDPOINT at import, so each client runs in its own process. With Xet on (the default) the
emulator marks every file regular; with HF_HUB_DISABLE_XET=1 it takes the safetensors through LFS.
"""

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from hub_emulator import HubEmulator
from huggingface_hub.utils import filter_repo_objects
from test_training import train_command

from ddpm_hf.evaluation.classifier import load_classifier
from ddpm_hf.hub import PUSH_ALLOW

REPO = Path(__file__).resolve().parents[1]
REPO_ID = "test-user/ddpm-tiny"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"

DOWNLOAD = "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))"
LOAD_OFFLINE = r"""
import json, sys
sys.modules["ddpm_hf"] = None  # stock diffusers first: the scheduler must come from the repo's own file
import torch
from diffusers import DiffusionPipeline
repo_id, result = sys.argv[1], {}
pipe = DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)
remote = pipe(batch_size=1, num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
del sys.modules["ddpm_hf"]
from ddpm_hf.pipeline_io import load_pipeline
ours = load_pipeline(repo_id)
local = ours(batch_size=1, num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
print(json.dumps({"remote_scheduler": type(pipe.scheduler).__module__, "scheduler": type(ours.scheduler).__module__,
                  "shape": list(local.shape), "max_difference": float(abs(remote - local).max())}))
"""


def read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(args: list[str], hub: HubEmulator, hf_home: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A fresh interpreter pointed at the emulator; no token unless ``env`` passes one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    local = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    full_env = {**base, **local, "HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), **env}
    command = [sys.executable, *args]
    proc = subprocess.run(command, check=False, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=240)
    assert hub.token not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_cli(images: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """train_accelerate.py and its arguments (test_training's tiny run) pushing ``out`` to REPO_ID at the end."""
    return train_command(images, out, steps, "--push_to_hub", "--hub_model_id", REPO_ID, *extra)[1:]


def test_the_allow_list_takes_the_pipeline_and_card_only():
    pipeline = [
        "model_index.json",
        "README.md",
        "samples.png",
        WEIGHTS,
        "unet/config.json",
        "scheduler/x.py",
        "training_info.json",
    ]
    other = [
        "checkpoint-2/model.safetensors",
        "checkpoint-10/optimizer.bin",
        ".tmp-checkpoint-4/model.safetensors",
        ".tmp-pipeline-ab12/new/unet/config.json",
        "logs/ddpm-hf/events.out.tfevents.1",
        "samples/step-2.png",
        "eval_log.jsonl",
        "notes.txt",
        ".env",
        "wandb/run.log",
    ]
    assert list(filter_repo_objects(pipeline + other, allow_patterns=PUSH_ALLOW)) == pipeline


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("lfs_mode", "env", "extra"),
    [
        ("regular", {}, ["--logger", "tensorboard", "--save_images_steps", "2"]),
        ("lfs", {"HF_HUB_DISABLE_XET": "1"}, ["--logger", "none"]),
    ],
    ids=["xet-on-all-regular", "xet-off-safetensors-lfs"],
)
def test_push_then_download_then_load_offline(tmp_path, lfs_mode, env, extra):
    token = "hf_" + secrets.token_hex(16)
    out, images = tmp_path / "run", write_image_folder(tmp_path / "images", n=32)
    cli = train_cli(images, out, 4, "--checkpointing_steps", "2", *extra)
    with HubEmulator(token=token, lfs_mode=lfs_mode) as hub:
        run(cli, hub, tmp_path / "hf_home", REPO, HF_TOKEN=token, **env)
        assert hub.unknown_routes == []

        local = read_tree(out)
        left_out = [p for p in local if p not in set(filter_repo_objects(local, allow_patterns=PUSH_ALLOW))]
        assert any(p.startswith("checkpoint-") for p in left_out)
        if lfs_mode == "regular":
            assert any(p.startswith("logs/") for p in left_out) and any(p.startswith("samples/") for p in left_out)
        uploaded = hub.repos[REPO_ID]
        assert uploaded == {p: data for p, data in local.items() if p not in left_out}  # same names, same bytes
        assert {
            "model_index.json",
            WEIGHTS,
            "unet/config.json",
            "scheduler/scheduler_config.json",
            "scheduler/scheduling_ddpm_hf.py",
            "README.md",
            "samples.png",
        } <= uploaded.keys()
        assert all(token.encode() not in data for data in local.values())  # model card and logs included

        lfs_requests = [request for request in hub.requests if "lfs" in request[1]]
        if lfs_mode == "lfs":
            weights_oid = hashlib.sha256(uploaded[WEIGHTS]).hexdigest()
            assert ("POST", f"/{REPO_ID}.git/info/lfs/objects/batch") in lfs_requests
            assert ("PUT", f"/lfs-upload/{weights_oid}") in lfs_requests
        else:
            assert lfs_requests == []

        consumer = tmp_path / "consumer_hf_home"
        snapshot = Path(run(["-c", DOWNLOAD, REPO_ID], hub, consumer, tmp_path, **env).stdout.strip().splitlines()[-1])
        assert read_tree(snapshot) == uploaded

        seen = len(hub.requests)
        loaded = run(["-c", LOAD_OFFLINE, REPO_ID], hub, consumer, tmp_path, HF_HUB_OFFLINE="1", **env)
        assert len(hub.requests) == seen  # offline: everything came from the cache
        assert hub.unknown_routes == []
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    remote = result["remote_scheduler"]  # diffusers' dynamic module made from the repo's scheduler file
    assert remote.startswith("diffusers_modules.") and remote.endswith(".scheduling_ddpm_hf"), remote
    assert result["scheduler"] == "ddpm_hf.scheduling_ddpm_hf"
    assert result["shape"] == [1, 28, 28, 1]
    assert result["max_difference"] < 1e-5  # the shipped scheduler file is the package's own module


LOAD_CLASSIFIER = r"""
import json, sys, torch
from ddpm_hf.evaluation.classifier import load_classifier
model = load_classifier(sys.argv[1])
x = torch.linspace(-1, 1, 2 * 28 * 28).view(2, 1, 28, 28)
print(json.dumps({"dataset": model.config["dataset"], "logits": model(x).tolist()}))
"""


def test_a_classifier_loads_by_hub_repo_id(tmp_path):
    """``load_classifier("user/name")`` downloads the weights and config (nothing else) and loads them as the folder."""
    folder = REPO / "models" / "mnist-classifier"
    with HubEmulator() as hub:
        hub.add_repo("test-user/mnist-classifier", files={p.name: p.read_bytes() for p in folder.iterdir()})
        proc = run(["-c", LOAD_CLASSIFIER, "test-user/mnist-classifier"], hub, tmp_path / "hf_home", tmp_path)
        fetched = {path.rsplit("/", 1)[-1] for method, path in hub.requests if "/resolve/" in path}
    assert fetched == {"model.safetensors", "config.json"}  # not the README
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    x = torch.linspace(-1, 1, 2 * 28 * 28).view(2, 1, 28, 28)
    with torch.no_grad():
        here = load_classifier(folder)(x)
    assert loaded["dataset"] == "mnist" and torch.allclose(torch.tensor(loaded["logits"]), here, atol=1e-5)


# Hub problems are found before training -----------------------------------------------------------------------------

CHECK_ACCESS = r"""
import json, sys
from ddpm_hf.hub import check_push_access
answers = []
for repo_id, private in json.loads(sys.argv[1]):
    try:
        answers.append(["ok", check_push_access(repo_id, None, private)])
    except ValueError as e:
        answers.append(["error", str(e)])
print(json.dumps(answers))
"""


def check_access(hub: HubEmulator, tmp_path: Path, token: str, cases: list) -> list:
    """``check_push_access`` for each (repo id, private) in a fresh interpreter whose HF_TOKEN is ``token``."""
    args = ["-c", CHECK_ACCESS, json.dumps(cases)]
    proc = run(args, hub, tmp_path / "hf_home", tmp_path, HF_TOKEN=token)
    return [tuple(answer) for answer in json.loads(proc.stdout.strip().splitlines()[-1])]


@pytest.mark.timeout(200)
def test_push_access_is_checked_against_the_hub(tmp_path):
    token, read_token = "hf_" + secrets.token_hex(16), "hf_" + secrets.token_hex(16)
    with HubEmulator(token=token, read_token=read_token) as hub:
        hub.add_repo("test-user/public-model", private=False)
        hub.add_repo("test-user/private-model", private=True)
        answers = check_access(
            hub,
            tmp_path,
            token,
            [
                ["test-user/new-model", False],
                ["new-model", True],
                ["test-user/public-model", False],
                ["test-user/private-model", True],
                ["test-user/public-model", True],
                ["someone-else/model", False],
                ["test-user/bad id!", False],
            ],
        )
        assert answers[:4] == [
            ("ok", "test-user/new-model"),
            ("ok", "test-user/new-model"),  # the token owner's namespace
            ("ok", "test-user/public-model"),
            ("ok", "test-user/private-model"),
        ]
        assert answers[4] == (
            "error",
            (
                "--hub_private_repo: test-user/public-model exists and is public; make it private on the Hub or drop "
                "the flag"
            ),
        )  # create_repo(private=True, exist_ok=True) would leave it public without a word
        assert answers[5][0] == "error" and "cannot write to 'someone-else'" in answers[5][1]
        assert answers[6][0] == "error"
        assert answers[6][1].startswith("--hub_model_id 'test-user/bad id!' is not a valid repo id")
        refused = check_access(hub, tmp_path, "hf_not_a_token", [["test-user/new-model", False]])
        assert refused[0][0] == "error" and refused[0][1].startswith("--push_to_hub: the Hub refused the token")
        read_only = check_access(hub, tmp_path, read_token, [["test-user/new-model", False]])
        read_only_message = "--push_to_hub: the token of test-user is read-only; use one with write access"
        assert read_only == [("error", read_only_message)]
        assert ("POST", "/api/repos/create") not in hub.requests  # checking writes nothing
        assert hub.unknown_routes == []


@pytest.mark.timeout(200)
def test_a_read_only_token_in_argv_warns_and_stops_before_training(tmp_path):
    token, read_token = "hf_" + secrets.token_hex(16), "hf_" + secrets.token_hex(16)
    out, images = tmp_path / "run", write_image_folder(tmp_path / "images", n=16)
    cli = train_cli(images, out, 2, "--logger", "none", "--hub_token", read_token)
    with HubEmulator(token=token, read_token=read_token) as hub:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
        env = {**base, "NO_PROXY": "127.0.0.1,localhost", "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        proc = subprocess.run(
            [sys.executable, *cli], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("train_accelerate.py: warning: --hub_token is visible to every user"), lines
    assert lines[-1] == (
        "train_accelerate.py: error: --push_to_hub: the token of test-user is read-only; use one with write access"
    )
    assert read_token not in proc.stdout + proc.stderr
    assert not out.exists()  # found before anything was trained or written
