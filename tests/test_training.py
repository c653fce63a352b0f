"""Training: deterministic micro-batches, exact resume (also after ``kill -9``), atomic checkpoints and pruning, the
pipeline folder (EMA weights, model card) and the tensorboard logs.

Everything runs the "tiny" UNet for a few steps at batch 8, in this process where it can; a real process is started
only where the test is about processes (``kill -9``, loading without ``ddpm_hf``).
"""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import write_image_folder
from safetensors.torch import load_file

import train_accelerate
from ddpm_hf.training.batches import BatchPlan, micro_batch, step_batch
from ddpm_hf.training.checkpoints import EMA_FILE, STATE_FILE, list_checkpoints
from ddpm_hf.training.loop import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
UNET_FILE = "unet/diffusion_pytorch_model.safetensors"
# The LR schedule is a function of max_train_steps; a warm-up that outlasts the runs makes it the same for a run of
# 3 steps and one of 6, so "3 steps, then resume to 6" can be compared with "6 steps".
TINY = {
    "model_preset": "tiny",
    "train_batch_size": 8,
    "use_ema": True,
    "ddpm_num_inference_steps": 2,
    "logger": "none",
    "lr_scheduler": "constant_with_warmup",
    "lr_warmup_steps": 8,
    "learning_rate": 1e-3,
}


def tiny_config(output_dir: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "output_dir": str(output_dir), **overrides})


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run starts from a fresh Accelerate singleton, as a new process would."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], atol=atol, rtol=0, msg=key)


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (to show that nothing changed)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """An uninterrupted 6-step MNIST run with EMA and a checkpoint every 3 steps."""
    AcceleratorState._reset_state(reset_partial_state=True)
    return train(tiny_config(tmp_path_factory.mktemp("run") / "a", max_train_steps=6, checkpointing_steps=3))


# Micro-batches ------------------------------------------------------------------------------------------------------


def indexed_images(n: int) -> torch.Tensor:
    """Image i is filled with the value i, so a batch tells which examples it holds."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()


def example_ids(x0: torch.Tensor) -> list[int]:
    return ((x0[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def plan(batch: int, seed: int = 1, processes: int = 1, accumulation: int = 1) -> BatchPlan:
    return BatchPlan(batch, seed, True, 1000, processes, accumulation)


def test_a_step_batch_is_a_function_of_the_step():
    data = indexed_images(40)
    first = step_batch(data, 3, plan(8))
    step_batch(data, 4, plan(8))  # no hidden state between calls
    step_batch(data, 3, plan(8, seed=2))
    again = step_batch(data, 3, plan(8))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    other = step_batch(data, 4, plan(8))
    assert not torch.equal(first[1], other[1]) and example_ids(first[0]) != example_ids(other[0])
    assert not torch.equal(first[1], step_batch(data, 3, plan(8, seed=2))[1])


def test_each_epoch_visits_each_example_at_most_once_in_a_new_order():
    data = indexed_images(20)  # 2 step batches of 8 per epoch; 4 examples left out each epoch
    epochs = [
        [i for s in (2 * e, 2 * e + 1) for i in example_ids(step_batch(data, s, plan(8, seed=0))[0])] for e in range(2)
    ]
    for ids in epochs:
        assert len(ids) == len(set(ids)) == 16
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize(("processes", "accumulation"), [(2, 1), (4, 1), (1, 2), (2, 2)])
def test_shares_of_processes_and_micro_steps_concatenate_to_the_one_process_batch(processes, accumulation):
    data = indexed_images(64)
    one = step_batch(data, 5, plan(16, seed=3))
    split = plan(16 // (processes * accumulation), 3, processes, accumulation)
    shares = [micro_batch(data, 5, k, i, split) for k in range(accumulation) for i in range(processes)]
    for k in range(3):
        assert shares[0][k].shape[0] == split.batch_size
        assert torch.equal(torch.cat([share[k] for share in shares]), one[k])


# Exact resume, checkpoints -----------------------------------------------------------------------------------------


def test_resume_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(finished_run, tmp_path):
    b = tmp_path / "b"
    train(tiny_config(b, max_train_steps=3, checkpointing_steps=3))
    assert [p.name for p in list_checkpoints(b)] == ["checkpoint-3"]
    AcceleratorState._reset_state(reset_partial_state=True)
    train(tiny_config(b, max_train_steps=6, checkpointing_steps=3, resume_from_checkpoint="latest"))

    assert json.loads((b / "checkpoint-6" / STATE_FILE).read_text())["global_step"] == 6
    for name in ("model.safetensors", EMA_FILE):
        assert_same_tensors(weights(b / "checkpoint-6" / name), weights(finished_run / "checkpoint-6" / name))
    assert_same_tensors(weights(b / UNET_FILE), weights(finished_run / UNET_FILE))
    # The comparison can fail: 3 more steps moved the weights.
    before, after = (weights(b / name / "model.safetensors") for name in ("checkpoint-3", "checkpoint-6"))
    assert any(not torch.allclose(before[k], after[k]) for k in before)


def test_checkpoints_total_limit_keeps_the_newest(tmp_path):
    out = train(
        tiny_config(
            tmp_path / "run", max_train_steps=5, checkpointing_steps=1, checkpoints_total_limit=2, use_ema=False
        )
    )
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-4", "checkpoint-5"]
    assert not list(out.glob(".tmp-*"))


def test_a_fresh_run_over_an_old_one_drops_the_old_checkpoints(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / ".tmp-checkpoint-9").mkdir()  # what a kill -9 during a save leaves
    train(tiny_config(out, max_train_steps=2, checkpointing_steps=2, overwrite_output_dir=True))
    # checkpoint-3 and -6 belonged to the old run: "latest" must not resume them, pruning must not prefer them.
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert not list(out.glob(".tmp-*"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncated_scaler(checkpoint: Path) -> None:
    """A GradScaler state cut short, as fp16 runs write it beside the optimizer (``scaler.pt``)."""
    torch.save({"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0}, checkpoint / "scaler.pt")
    _truncate(checkpoint / "scaler.pt")


def tiny_argv(out: Path, steps: int, *extra: str) -> list[str]:
    """train_accelerate.py's arguments for a tiny run with EMA into ``out``."""
    tiny = ["--model_preset", "tiny", "--train_batch_size", "8", "--use_ema", "--logger", "none"]
    return ["--output_dir", str(out), *tiny, "--max_train_steps", str(steps), *extra]


