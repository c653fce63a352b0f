"""Class-conditional models and classifier-free guidance: the zero-initialised class embedding, guidance in one
batched forward for every sampler, the bound given y, the conditional folder (with ddpm_hf and in stock diffusers),
class-conditional training and its batches, and the guidance table."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import tiny_unet
from diffusers import DiffusionPipeline
from PIL import Image

from ddpm_hf import SAMPLERS, DDPMHFScheduler, estimate_bound, load_pipeline, sample, save_pipeline
from ddpm_hf.data import load_image_folder
from ddpm_hf.evaluation.guidance_table import GuidanceScore, class_fid, score_guidance
from ddpm_hf.guidance import add_class_embedding, forward, guided, label_tensor, null_label
from ddpm_hf.pipeline_ddpm_guided import DDPMGuidedPipeline
from ddpm_hf.training.batches import BatchPlan, step_batch
from ddpm_hf.training.loop import TrainConfig, init_unet, train

RUN = {"num_inference_steps": 4, "output_type": "pt", "autotune": False, "precision": "float32"}


def conditional_unet(classes: int = 3, seed: int = 0):
    """A tiny conditional UNet whose class embedding is random, so labels change its output."""
    unet = add_class_embedding(tiny_unet(seed=seed), classes)
    torch.nn.init.normal_(unet.class_embedding.weight, std=1.0, generator=torch.Generator().manual_seed(seed))
    return unet.eval()


def test_a_zero_class_embedding_is_exactly_the_unconditional_model():
    unet = tiny_unet()
    conditional = add_class_embedding(unet, 10)
    assert conditional.config.num_class_embeds == 11 and null_label(conditional) == 10
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = unet(x, 321).sample
        for labels in ([0, 3, 9, 10], [10] * 4):
            assert torch.equal(conditional(x, 321, class_labels=torch.tensor(labels)).sample, before)


def test_labels_are_checked_at_the_boundary():
    with pytest.raises(ValueError, match="no class embedding"):
        label_tensor(tiny_unet(), [0, 1], 2)
    unet = conditional_unet(3)
    with pytest.raises(ValueError, match="2 entries for 3 images"):
        label_tensor(unet, [0, 1], 3)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\] or None"):
        label_tensor(unet, [0, 3], 2)
    with pytest.raises(ValueError, match="integers"):
        label_tensor(unet, [0, True], 2)
    assert label_tensor(unet, [2, None], 2).tolist() == [2, 3]
    assert label_tensor(unet, None, 2).tolist() == [3, 3]
    with pytest.raises(ValueError, match="no class embedding"):
        sample(tiny_unet(), DDPMHFScheduler(), 2, seed=0, class_labels=[0, 1], **RUN)
    with pytest.raises(ValueError, match="guidance_scale"):
        sample(unet, DDPMHFScheduler(), 2, seed=0, class_labels=[0, 1], guidance_scale=-1, **RUN)


def test_guidance_mixes_both_predictions_from_one_doubled_forward():
    unet = conditional_unet(3)
    labels = label_tensor(unet, [0, 2], 2)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    calls = []

    def network(x, t, class_labels=None):
        calls.append(x.shape[0])
        return forward(unet, x, t, class_labels)

    with torch.no_grad():
        eps_y = forward(unet, x, 400, labels)
        eps_null = forward(unet, x, 400)
        mixed = guided(network, labels, null_label(unet), 3.0)(x, 400)
        assert calls == [4]  # one forward of [x, x], not two passes
        torch.testing.assert_close(mixed, eps_null + 3.0 * (eps_y - eps_null), rtol=0, atol=1e-5)
        assert torch.equal(guided(network, labels, 3, 0.0)(x, 400), eps_null)
        assert torch.equal(guided(network, labels, 3, 1.0)(x, 400), eps_y)
        assert torch.equal(guided(network, labels, 3, None)(x, 400), eps_y)
    assert calls == [4, 2, 2, 2]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_takes_labels_and_guidance(sampler):
    unet, scheduler = conditional_unet(3), DDPMHFScheduler()
    run = {**RUN, "sampler": sampler}
    a = sample(unet, scheduler, 2, seed=0, class_labels=[0, 0], guidance_scale=2.0, **run).images
    b = sample(unet, scheduler, 2, seed=0, class_labels=[1, 1], guidance_scale=2.0, **run).images
    unconditional = sample(unet, scheduler, 2, seed=0, **run).images
    w0 = sample(unet, scheduler, 2, seed=0, class_labels=[1, 1], guidance_scale=0, **run).images
    assert not torch.allclose(a, b)  # the class steers the chain
    assert torch.equal(w0, unconditional)  # w = 0 is the ∅ model
    assert torch.isfinite(a).all()


def test_the_bound_is_given_y_and_with_no_labels_is_the_null_class():
    unet, scheduler = conditional_unet(3), DDPMHFScheduler(num_train_timesteps=20)
    x0 = torch.randint(0, 256, (2, 1, 16, 16), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    run = {"exact_timesteps": 5, "num_timesteps": 4}
    given = estimate_bound(unet, scheduler, x0, class_labels=[0, 1], generator=torch.Generator().manual_seed(0), **run)
    null = estimate_bound(
        unet, scheduler, x0, class_labels=[None, None], generator=torch.Generator().manual_seed(0), **run
    )
    none = estimate_bound(unet, scheduler, x0, generator=torch.Generator().manual_seed(0), **run)
    assert torch.equal(null, none) and not torch.allclose(given, none)
    assert torch.isfinite(given).all() and (given > 0).all()


def test_a_conditional_folder_loads_with_ddpm_hf_and_in_stock_diffusers(tmp_path):
    unet, scheduler = conditional_unet(3), DDPMHFScheduler()
    folder = save_pipeline(unet, scheduler, tmp_path / "cond", class_names=["a", "b", "c"], guidance_scale=2.5)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_guided", "DDPMGuidedPipeline"]
    assert index["class_names"] == ["a", "b", "c"] and index["guidance_scale"] == 2.5
    ours = load_pipeline(folder)
    assert isinstance(ours, DDPMGuidedPipeline) and ours.config.class_names == ["a", "b", "c"]
    theirs = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(theirs).__name__ == "DDPMGuidedPipeline" and type(theirs).__module__ != DDPMGuidedPipeline.__module__
    theirs.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(5 + i) for i in range(2)]
    images = theirs(
        class_labels=["a", 2], guidance_scale=2.0, generator=generators, num_inference_steps=4, output_type="pt"
    ).images
    expected = sample(
        unet,
        scheduler,
        2,
        seed=5,
        class_labels=[0, 2],
        guidance_scale=2.0,
        timestep_spacing=None,
        **{**RUN, "output_type": "pt"},
    ).images
    torch.testing.assert_close(images, expected, rtol=0, atol=2e-4)
    with pytest.raises(ValueError, match="neither a class index"):
        theirs(class_labels=["z"], num_inference_steps=1)


def test_a_batch_with_labels_is_the_unlabelled_batch_plus_dropped_labels():
    data = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    plan = BatchPlan(32, seed=1, label_dropout=0.25)
    x0, noise, t = step_batch(data, 3, BatchPlan(32, seed=1))
    x0_c, noise_c, t_c, y = step_batch(data, 3, plan, labels, null=10)
    assert torch.equal(x0, x0_c) and torch.equal(noise, noise_c) and torch.equal(t, t_c)
    assert torch.equal(y, step_batch(data, 3, plan, labels, null=10)[3])  # a pure function of (seed, step)
    dropped = sum(int((step_batch(data, s, plan, labels, null=10)[3] == 10).sum()) for s in range(40))
    assert 0.18 < dropped / (40 * 32) < 0.32


def _class_folder(root: Path) -> Path:
    for k, name in enumerate(["circle", "square"]):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.full((16, 16), 40 + 150 * k + i, dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.png")
    return root


def test_an_image_folder_gives_its_subfolders_as_classes(tmp_path):
    data = load_image_folder(_class_folder(tmp_path / "shapes"), 16, classes=True)
    assert data.class_names == ("circle", "square") and data.labels.tolist() == [0] * 8 + [1] * 8
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "shapes" / "loose.png")
    with pytest.raises(ValueError, match="outside a class subfolder"):
        load_image_folder(tmp_path / "shapes", 16, classes=True)


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_training_from_an_unconditional_folder_starts_exactly_there(tmp_path, tiny_pipeline_dir):
    cfg = TrainConfig(
        output_dir=str(tmp_path / "o"),
        resolution=16,
        class_conditional=True,
        pretrained_model_name_or_path=str(tiny_pipeline_dir),
        max_train_steps=1,
    )
    start = init_unet(cfg, 1, classes=2).eval()
    assert start.config.num_class_embeds == 3 and not start.class_embedding.weight.any()
    before = load_pipeline(tiny_pipeline_dir).unet.to(memory_format=torch.contiguous_format)
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(start(x, 700, class_labels=torch.tensor([0, 1, 2])).sample, before(x, 700).sample)


def test_class_conditional_training_writes_a_guided_folder_and_card(tmp_path, fresh_accelerate_state):
    out = tmp_path / "run"
    cfg = TrainConfig(
        train_data_dir=str(_class_folder(tmp_path / "shapes")),
        resolution=16,
        output_dir=str(out),
        class_conditional=True,
        label_dropout=0.2,
        guidance_scale=2.0,
        model_preset="tiny",
        train_batch_size=8,
        max_train_steps=2,
        ddpm_num_inference_steps=2,
        logger="none",
        lr_warmup_steps=0,
    )
    train(cfg)
    pipe = load_pipeline(out)
    assert isinstance(pipe, DDPMGuidedPipeline) and pipe.config.class_names == ["circle", "square"]
    assert pipe.config.guidance_scale == 2.0 and pipe.unet.class_embedding.weight.any()
    card = (out / "README.md").read_text()
    assert "## Classes and guidance" in card and "0 = circle, 1 = square" in card and "20%" in card
    info = json.loads((out / "training_info.json").read_text())
    assert info["conditioning"] == {"class_names": ["circle", "square"], "label_dropout": 0.2, "guidance_scale": 2.0}


def test_class_conditional_settings_are_refused_up_front(tmp_path):
    from ddpm_hf.training.config import check_config

    with pytest.raises(ValueError, match="--label_dropout"):
        check_config(TrainConfig(output_dir=str(tmp_path / "a"), max_train_steps=1, label_dropout=1.0))
    with pytest.raises(ValueError, match="--label_dropout > 0"):
        check_config(
            TrainConfig(output_dir=str(tmp_path / "a"), max_train_steps=1, class_conditional=True, label_dropout=0.0)
        )
    with pytest.raises(ValueError, match="not --dataset_name"):
        check_config(
            TrainConfig(
                output_dir=str(tmp_path / "a"), max_train_steps=1, class_conditional=True, dataset_name="someone/data"
            )
        )


def test_the_guidance_table_scores_agreement_per_class():
    class Judge(torch.nn.Module):  # "classifies" by mean brightness: class k is brightness k
        def features(self, x):
            return torch.cat([x.mean((1, 2, 3))[:, None], x.std((1, 2, 3))[:, None]], 1)

        def head(self, f):
            return -((f[:, :1] - torch.linspace(-1, 1, 3)[None]) ** 2) * 100

    def draw(labels, scale):  # perfect images for class 0 and 2, class 1 drawn as class 2
        level = torch.tensor([[3, 255, 255][k] if scale else 127 for k in labels], dtype=torch.uint8)
        noise = torch.randint(0, 3, (len(labels), 1, 4, 4), generator=torch.Generator().manual_seed(0))
        return (level[:, None, None, None] - noise).to(torch.uint8)

    real = draw([0, 1, 2] * 4, 1)
    reference = (Judge().features(real.float() / 127.5 - 1).double().numpy(), np.array([0, 1, 2] * 4))
    score = score_guidance(draw, Judge(), reference, 2.0, 3, 4)
    assert isinstance(score, GuidanceScore) and score.class_agreement == (1.0, 0.0, 1.0)
    assert score.agreement == pytest.approx(2 / 3) and np.isfinite(score.class_fid)
    assert GuidanceScore.from_json(json.loads(json.dumps(score.to_json()))) == score
    assert class_fid(reference[0], reference[1], reference) == pytest.approx(0, abs=1e-6)
