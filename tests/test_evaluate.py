"""Evaluation: metric functions against closed forms, the shipped classifier, and the CLI on a tiny pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unet
from huggingface_hub import ModelCard

from ddpm_hf.cli import build_parser
from ddpm_hf.data import load_dataset
from ddpm_hf.evaluation import classifier, evaluate
from ddpm_hf.evaluation.classifier import Classifier, load_classifier, predict, random_shift, train_classifier
from ddpm_hf.evaluation.metrics import (
    class_histogram,
    confident_share,
    frechet_distance,
    frechet_distance_from_moments,
    inception_score,
)
from ddpm_hf.pipeline_io import save_pipeline
from ddpm_hf.scheduling_ddpm_hf import DDPMHFScheduler

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "mnist-classifier"
ROWS = ("bits/dim", "classifier-FID", "Inception Score", "confident share", "class histogram", "real reference")


# --- metric functions -------------------------------------------------------------------------------------------


def test_inception_score_known_values() -> None:
    assert inception_score(np.tile(np.eye(10), (5, 1))) == pytest.approx(10.0)
    assert inception_score(np.tile(np.eye(10)[:2], (3, 1))) == pytest.approx(2.0)
    constant = np.tile(np.array([0.5, 0.3, 0.2] + [0.0] * 7), (8, 1))
    assert inception_score(constant) == pytest.approx(1.0)
    assert inception_score(np.full((4, 10), 0.1)) == pytest.approx(1.0)


def test_confident_share_and_histogram() -> None:
    probs = np.array([[0.95, 0.05], [0.1, 0.9], [0.11, 0.89], [0.5, 0.5], [0.0, 1.0]])
    assert confident_share(probs, 0.9) == pytest.approx(3 / 5)  # 0.9 itself counts
    assert confident_share(probs, 0.99) == pytest.approx(1 / 5)
    assert class_histogram(np.eye(3)[[0, 2, 2, 1, 2]]).tolist() == [1, 1, 3]
    assert class_histogram(np.eye(4)[[1, 1]]).tolist() == [0, 2, 0, 0]  # empty classes keep their slot


def test_frechet_distance_of_identical_and_shifted_features() -> None:
    features = np.random.default_rng(0).normal(size=(300, 6)) @ np.random.default_rng(1).normal(size=(6, 6))
    assert abs(frechet_distance(features, features)) < 1e-8
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 0.25])
    assert frechet_distance(features, features + shift) == pytest.approx((shift**2).sum(), rel=1e-8)
    other = np.random.default_rng(2).normal(size=(200, 6))
    assert frechet_distance(features, other) == pytest.approx(frechet_distance(other, features), rel=1e-8)


def test_frechet_distance_closed_forms() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()  # diagonal: Σ(σ1 - σ2)²
    assert frechet_distance_from_moments(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)
    # Σ1 = a I against a full Σ2: Tr((Σ1 Σ2)^½) = √a Σ √λ_i(Σ2)
    a, root = 2.0, np.random.default_rng(3).normal(size=(5, 5))
    sigma2 = root @ root.T
    cross = np.sqrt(a) * np.sqrt(np.linalg.eigvalsh(sigma2)).sum()
    expected = 5 * a + np.trace(sigma2) - 2 * cross
    assert frechet_distance_from_moments(np.zeros(5), a * np.eye(5), np.zeros(5), sigma2) == pytest.approx(expected)


def test_frechet_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))


# --- classifier ---------------------------------------------------------------------------------------------------


def test_shipped_classifier_is_safetensors_and_accurate() -> None:
    assert sorted(p.name for p in SHIPPED.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = load_classifier(SHIPPED)
    assert model.config["dataset"] == "mnist" and model.config["test_accuracy"] >= 0.99
    test = load_dataset("mnist", "test")
    probs, features = predict(model, test.images[:2000])
    assert features.shape == (2000, 128) and probs.shape == (2000, 10)
    assert (probs.argmax(1) == test.labels[:2000].numpy()).mean() >= 0.99


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="apt-get install dataset-fashion-mnist"
)
def test_shipped_fashion_mnist_classifier() -> None:
    model = load_classifier(SHIPPED.parent / "fashion-mnist-classifier")
    assert model.config["dataset"] == "fashion-mnist"
    test = load_dataset("fashion-mnist", "test")
    assert (predict(model, test.images[:2000])[0].argmax(1) == test.labels[:2000].numpy()).mean() >= 0.9


def test_classifier_save_load_round_trip_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(widths=(4, 4, 4), feature_dim=8, dataset="mnist", test_accuracy=0.5).eval()
    model.save_pretrained(tmp_path / "c")  # huggingface_hub's PyTorchModelHubMixin: safetensors + config.json
    assert {"model.safetensors", "config.json"} <= {p.name for p in (tmp_path / "c").iterdir()}
    loaded = load_classifier(tmp_path / "c")
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x)) and loaded.features(x).shape == (3, 8)
    assert loaded.config["dataset"] == "mnist" and loaded.config["test_accuracy"] == 0.5
    with pytest.raises(ValueError, match="needs model.safetensors"):
        load_classifier(tmp_path / "missing")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "feature_dim": 16}))
    with pytest.raises(ValueError, match="weights do not load"):
        load_classifier(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_classifier(tmp_path / "c")


def test_random_shift_translates_with_background_fill() -> None:
    x = torch.full((64, 1, 8, 8), -1.0)
    x[:, :, 3, 4] = 1.0
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    rows, cols = torch.nonzero(shifted[:, 0] == 1.0, as_tuple=True)[1:]
    assert len(rows) == 64 and (shifted == 1.0).sum() == 64 and ((shifted == 1) | (shifted == -1)).all()
    assert rows.min() == 1 and rows.max() == 5 and cols.min() == 2 and cols.max() == 6  # |shift| ≤ 2, all used


def test_train_classifier_runs_a_few_steps() -> None:
    model = train_classifier("mnist", steps=3, seed=0, batch_size=8, log_every=0)
    assert not model.training and model.config["dataset"] == "mnist"


def test_classifier_cli_writes_a_card_from_the_settings_it_ran(tmp_path, capsys) -> None:
    argv = ["--out", str(tmp_path / "c"), "--steps", "3", "--batch_size", "8", "--max_shift", "0", "--seed", "4"]
    assert classifier.main(argv) == 0
    model, card = load_classifier(tmp_path / "c"), ModelCard.load(tmp_path / "c" / "README.md")
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("accuracy", model.config["test_accuracy"])
    assert card.data.datasets == ["ylecun/mnist"] and card.data.license == "cc-by-sa-3.0"
    for row in (
        "| steps | 3 |",
        "| batch_size | 8 |",
        "| max_shift | 0 |",
        "| seed | 4 |",
        "| learning_rate | 0.002 |",
    ):
        assert row in card.text, row
    assert f"`python -m ddpm_hf.classifier {' '.join(argv)}`" in card.text
    assert model.config["train_steps"] == 3 and model.config["seed"] == 4


def test_classifier_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert classifier.main(["--out", str(tmp_path / "c"), "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err == "python -m ddpm_hf.classifier: error: --dataset must be one of mnist, fashion-mnist, got 'cifar10'\n"
    assert not (tmp_path / "c").exists()
    with pytest.raises(SystemExit) as exit_info:
        classifier.main(["--steps", "3"])  # --out is required
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err


# --- CLI --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mnist_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pipeline(tiny_unet(28, 1), DDPMHFScheduler(), tmp_path_factory.mktemp("eval") / "tiny-28")


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[str, str]:
    assert evaluate.main(list(args)) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_cli_prints_every_row_and_is_reproducible(tiny_mnist_pipeline: Path, tmp_path: Path, capsys) -> None:
    args = [
        "--model",
        str(tiny_mnist_pipeline),
        "--dataset",
        "mnist",
        "--num_samples",
        "16",
        "--steps",
        "5",
        "--steps_sweep",
        "5,3",
        "--nll_images",
        "16",
        "--nll_timesteps",
        "4",
        "--nll_exact_timesteps",
        "2",
        "--seed",
        "1",
        "--batch_size",
        "8",
    ]
    out, err = run_cli(capsys, *args, "--output_json", str(tmp_path / "a.json"))
    for row in ROWS:
        assert row in out
    assert "N = 16 generated" in out and "num_inference_steps = 5" in out and "seed = 1" in out
    assert "| 5 |" in out and "| 3 |" in out and "| 16 | t ≤ 2 exact, 4 strata above" in out
    assert "[sample ddpm steps=5] batch 2/2" in err and "[nll S=2 K=4] 16/16" in err
    again, _ = run_cli(capsys, *args)
    assert strip_times(again) == strip_times(out)
    result = json.loads((tmp_path / "a.json").read_text())
    assert sum(result["generated"]["histogram"]) == 16 and sum(result["train_floor"]["histogram"]) == 16
    assert result["nll"]["num_images"] == 16 and np.isfinite(result["nll"]["mean"])
    assert 1.0 <= result["train_floor"]["inception_score"] <= 10.0 and result["train_floor"]["fid"] > 0
    other_seed, _ = run_cli(capsys, *args[:-4], "--seed", "2", "--batch_size", "8")
    assert strip_times(other_seed) != strip_times(out)


def strip_times(report: str) -> str:
    """The report without the sweep's wall-time column (the one part that is not a function of the inputs)."""
    return "\n".join(line.rsplit("|", 2)[0] if line.startswith("| ddpm") else line for line in report.splitlines())


