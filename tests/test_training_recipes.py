"""Training recipes: the loss against the paper's formulas, min-SNR-γ, accumulation, epochs, precisions, prediction
types, warm starts, checkpoint pruning, the start summary and evaluation during training.

Runs are the "tiny" UNet for a few steps on 64 small PNGs (or MNIST where the classifier is needed).
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import write_image_folder
from safetensors.torch import load_file
from test_training import UNET_FILE, tiny_config

from ddpm_hf.cli import SHIPPED_MODELS
from ddpm_hf.scheduling_ddpm_hf import DDPMHFScheduler
from ddpm_hf.training import periodic_eval as train_eval
from ddpm_hf.training.batches import step_batch
from ddpm_hf.training.checkpoints import EMA_FILE, list_checkpoints
from ddpm_hf.training.loop import diffusion_loss, optimizer_step, prepare, run, train
from ddpm_hf.training.periodic_eval import EVAL_LOG


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images")


def zero_model(x, t):
    """A "network" that predicts 0, so the loss is the mean square of the target."""
    return SimpleNamespace(sample=torch.zeros_like(x))


class Probe:
    """A stand-in network whose output depends on both inputs, 0.5·x + t/1000, and that records what it receives."""

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        self.seen.append((x.clone(), t.clone()))
        return SimpleNamespace(sample=0.5 * x + t.view(-1, 1, 1, 1).float() / 1000)


def paper_alphas_cumprod() -> np.ndarray:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), β linear from 1e-4 to 0.02 over T = 1000 steps (Ho et al. 2020, sec. 4), float64."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))


def paper_x_t(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Ho et al. 2020, eq. 4), in float64."""
    a = torch.from_numpy(paper_alphas_cumprod())[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_the_loss_target_is_the_papers(kind):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1, torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    a = torch.from_numpy(paper_alphas_cumprod())[t].view(-1, 1, 1, 1)
    target = {
        "epsilon": noise.double(),
        "sample": x0.double(),
        "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0,
    }[kind]  # Salimans & Ho 2022: v = √ᾱ ε − √(1−ᾱ) x_0
    probe, scheduler = Probe(), DDPMHFScheduler(prediction_type=kind)
    loss = diffusion_loss(probe, scheduler, x0, noise, t)
    [(x_seen, t_seen)] = probe.seen
    x_t = paper_x_t(x0, noise, t)
    torch.testing.assert_close(x_seen.double(), x_t, atol=1e-6, rtol=0)  # x_t, not x_0 or ε, at the given t
    assert torch.equal(t_seen, t)
    prediction = 0.5 * x_t + t.view(-1, 1, 1, 1).double() / 1000
    expected = ((prediction - target) ** 2).mean().item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # The prediction is far from zero, so a sign error in the target (−ε, −v) would change the value.
    flipped = ((prediction + target) ** 2).mean().item()
    assert abs(flipped - expected) > 0.1 * expected


def test_the_training_step_feeds_the_network_x_t_at_the_drawn_t(images, tmp_path):
    state = prepare(tiny_config(tmp_path / "run", train_data_dir=str(images), max_train_steps=4, use_ema=False))
    seen = []
    state.model.register_forward_pre_hook(lambda module, args: seen.append((args[0].clone(), args[1].clone())))
    state.step = 3
    optimizer_step(state, state.data.images)
    x0, noise, t = step_batch(state.data.images, 3, state.plan)
    [(x_seen, t_seen)] = seen
    assert torch.equal(t_seen, t) and len(set(t.tolist())) > 1  # each image at its own drawn t
    torch.testing.assert_close(x_seen.double(), paper_x_t(x0, noise, t), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kind", "weight"),
    [
        ("epsilon", lambda snr: np.minimum(snr, 5) / snr),
        ("sample", lambda snr: np.minimum(snr, 5)),
        ("v_prediction", lambda snr: np.minimum(snr, 5) / (snr + 1)),
    ],
)
def test_min_snr_gamma_weights_each_image(kind, weight):
    t = torch.tensor([5, 50, 300, 800])
    x0, noise = torch.ones(4, 1, 2, 2) * 0.5, torch.ones(4, 1, 2, 2)
    a = paper_alphas_cumprod()[t.numpy()]
    snr = a / (1 - a)  # SNR_t = ᾱ_t / (1 − ᾱ_t); t = 5 has SNR ≫ 5, t = 800 has SNR ≪ 5: both sides of the clip
    assert snr.max() > 5 > snr.min()
    scheduler = DDPMHFScheduler(prediction_type=kind)
    per_image = {
        "epsilon": np.ones(4),
        "sample": np.full(4, 0.25),
        "v_prediction": (np.sqrt(a) - np.sqrt(1 - a) * 0.5) ** 2,
    }[kind]
    expected = (per_image * weight(snr)).mean()
    assert diffusion_loss(zero_model, scheduler, x0, noise, t, snr_gamma=5.0).item() == pytest.approx(expected, 1e-4)


def test_a_short_run_lowers_the_loss(images, tmp_path):
    cfg = tiny_config(
        tmp_path / "run",
        train_data_dir=str(images),
        max_train_steps=40,
        checkpointing_steps=40,
        learning_rate=3e-3,
        lr_warmup_steps=0,
        use_ema=False,
    )
    r = prepare(cfg)
    losses = []
    log = r.accelerator.log
    r.accelerator.log = lambda values, step=None: losses.append(values["loss"]) or log(values, step=step)
    run(r)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5]), losses


