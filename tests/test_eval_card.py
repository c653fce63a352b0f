"""Evaluation feeds the card: evaluate's JSON → ``python -m ddpm_hf.hub card`` → the Hub metadata parsed back gives the
same numbers; the sweep table and plot; and the metrics rank weak models below a trained one."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import tiny_unet
from huggingface_hub import ModelCard
from PIL import Image

from ddpm_hf import hub
from ddpm_hf.evaluation import evaluate
from ddpm_hf.evaluation.report import plot_fid_vs_nfe
from ddpm_hf.evaluation.result import Evaluation
from ddpm_hf.pipeline_io import save_pipeline
from ddpm_hf.scheduling_ddpm_hf import DDPMHFScheduler
from ddpm_hf.training.loop import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
GOOD = REPO / "models" / "ddpm-mnist"
SHIPPED_MODELS = ["ddpm-mnist", "ddpm-fashion-mnist", "ddpm-mnist-conditional", "ddpm-fashion-mnist-conditional"]
CLASSIFIER = REPO / "models" / "mnist-classifier"


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    return save_pipeline(tiny_unet(28, 1), DDPMHFScheduler(), tmp_path_factory.mktemp("eval") / "untrained")


@pytest.fixture(scope="module")
def eval_json(untrained, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("json") / "eval.json"
    args = [
        "--model",
        str(untrained),
        "--num_samples",
        "8",
        "--steps",
        "3",
        "--steps_sweep",
        "2,3",
        "--nll_images",
        "8",
        "--nll_timesteps",
        "2",
        "--batch_size",
        "8",
        "--output_json",
        str(path),
    ]
    assert evaluate.main(args) == 0
    return path


def test_evaluate_json_to_card_metadata_round_trip(eval_json, untrained, tmp_path, capsys):
    results = json.loads(eval_json.read_text())
    assert [(e["sampler"], e["steps"], e["nfe"]) for e in results["sweep"]] == [("ddpm", 2, 2), ("ddpm", 3, 3)]
    assert results["generated"] == results["sweep"][1]  # the main set (3 steps) is the sweep's entry
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / hub.TRAINING_INFO).write_text(
        json.dumps(
            {
                "recipe": {"max_train_steps": 7},
                "dataset": "mnist",
                "license": "cc-by-sa-3.0",
                "run": {"images_seen": 448},
            }
        )
    )
    plot_fid_vs_nfe(Evaluation.from_json(results), folder / hub.SWEEP_PLOT)
    argv = [
        "card",
        str(folder),
        "--eval_json",
        str(eval_json),
        "--history",
        "warm start from run A",
        "--repo_id",
        "someone/ddpm-tiny",
    ]
    assert hub.main(argv) == 0
    card = ModelCard.load(folder / "README.md")
    parsed = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert all(
        r.task_type == "unconditional-image-generation" and r.dataset_type == "ylecun/mnist"
        for r in card.data.eval_results
    )
    assert parsed == {
        "fid": round(results["generated"]["fid"], 4),
        "inception_score": round(results["generated"]["inception_score"], 4),
        "confident_share": round(results["generated"]["confident_share"], 4),
        "bits_per_dim": round(results["nll"]["mean"], 4),
    }
    assert card.data.model_name == "someone/ddpm-tiny" and card.data.datasets == ["ylecun/mnist"]
    text = card.text
    assert "- warm start from run A" in text and "| max_train_steps | 7 |" in text and "| images_seen | 448 |" in text
    assert f"{results['train_floor']['fid']:.4f}" in text  # the real floor beside each number
    assert f"{results['nll']['mean']:.4f} ± {results['nll']['standard_error']:.4f}" in text
    for e in results["sweep"]:  # the sweep's rows and its plot
        assert f"| {e['sampler']} | {e['steps']} | {e['fid']:.3f} | {e['inception_score']:.3f} |" in text
    assert f"]({hub.SWEEP_PLOT})" in text and hub.SWEEP_PLOT in hub.PUSH_ALLOW


def test_the_sweep_plot(eval_json, tmp_path):
    results = Evaluation.read(eval_json)
    path = plot_fid_vs_nfe(results, tmp_path / "fid.png")
    image = Image.open(path)
    assert image.size == (640, 420)
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).view(-1, 3)
    assert ((pixels[:, 0] == 31) & (pixels[:, 1] == 119) & (pixels[:, 2] == 180)).any()  # the ddpm line is drawn
    with pytest.raises(ValueError, match="no sweep"):
        plot_fid_vs_nfe(dataclasses.replace(results, sweep=()), tmp_path / "none.png")


@pytest.mark.timeout(400)
@pytest.mark.skipif(not GOOD.is_dir(), reason="needs the shipped models/ddpm-mnist")
def test_metrics_rank_weak_models_below_a_trained_one(untrained, tmp_path):
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    brief = train(
        TrainConfig(
            model_preset="tiny",
            train_batch_size=16,
            max_train_steps=30,
            checkpointing_steps=30,
            learning_rate=3e-3,
            lr_warmup_steps=0,
            ddpm_num_inference_steps=2,
            logger="none",
            output_dir=str(tmp_path / "brief"),
        )
    )
    scores = {}
    for name, model in (("untrained", untrained), ("brief", brief), ("good", GOOD)):
        cfg = evaluate.EvalConfig(
            model=str(model), classifier=str(CLASSIFIER), num_samples=32, steps=25, nll_images=0, batch_size=32
        )
        scores[name] = evaluate.evaluate(cfg).generated.quality
    for weak in ("untrained", "brief"):
        assert scores["good"].fid < scores[weak].fid, scores
        assert scores["good"].inception_score > scores[weak].inception_score, scores
    # why confident share is never reported alone: an untrained UNet's blobs collapse onto few classes (its top class
    # holds over twice the trained model's share of samples) and yet the classifier is about as often confident
    top = {name: max(q.histogram) / sum(q.histogram) for name, q in scores.items()}
    assert top["untrained"] > 2 * top["good"], (top, scores)
    assert scores["untrained"].confident_share > 0.5 * scores["good"].confident_share, scores


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_each_shipped_card_is_its_evaluation(name, tmp_path):
    """The shipped card is what ``python -m ddpm_hf.hub card`` renders from the folder's eval.json and
    training_info.json today: no stale or pasted number, and the Hub metadata holds the evaluation's values."""
    folder = REPO / "models" / name
    results = json.loads((folder / "eval.json").read_text())
    copy = tmp_path / name
    copy.mkdir()
    for file in ("training_info.json", hub.SAMPLE_GRID, hub.SWEEP_PLOT):  # the plot only where the sweep drew one
        if (folder / file).is_file():
            (copy / file).write_bytes((folder / file).read_bytes())
    assert hub.main(["card", str(copy), "--eval_json", str(folder / "eval.json")]) == 0
    assert (copy / "README.md").read_text() == (folder / "README.md").read_text()
    parsed = {r.metric_type: r.metric_value for r in ModelCard.load(folder / "README.md").data.eval_results}
    assert parsed["fid"] == round(results["generated"]["fid"], 4)
    if results["nll"] is not None:  # the conditional models were evaluated without the bound
        assert parsed["bits_per_dim"] == round(results["nll"]["mean"], 4)


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_each_shipped_evaluation_reads_and_writes_back_unchanged(name, tmp_path):
    """The typed result holds every number of the shipped eval.json: written back, the file is the same to the byte."""
    shipped = REPO / "models" / name / "eval.json"
    result = Evaluation.read(shipped)
    assert result.write(tmp_path / "eval.json").read_text() == shipped.read_text()
    assert result.generated.quality.fid == json.loads(shipped.read_text())["generated"]["fid"]


def test_an_older_evaluation_reads_writes_back_and_names_its_estimator(tmp_path):
    """An eval.json from before timestep spacing and the per-image bound (no ``timestep_spacing``, no
    ``exact_timesteps``) still loads, writes back to the byte, and its bound is named as shared strata."""
    from ddpm_hf.evaluation.report import bound_estimator

    older = REPO / "tests" / "data" / "eval-shared-strata.json"
    assert "timestep_spacing" not in json.loads(older.read_text())
    result = Evaluation.read(older)
    assert result.write(tmp_path / "eval.json").read_text() == older.read_text()
    assert "shared" in bound_estimator(result.nll)


def test_the_readme_shows_the_shipped_models_as_evaluated():
    """The README's table of the default models is what ``eval_report.readme_table`` renders from their eval.json."""
    from ddpm_hf.evaluation.report import readme_table

    assert readme_table(REPO / "models") in (REPO / "README.md").read_text()