def test_samples_do_not_depend_on_the_batch_size(tiny_mnist_pipeline: Path) -> None:
    unet = tiny_unet(28, 1)
    whole = evaluate.generate(unet, DDPMHFScheduler(), 4, 3, seed=5, batch_size=4)
    split = evaluate.generate(unet, DDPMHFScheduler(), 4, 3, seed=5, batch_size=3)
    assert whole.dtype == torch.uint8 and whole.shape == (4, 1, 28, 28)
    assert (whole.int() - split.int()).abs().max() <= 1  # same noise per image; conv rounding may differ by batch


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent/ddpm"], "no such folder"),
        (["--num_samples", "1"], "num_samples must be an integer in [2, 10000]"),
        (["--dataset", "cifar10"], "dataset must be one of mnist, fashion-mnist"),
        (["--steps", "0"], "steps must be an integer in [1, 1000]"),
        (["--sampler", "euler"], "sampler must be one of"),
        (["--plot", "x.png"], "--plot draws the sweep"),
        (["--steps_sweep", "5,x"], "comma-separated integers"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(tiny_mnist_pipeline: Path, capsys, args: list[str], message: str) -> None:
    base = {"--model": str(tiny_mnist_pipeline), "--num_samples": "4", "--steps": "2", "--nll_images": "0"}
    base.update(dict(zip(args[::2], args[1::2])))
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([item for pair in base.items() for item in pair])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("resolution", "channels"), [(32, 1), (28, 3)])
def test_model_that_does_not_fit_the_classifier_is_refused(tmp_path: Path, resolution: int, channels: int) -> None:
    path = save_pipeline(tiny_unet(resolution, channels), DDPMHFScheduler(), tmp_path / "odd")
    cfg = evaluate.EvalConfig(model=str(path), classifier=str(SHIPPED), num_samples=4, steps=2, nll_images=0)
    with pytest.raises(ValueError, match="pick the matching --dataset"):
        evaluate.evaluate(cfg)


