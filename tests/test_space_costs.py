"""Requests sized by a model's measured cost (``ddpm_hf.space.costs``), and which of the paper's models a Space lists
(``ddpm_hf.space.paper``, ``Registry.refuse``): pure functions, no app, no network."""

import pytest
import torch

from ddpm_hf import DDPMHFScheduler, save_pipeline
from ddpm_hf.models import build_unet
from ddpm_hf.space import costs, limits, paper
from ddpm_hf.space.registry import Registry

CHEAP = costs.Cost(fixed=0.002, per_image=0.001)  # a 28×28 model: 1000 steps of 16 images in 18 s
DEAR = costs.Cost(fixed=0.05, per_image=0.2)  # CIFAR-10-like on 2 cores


def test_a_cheap_model_keeps_the_apps_defaults_and_is_never_capped():
    assert costs.default_request(CHEAP) == costs.Sized(16, "ddpm", 50)
    assert costs.fit(CHEAP, 16, "ddpm", 1000) == costs.Sized(16, "ddpm", 1000)


def test_a_dear_models_default_request_ends_within_the_default_budget():
    sized = costs.default_request(DEAR)
    assert DEAR.seconds(sized.num_images, sized.num_inference_steps) <= costs.DEFAULT_SECONDS
    assert sized == costs.Sized(1, "ddpm", 50)  # 50 × 0.25 s = 12.5 s; 4 images would take 42.5 s
    guided = costs.default_request(DEAR, guided=True)  # each step runs the doubled batch
    assert DEAR.seconds(2 * guided.num_images, guided.num_inference_steps) <= costs.DEFAULT_SECONDS


def test_an_even_dearer_model_falls_back_to_the_fast_sampler():
    very = costs.Cost(fixed=0.1, per_image=0.5)
    assert costs.default_request(very) == costs.Sized(1, "sde-dpm++", 20)  # 20 × 0.6 s = 12 s
    slowest = costs.Cost(fixed=1.0, per_image=2.0)
    sized = costs.default_request(slowest)
    assert sized.num_images == 1 and slowest.seconds(1, sized.num_inference_steps) <= costs.DEFAULT_SECONDS


def test_a_request_past_the_budget_is_capped_and_says_why():
    sized = costs.fit(DEAR, 16, "ddpm", 1000)
    assert DEAR.seconds(sized.num_images, sized.num_inference_steps) <= costs.MAX_SECONDS
    # not 16 images × 17 steps, fewer than DDPM needs (20): 14 images (2.85 s a step) × 21 steps
    assert (sized.num_images, sized.num_inference_steps) == (14, 21)
    assert sized.note.startswith("Capped to 21 steps and 14 images: 16 images × 1000 steps would take about 3250 s")
    fewer = costs.fit(DEAR, 16, "ddpm", 1000, forwards_per_image=2)  # guided: each image runs twice
    assert fewer.num_images < 16 and fewer.num_inference_steps >= limits.ENOUGH_STEPS["ddpm"]
    assert f"and {fewer.num_images} images" in fewer.note
    rows = costs.fit(DEAR, 20, "ddpm", 1000, shrink_images=False)  # one row per class stays whole
    assert rows.num_images == 20 and 1 <= rows.num_inference_steps < 20


def test_a_gpu_runs_what_is_asked():
    gpu = costs.Cost(fixed=0.05, per_image=0.2, device="cuda")
    assert costs.fit(gpu, 16, "ddpm", 1000) == costs.Sized(16, "ddpm", 1000)


def test_measure_fits_a_positive_cost_that_grows_with_the_batch(tmp_path):
    torch.manual_seed(0)
    unet = build_unet("tiny", 28, 1).eval()
    cost = costs.measure(unet, DDPMHFScheduler())
    assert cost.fixed >= 0 and cost.per_image >= 0 and cost.step_seconds(4) > 0
    assert cost.device == "cpu" and cost.capped


def test_the_papers_models_listed_here(monkeypatch):
    monkeypatch.setattr(paper.constants, "HF_HUB_OFFLINE", False)
    on_cpu = [m.repo_id for m in paper.offered(torch.device("cpu"))]
    assert on_cpu == ["google/ddpm-cifar10-32"]  # the 256-pixel ones take more than a minute an image here
    assert len(paper.offered(torch.device("cuda"))) == len(paper.PAPER_MODELS)
    monkeypatch.setattr(paper.constants, "HF_HUB_OFFLINE", True)
    assert paper.offered(torch.device("cpu")) == []


def test_a_model_the_hub_did_not_answer_for_says_why(tmp_path):
    torch.manual_seed(0)
    save_pipeline(build_unet("tiny", 28, 1).eval(), DDPMHFScheduler(), tmp_path / "local")
    registry = Registry({"local": str(tmp_path / "local"), "google/ddpm-cifar10-32": "google/ddpm-cifar10-32"})
    assert registry.choices()[1] == (
        "google/ddpm-cifar10-32 (the paper's CIFAR-10 model, 32×32)",
        "google/ddpm-cifar10-32",
    )
    registry.refuse({"google/ddpm-cifar10-32": "the Hub did not answer for it here (ConnectError)", "other/x": "-"})
    assert registry.choices()[1][0] == "google/ddpm-cifar10-32 (not reachable here)"
    with pytest.raises(ValueError, match=r"^google/ddpm-cifar10-32 cannot be loaded: the Hub did not answer"):
        registry.get("google/ddpm-cifar10-32")
    assert "other/x" not in registry.refused
    assert registry.get("local").cost is not None  # measured when it loaded


def test_a_run_faster_than_the_measured_cost_lowers_it_and_a_slower_one_does_not():
    faster = DEAR.after_run(forwards=4, steps=10, seconds=4.25)  # predicted 8.5 s: half
    assert faster.step_seconds(4) == pytest.approx(DEAR.step_seconds(4) / 2)
    assert faster.fixed / faster.per_image == pytest.approx(DEAR.fixed / DEAR.per_image)
    assert DEAR.after_run(forwards=4, steps=10, seconds=20.0) == DEAR  # a busy run says nothing about the machine