def test_gradient_accumulation_equals_one_big_batch(images, tmp_path):
    common = {
        "train_data_dir": str(images),
        "max_train_steps": 2,
        "checkpointing_steps": 2,
        "use_ema": False,
        "adam_epsilon": 1.0,
        "learning_rate": 0.1,
    }
    big = train(tiny_config(tmp_path / "big", train_batch_size=16, **common))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accumulated = train(tiny_config(tmp_path / "acc", train_batch_size=8, gradient_accumulation_steps=2, **common))
    a, b = load_file(big / UNET_FILE), load_file(accumulated / UNET_FILE)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)
    initial = prepare(tiny_config(tmp_path / "init", train_batch_size=16, **common)).model.state_dict()
    assert max((a[k] - initial[k]).abs().max().item() for k in a) > 1e-3  # it trained: the comparison can fail


def test_num_epochs_sets_the_steps(images, tmp_path):
    out = train(tiny_config(tmp_path / "run", train_data_dir=str(images), num_epochs=2, checkpointing_steps=100))
    assert json.loads((out / "training_info.json").read_text())["run"]["steps"] == 2 * (64 // 8)


@pytest.mark.parametrize(
    "overrides",
    [
        {"mixed_precision": "bf16"},
        {"prediction_type": "sample"},
        {"prediction_type": "v_prediction", "snr_gamma": 5.0},
    ],
    ids=["bf16", "sample", "v-min-snr"],
)
def test_other_precisions_and_targets_train_and_export(images, tmp_path, overrides):
    out = train(
        tiny_config(
            tmp_path / "run", train_data_dir=str(images), max_train_steps=2, checkpointing_steps=2, **overrides
        )
    )
    weights = load_file(out / UNET_FILE)
    assert all(torch.isfinite(w).all() and w.dtype == torch.float32 for w in weights.values())
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == overrides.get("prediction_type", "epsilon")


def test_warm_start_begins_from_the_given_pipeline(images, tmp_path):
    first = train(
        tiny_config(tmp_path / "first", train_data_dir=str(images), max_train_steps=2, checkpointing_steps=2)
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = tiny_config(
        tmp_path / "second",
        train_data_dir=str(images),
        max_train_steps=1,
        checkpointing_steps=1,
        pretrained_model_name_or_path=str(first),
        seed=7,
    )
    r = prepare(cfg)
    assert r.step == 0
    exported = load_file(first / UNET_FILE)
    for name, p in r.model.state_dict().items():
        torch.testing.assert_close(p, exported[name], atol=0, rtol=0, msg=name)


def test_pruning_never_removes_the_checkpoint_just_written(images, tmp_path):
    out = train(tiny_config(tmp_path / "run", train_data_dir=str(images), max_train_steps=6, checkpointing_steps=2))
    AcceleratorState._reset_state(reset_partial_state=True)
    train(
        tiny_config(
            out,
            train_data_dir=str(images),
            max_train_steps=3,
            checkpointing_steps=3,
            checkpoints_total_limit=1,
            resume_from_checkpoint=str(out / "checkpoint-2"),
        )
    )
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]  # not checkpoint-6, the newer old one


def test_the_start_summary(images, tmp_path, capsys):
    train(
        tiny_config(
            tmp_path / "run",
            train_data_dir=str(images),
            max_train_steps=1,
            checkpointing_steps=1,
            gradient_accumulation_steps=2,
            train_batch_size=4,
        )
    )
    out = capsys.readouterr().out
    for words in (
        "***** Running training *****",
        "images (64 images of 1x28x28)",
        "processes = 1",
        "global batch = 8",
        "gradient accumulation steps = 2",
        "optimizer steps = 1 (8 images",
        "mixed precision = no",
        "starting at step 0",
    ):
        assert words in out, words


@pytest.mark.timeout(300)
def test_eval_steps_log_classifier_scores(tmp_path, monkeypatch):
    batches, generate = [], train_eval.generate
    monkeypatch.setattr(train_eval, "generate", lambda *a, **k: batches.append(k["batch_size"]) or generate(*a, **k))
    out = train(
        tiny_config(
            tmp_path / "run",
            dataset="mnist",
            max_train_steps=2,
            checkpointing_steps=2,
            eval_steps=1,
            eval_classifier=str(SHIPPED_MODELS / "mnist-classifier"),
            eval_num_samples=16,
            eval_inference_steps=2,
            logger="tensorboard",
        )
    )
    assert batches == [8, 8]  # each evaluation samples in batches of --train_batch_size (8), not all 16 at once
    records = [json.loads(line) for line in (out / EVAL_LOG).read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["fid"] > 0 and 1 <= record["inception_score"] <= 10 and 0 <= record["confident_share"] <= 1
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "logs").rglob("*"))