def test_the_library_takes_both_folders_explicitly_the_cli_defaults_to_the_shipped_ones(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="give the model and the classifier"):
        evaluate.evaluate(evaluate.EvalConfig(model=str(SHIPPED.parent / "ddpm-mnist")))
    monkeypatch.chdir(SHIPPED.parent.parent)
    flags = build_parser(evaluate.EvalConfig, "evaluate", "").parse_args(["--dataset", "fashion-mnist"])
    assert (flags.model, flags.classifier) == ("models/ddpm-fashion-mnist", "models/fashion-mnist-classifier")
    flags = build_parser(evaluate.EvalConfig, "evaluate", "").parse_args(["--classifier", "someone/classifier"])
    assert (flags.model, flags.classifier) == ("models/ddpm-mnist", "someone/classifier")


def test_module_entry_point_reports_a_missing_model() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ddpm_hf.evaluate", "--model", "/nonexistent/ddpm", "--num_samples", "4"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "python -m ddpm_hf.evaluate: error: model /nonexistent/ddpm: no such folder"
    ]


def test_generation_runs_the_network_untimed(monkeypatch):
    """Scores must not depend on the layout a machine's timing picks: generate() never times the candidates."""
    from ddpm_hf import speed

    def timed(*args, **kwargs):
        raise AssertionError("evaluate.generate timed the network")

    monkeypatch.setattr(speed, "time_candidates", timed)
    monkeypatch.delenv(speed.AUTOTUNE_ENV, raising=False)
    speed.forget()
    images = evaluate.generate(tiny_unet(), DDPMHFScheduler(), 3, 2, 0, 2)
    assert images.shape[0] == 3 and images.dtype == torch.uint8