def _resume_argv(out: Path) -> list[str]:
    return tiny_argv(out, 9, "--resume_from_checkpoint", "latest")


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda c: _truncate(c / "model.safetensors"), "checkpoint-6"),
        (lambda c: (c / STATE_FILE).unlink(), "checkpoint-6"),
        (lambda c: _truncate(c / EMA_FILE), "checkpoint-6"),
        (lambda c: (c / "optimizer.bin").write_bytes(b"not a torch file"), "checkpoint-6"),
        (lambda c: _truncate(c / "optimizer.bin"), "checkpoint-6"),
        (_truncated_scaler, "scaler.pt"),
    ],
    ids=[
        "truncated-model",
        "no-training-state",
        "truncated-ema",
        "garbage-optimizer",
        "truncated-optimizer",
        "truncated-scaler",
    ],
)
def test_resume_from_a_corrupt_checkpoint_fails_in_one_line_and_writes_nothing(
    finished_run, tmp_path, capsys, damage, named
):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    damage(out / "checkpoint-6")
    before = tree_digest(out)
    assert train_accelerate.main(_resume_argv(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("train_accelerate.py: error: checkpoint ") and named in err and "corrupt" in err
    assert err.endswith(
        f"the previous sound checkpoint is checkpoint-3: resume with --resume_from_checkpoint {out / 'checkpoint-3'}"
    )
    assert tree_digest(out) == before


def test_a_corrupt_checkpoint_with_no_sound_one_before_it_says_so(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    _truncate(out / "checkpoint-6" / "model.safetensors")
    _truncate(out / "checkpoint-3" / "optimizer.bin")  # the older one is damaged too: it must not be offered
    assert train_accelerate.main(_resume_argv(out)) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint-6" in err and err.endswith("no earlier sound checkpoint is left"), err


# kill -9 ------------------------------------------------------------------------------------------------------------


def train_command(folder: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train_accelerate.py"),
        "--train_data_dir",
        str(folder),
        "--model_preset",
        "tiny",
        "--train_batch_size",
        "8",
        "--max_train_steps",
        str(steps),
        "--checkpointing_steps",
        "3",
        "--use_ema",
        "--ddpm_num_inference_steps",
        "2",
        "--logger",
        "none",
        "--learning_rate",
        "1e-3",
        "--lr_warmup_steps",
        "10",
        "--output_dir",
        str(out),
        *extra,
    ]


def _assert_complete(checkpoint: Path) -> None:
    state = json.loads((checkpoint / STATE_FILE).read_text())
    assert checkpoint.name == f"checkpoint-{state['global_step']}"
    assert weights(checkpoint / "model.safetensors") and weights(checkpoint / EMA_FILE)
    assert torch.load(checkpoint / "optimizer.bin", weights_only=True)["state"]


@pytest.mark.timeout(240)
def test_kill_9_mid_run_then_resume_latest_matches_an_uninterrupted_run(tmp_path):
    folder, out, steps = write_image_folder(tmp_path / "images"), tmp_path / "run", 30
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen(train_command(folder, out, steps), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not list_checkpoints(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # Kill while a checkpoint is being written: freeze the run when its temporary folder shows, and kill it only
        # if the folder is still there (else the save just finished: let it go on and wait for the next one).
        killed_mid_write = False
        while not killed_mid_write and proc.poll() is None and time.monotonic() < deadline:
            if list(out.glob(".tmp-checkpoint-*")):
                proc.send_signal(signal.SIGSTOP)
                killed_mid_write = bool(list(out.glob(".tmp-checkpoint-*")))
                proc.send_signal(signal.SIGKILL if killed_mid_write else signal.SIGCONT)
            time.sleep(0.0005)
        assert killed_mid_write, "no checkpoint write was caught: " + (tmp_path / "killed.log").read_text()[-2000:]
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = list_checkpoints(out)
    assert killed_at and int(killed_at[-1].name.split("-")[1]) < steps
    for checkpoint in killed_at:
        _assert_complete(checkpoint)

    resumed = subprocess.run(
        train_command(folder, out, steps, "--resume_from_checkpoint", "latest"),
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(out.glob(".tmp-*"))  # a leftover of the kill is cleaned on resume
    for checkpoint in list_checkpoints(out):
        _assert_complete(checkpoint)

    reference = train(
        tiny_config(
            tmp_path / "reference",
            train_data_dir=str(folder),
            max_train_steps=steps,
            checkpointing_steps=steps,
            lr_scheduler="cosine",
            lr_warmup_steps=10,
        )
    )
    name = f"checkpoint-{steps}"
    for file in ("model.safetensors", EMA_FILE):
        assert_same_tensors(weights(out / name / file), weights(reference / name / file))
    assert_same_tensors(weights(out / UNET_FILE), weights(reference / UNET_FILE))