# Precision ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "dtype"), [("no", torch.float32), ("bf16", torch.bfloat16)])
def test_the_forward_runs_in_the_asked_precision(images, tmp_path, precision, dtype):
    cfg = tiny_config(tmp_path / "run", train_data_dir=str(images), max_train_steps=1, mixed_precision=precision)
    state = prepare(cfg)
    seen = []
    state.model.conv_in.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    optimizer_step(state, state.data.images)
    assert seen == [dtype]  # what the network computed in, seen from inside it
    assert all(p.dtype == torch.float32 for p in state.model.parameters())  # the weights stay float32


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="fp16 needs a GPU: on a CPU accelerate 1.15 runs --mixed_precision fp16 in float32, without autocast or "
    "a GradScaler, and training refuses it there",
)
def test_fp16_with_its_grad_scaler_saves_and_resumes(images, tmp_path):
    out = tmp_path / "run"
    common = {"train_data_dir": str(images), "mixed_precision": "fp16", "checkpointing_steps": 2}
    train(tiny_config(out, max_train_steps=2, **common))
    scale = torch.load(out / "checkpoint-2" / "scaler.pt", weights_only=True)["scale"]
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    state = prepare(tiny_config(out, max_train_steps=4, resume_from_checkpoint="latest", **common))
    assert state.step == 2 and state.accelerator.scaler.get_scale() == scale
    run(state)
    assert all(torch.isfinite(w).all() for w in load_file(out / "checkpoint-4" / "model.safetensors").values())


# EMA ----------------------------------------------------------------------------------------------------------------


def ema_decay(k: int, inv_gamma: float, power: float, max_decay: float) -> float:
    """The decay of diffusers' ``EMAModel`` (with warm-up) at its k-th update: 0 at the first, then
    min(max_decay, 1 − (1 + (k − 1)/inv_gamma)^−power)."""
    return 0.0 if k <= 1 else min(max_decay, 1 - (1 + (k - 1) / inv_gamma) ** -power)


def test_the_ema_uses_the_runs_inv_gamma_power_and_max_decay(images, tmp_path, monkeypatch):
    settings = {"ema_inv_gamma": 2.0, "ema_power": 0.5, "ema_max_decay": 0.35}  # none is the default
    out = tmp_path / "run"
    state = prepare(tiny_config(out, train_data_dir=str(images), max_train_steps=5, checkpointing_steps=5, **settings))
    weights_after, decays, update = [], [], state.ema.step

    def recording(parameters):
        parameters = list(parameters)
        update(parameters)
        weights_after.append([p.detach().clone() for p in parameters])
        decays.append(state.ema.cur_decay_value)

    monkeypatch.setattr(state.ema, "step", recording)
    names = [name for name, _ in state.model.named_parameters()]
    shadow = [p.detach().clone() for p in state.model.parameters()]
    run(state)

    expected = [ema_decay(k, 2.0, 0.5, 0.35) for k in range(1, 6)]
    assert decays == pytest.approx(expected, abs=1e-12)
    assert expected[-1] == 0.35 > expected[2]  # the cap was reached: max_decay took part
    for decay, weights in zip(expected, weights_after):  # θ_ema ← θ_ema − (1 − decay)(θ_ema − θ)
        shadow = [s - (1 - decay) * (s - w) for s, w in zip(shadow, weights)]
    saved = load_file(out / "checkpoint-5" / EMA_FILE)
    for name, value in zip(names, shadow):
        torch.testing.assert_close(saved[name], value, atol=1e-6, rtol=0, msg=name)
