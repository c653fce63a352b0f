"""What protects a long run: a step whose loss or gradient is not finite stops it before anything is written, and a
checkpoint refuses to resume under settings that define another run (older checkpoints resume with a warning).

Runs are the "tiny" UNet for a few steps at batch 8 on 64 small PNGs (the run-definition cases reuse test_training's
6-step MNIST run).
"""

import json
import shutil

import pytest
import torch
from conftest import write_image_folder
from safetensors.torch import load_file, save_file
from test_training import (
    UNET_FILE,
    assert_same_tensors,
    finished_run,
    fresh_accelerate_state,
    tiny_argv,
    tiny_config,
    tree_digest,
    weights,
)

import train_accelerate
from ddpm_hf.training import loop as training
from ddpm_hf.training.checkpoints import EMA_FILE, STATE_FILE, list_checkpoints
from ddpm_hf.training.loop import prepare, train

__all__ = ["finished_run", "fresh_accelerate_state"]  # fixtures shared with test_training


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images")


class NanGradient(torch.autograd.Function):
    """The identity going forward; a NaN gradient going back (a finite loss whose gradient is not)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_step_stops_the_run_before_it_writes(images, tmp_path, monkeypatch, capsys, where):
    real_loss, calls = training.diffusion_loss, []

    def poisoned(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) != 5:  # optimizer step 5 (one micro-step per step) goes wrong
            return loss
        return loss * float("nan") if where == "loss" else NanGradient.apply(loss)

    monkeypatch.setattr(training, "diffusion_loss", poisoned)
    out = tmp_path / "run"
    extra = ["--train_data_dir", str(images), "--checkpointing_steps", "2", "--checkpoints_total_limit", "1"]
    argv = tiny_argv(out, 8, *extra, "--ddpm_num_inference_steps", "2")
    assert train_accelerate.main(argv) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1].split("\r")[-1]
    assert last.startswith("train_accelerate.py: error: step 5: the loss") and "not finite" in last, err[-2000:]
    assert str(out / "checkpoint-4") in last  # the message names what survived
    # Steps 6 and 8 would have checkpointed NaN weights, pruned checkpoint-4 and overwritten the pipeline.
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-4"]
    kept = out / "checkpoint-4"
    assert json.loads((kept / STATE_FILE).read_text())["global_step"] == 4
    for file in (kept / "model.safetensors", kept / EMA_FILE, out / UNET_FILE):
        assert all(torch.isfinite(w).all() for w in weights(file).values()), file
    exported = weights(out / UNET_FILE)
    assert_same_tensors({k: exported[k] for k in weights(kept / EMA_FILE)}, weights(kept / EMA_FILE), 0)
    assert not (out / "training_info.json").exists()


# The run definition -------------------------------------------------------------------------------------------------


def resume_config(run, **overrides):
    settings = {"max_train_steps": 6, "checkpointing_steps": 3, "resume_from_checkpoint": "latest"}
    return tiny_config(run, **{**settings, **overrides})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"seed": 1}, "--seed is 1, the checkpoint's 0"),
        ({"prediction_type": "v_prediction"}, "--prediction_type is 'v_prediction', the checkpoint's 'epsilon'"),
        ({"ddpm_num_steps": 500}, "--ddpm_num_steps is 500, the checkpoint's 1000"),
        ({"snr_gamma": 5.0}, "--snr_gamma is 5.0, the checkpoint's None"),
        ({"learning_rate": 2e-3}, "--learning_rate is 0.002, the checkpoint's 0.001"),
        ({"ema_power": 0.5}, "--ema_power is 0.5, the checkpoint's 0.75"),
        (
            {"train_batch_size": 16},
            (
                "the global batch (--train_batch_size × processes × --gradient_accumulation_steps) is 16 (16 × 1 × 1), "
                "the checkpoint's 8 (8 × 1 × 1)"
            ),
        ),
        ({"gradient_accumulation_steps": 2}, "is 16 (8 × 1 × 2), the checkpoint's 8 (8 × 1 × 1)"),
        (
            {"dataset": "fashion-mnist"},
            "the training data (--dataset / --train_data_dir / --dataset_name) is fashion-mnist (",
        ),
        (
            {"model_config": "UNET"},
            "the UNet (--model_preset / --model_config) differs from the checkpoint's in block_out_channels",
        ),
    ],
    ids=["seed", "prediction-type", "T", "snr-gamma", "lr", "ema", "batch", "accumulation", "data", "unet"],
)
def test_a_resume_under_another_run_definition_is_refused_by_name(finished_run, tmp_path, overrides, named):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if overrides.get("model_config") == "UNET":
        unet = json.loads((finished_run / "unet" / "config.json").read_text())
        keep = ("down_block_types", "up_block_types", "layers_per_block", "norm_num_groups")
        wider = {k: unet[k] for k in keep} | {"block_out_channels": [2 * c for c in unet["block_out_channels"]]}
        (tmp_path / "unet.json").write_text(json.dumps(wider))
        overrides = {"model_config": str(tmp_path / "unet.json")}
    before = tree_digest(run)
    with pytest.raises(ValueError) as error:
        prepare(resume_config(run, **overrides))
    message = str(error.value)
    assert message.startswith("checkpoint-6 belongs to another run: ") and named in message, message
    assert "--max_train_steps" in message.split("may change only")[1]  # it says what may change
    assert tree_digest(run) == before


def test_a_resume_may_change_the_steps_cadence_and_split_the_same_global_batch(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = prepare(
        resume_config(
            run,
            max_train_steps=9,
            checkpointing_steps=1,
            checkpoints_total_limit=2,
            ddpm_num_inference_steps=5,
            max_grad_norm=0.5,
            train_batch_size=4,
            gradient_accumulation_steps=2,  # 4 × 1 × 2: the same 8 images per step
            eval_num_samples=4,
        )
    )
    assert state.step == 6


def test_a_checkpoint_without_a_run_definition_resumes_with_a_warning(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "checkpoint-6")
    state_file = run / "checkpoint-3" / STATE_FILE
    old = json.loads(state_file.read_text())
    del old["run"]  # what a checkpoint written before run definitions holds
    state_file.write_text(json.dumps(old, indent=2))
    expected = "checkpoint-3 does not record the settings of its run .* could not be checked"
    with pytest.warns(UserWarning, match=expected):
        train(resume_config(run))
    for name in ("model.safetensors", EMA_FILE):  # and it resumed exactly
        assert_same_tensors(weights(run / "checkpoint-6" / name), weights(finished_run / "checkpoint-6" / name))
    assert json.loads((run / "checkpoint-6" / STATE_FILE).read_text())["run"]["seed"] == 0  # now recorded


def test_a_checkpoint_with_ema_weights_by_position_is_refused_by_name(finished_run, tmp_path):
    """The first versions stored EMA weights as shadow.0, shadow.1, ... (and no run definition): refused, not taken
    for a damaged file."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "checkpoint-6")
    checkpoint = run / "checkpoint-3"
    by_name = load_file(checkpoint / EMA_FILE)
    save_file({f"shadow.{i}": tensor for i, tensor in enumerate(by_name.values())}, checkpoint / EMA_FILE)
    old = json.loads((checkpoint / STATE_FILE).read_text())
    del old["run"]
    (checkpoint / STATE_FILE).write_text(json.dumps(old, indent=2))
    with pytest.warns(UserWarning), pytest.raises(ValueError) as error:
        prepare(resume_config(run))
    assert str(error.value).startswith("checkpoint-3 stores its EMA weights by position (shadow.<i>)")
    assert "corrupt" not in str(error.value) and f"--pretrained_model_name_or_path {run}" in str(error.value)


def test_the_run_definition_is_stored_in_every_checkpoint(finished_run):
    run = json.loads((finished_run / "checkpoint-3" / STATE_FILE).read_text())["run"]
    assert run["seed"] == 0 and run["prediction_type"] == "epsilon" and run["ddpm_num_steps"] == 1000
    assert run["images_per_step"] == 8 and run["num_processes"] == 1 and run["gradient_accumulation_steps"] == 1
    assert run["data"]["name"] == "mnist" and run["data"]["images"] == 60000 and len(run["data"]["sha256"]) == 64
    assert run["unet"]["sample_size"] == 28 and run["use_ema"] is True
    assert "max_train_steps" not in run and "hub_token" not in run and "output_dir" not in run
    assert load_file(finished_run / "checkpoint-3" / "model.safetensors")  # a complete checkpoint beside it
