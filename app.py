"""Gradio Space for ddpm-hf: sample a DDPM (Ho et al. 2020), send your own digit through the chain, inpaint, and
explore the forward process, the schedule, the posterior and the variational bound.

``python app.py`` serves it on 127.0.0.1:7860 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` override that).
The models offered are the subfolders of ``$DDPM_HF_MODELS_DIR`` (default: ``models/`` beside this file) that hold a
``model_index.json``, plus the Hub repo ``$DDPM_HF_EXTRA_MODEL`` if set; clients pick a model by name, never by path.
Models load on first use; at start-up the first one loads and samples the default request, which the page shows on
arrival. Reverse chains run one at a time; the quick endpoints have their own slots and a per-client rate limit. On
ZeroGPU hardware the handlers that run the network hold a GPU (``spaces.GPU``); elsewhere that decorator does nothing.
The README lists the API.
"""

import os
import threading
from pathlib import Path

import gradio as gr
from PIL import Image

from ddpm_hf.space import limits
from ddpm_hf.space.components import Canvas, Picture, Slider
from ddpm_hf.space.handlers import Handlers
from ddpm_hf.space.layout import (
    CSS,
    EDITOR,
    GIF,
    JS,
    LATEX,
    PNG,
    PRIVATE,
    QUICK,
    SAMPLER_CHOICES,
    VARIANCE_CHOICES,
    bound_plot,
    chain_view,
    compare_samplers,
    gpu,
    image_index,
    images_slider,
    posterior_pictures,
    refuse_unreadable,
    run_and_stop,
    run_chain_on,
    schedule_plots,
    seed_box,
    t_slider,
)
from ddpm_hf.space.registry import Registry
from ddpm_hf.space.traffic import RateLimit, rate_limited

REPO = Path(__file__).resolve().parent
DEFAULT_MODEL = "ddpm-mnist"
QUEUE_SIZE = int(os.environ.get("DDPM_HF_QUEUE_SIZE", "16"))
SPACE_ID = os.environ.get("SPACE_ID")  # set by Hugging Face Spaces
QUICK_LIMIT = RateLimit(
    float(os.environ.get("DDPM_HF_QUICK_PER_MINUTE", limits.QUICK_PER_MINUTE)),
    int(os.environ.get("DDPM_HF_QUICK_BURST", limits.QUICK_BURST)),
)
HEADER = """# Denoising Diffusion Probabilistic Models
[Paper](https://arxiv.org/abs/2006.11239) (Ho, Jain & Abbeel 2020) ·
[the authors' code](https://github.com/hojonathanho/diffusion){code}, on the Hugging Face stack.
The Sample tab opens with {n} digits this model drew from pure noise: press **Sample** for new ones (a new seed each
time), or scrub through the chain with the frame slider."""


def quick(fn):
    """A quick endpoint: within the per-client rate limit."""
    return rate_limited(fn, QUICK_LIMIT, behind_proxy=SPACE_ID is not None)


def sample_seconds(model, num_images, sampler, num_inference_steps, *args, **kwargs) -> int:
    return limits.gpu_seconds(num_inference_steps)


def model_sources() -> dict[str, str]:
    """name → local pipeline folder or Hub repo id, the default model first."""
    folder = Path(os.environ.get("DDPM_HF_MODELS_DIR") or REPO / "models")
    names = sorted(p.name for p in folder.iterdir() if (p / "model_index.json").is_file()) if folder.is_dir() else []
    names.sort(key=lambda name: name != DEFAULT_MODEL)
    sources = {name: str(folder / name) for name in names}
    if extra := os.environ.get("DDPM_HF_EXTRA_MODEL", "").strip():
        sources[extra] = extra
    return sources


def sample_tab(h: Handlers, picker):
    """Controls, the streamed grid, the denoising GIF and a scrubber over its frames; two samplers side by side.

    Returns:
        The tab's ``ChainOutputs`` components (the arrival's outputs).
    """
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            num_images = images_slider()
            sampler = gr.Dropdown(
                SAMPLER_CHOICES, value=limits.DEFAULT_SAMPLER, label="Sampler", info=limits.SAMPLER_HELP
            )
            with gr.Row(equal_height=True):
                seed = seed_box()
                randomize = gr.Checkbox(True, label="New seed each run", info="off: replay the seed in the box")
            with gr.Accordion("Advanced: steps and variance", open=False):
                default = limits.default_steps(limits.DEFAULT_SAMPLER)
                steps = Slider(*limits.STEP_RANGE, value=default, step=1, label="Sampling steps")
                variance = gr.Radio(VARIANCE_CHOICES, value=limits.DEFAULT_VARIANCE, label="Variance σₜ² (DDPM)")
            run, stop = run_and_stop("Sample")
            status = gr.Markdown("Loading the first result…")  # until the arrival event shows it (or its making)
            examples = gr.Examples(
                [[name, limits.default_steps(name), limits.EXAMPLE_SEED] for name in limits.EXAMPLE_SAMPLERS],
                [sampler, steps, seed],
                label="Examples: one seed, three samplers (click one, then Sample)",
            )
        with gr.Column(scale=2):
            view = chain_view(h, "Samples x₀ (while running: xₜ | x̂₀)", status)
    inputs = [picker, num_images, sampler, steps, variance, seed]
    picked = run.click(h.pick_seed, [randomize, seed], seed, **PRIVATE)
    run_chain_on(picked.then, stop, h, h.sample, inputs, [], view, "sample", sample_seconds)
    for typed in (seed.input, examples.dataset.click):  # a typed or chosen seed is meant to be replayed
        typed(lambda: False, None, randomize, **PRIVATE)
    sampler.change(
        lambda name: (gr.Slider(value=limits.default_steps(name)), gr.Radio(visible=name == "ddpm")),
        sampler,
        [steps, variance],
        **PRIVATE,
    )
    compare_samplers(h, picker, num_images, seed)
    return view


def digit_tab(h: Handlers, picker) -> None:
    """A sketch or upload through q(x_t | x_0) and back with the DDPM chain (SDEdit)."""
    gr.Markdown(
        "Draw a digit (white on black, like the training images) or upload a picture, pick $t$, and run the "
        f"chain back from $x_t$: a small $t$ keeps your digit and varies its style; above about $t = "
        f"{limits.FORGETS_AT}$ the model forgets it and draws a digit of its own.",
        latex_delimiters=LATEX,
    )
    black = Image.new("RGBA", EDITOR["canvas_size"], "black")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            canvas = Canvas(
                value={"background": black, "layers": [], "composite": black},
                label="Your digit",
                brush=gr.Brush(colors=["#ffffff"], default_size=18, color_mode="fixed"),
                image_mode="RGBA",
                elem_id="digit-canvas",
                elem_classes=["black-canvas", "checked-drop"],
                **EDITOR,
            )
            upload = Picture(label="…or upload a picture", sources=["upload", "clipboard"], height=210)
            t = t_slider(
                h,
                picker,
                1,
                limits.DIGIT_T,
                "t (how much noise)",
                info=f"below ~{limits.FORGETS_AT}: your digit, restyled; above: the model's own digits",
            )
            num_images = images_slider(4)
            seed = seed_box()
            run, stop = run_and_stop("Noise and denoise")
            status = gr.Markdown()
            gr.Examples([[v] for v in limits.DIGIT_EXAMPLES], [t], label="Try t (the digit kept → forgotten)")
        with gr.Column(scale=2):
            with gr.Row():
                x0 = gr.Image(label="x₀ as the model sees it", alt_text="Your picture, as x₀", min_width=160, **PNG)
                x_t = gr.Image(label="xₜ ~ q(xₜ | x₀)", alt_text="Your picture noised to t", min_width=160, **PNG)
            note = gr.Textbox(label="What was done to your picture", interactive=False, lines=1)
            view = chain_view(h, "Back to x₀, one chain per image", status)
    inputs, shown = [picker, canvas, t, num_images, seed], [x0, x_t, note]
    seconds = limits.gpu_seconds(limits.SDEDIT_STEPS)
    run_chain_on(run.click, stop, h, h.sdedit, inputs, shown, view, "sdedit", seconds)
    upload.upload(h.digit_upload, upload, [canvas, upload, note, x0, x_t, *view], preprocess=False, **PRIVATE)
    refuse_unreadable(h, "digit-canvas", [note, x0, x_t, *view], pictures=2)


def inpaint_tab(h: Handlers, picker) -> None:
    """Mask part of a digit and let the unconditional model fill it in (RePaint without resampling)."""
    gr.Markdown(
        "Load a test image (or upload one), paint over the part to regenerate, and press Inpaint. At every "
        "step the kept part is a fresh draw of $q(x_t \\mid x_0)$; the model fills in the rest.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            editor = Canvas(
                label="Picture",
                brush=gr.Brush(colors=["#ff3366"], default_size=40, color_mode="fixed"),
                elem_id="inpaint-canvas",
                elem_classes=["checked-drop"],
                **EDITOR,
            )
            index = image_index()
            load = gr.Button("Load test image")
            num_images = images_slider(4)
            seed = seed_box()
            run, stop = run_and_stop("Inpaint")
            status = gr.Markdown()
        with gr.Column(scale=2):
            kept = gr.Image(label="Kept (grey: to regenerate)", alt_text="The picture, painted part grey", **PNG)
            note = gr.Textbox(label="What was done to your picture", interactive=False, lines=1)
            view = chain_view(h, "Inpainted", status)
    load.click(quick(h.test_picture), [picker, index], editor, api_visibility="private", **QUICK)
    inputs, seconds = [picker, editor, num_images, seed], limits.gpu_seconds(limits.INPAINT_STEPS)
    run_chain_on(run.click, stop, h, h.inpaint, inputs, [kept, note], view, "inpaint", seconds)
    refuse_unreadable(h, "inpaint-canvas", [note, kept, *view], pictures=1)


def forward_tab(h: Handlers, picker, tab) -> None:
    """x_0 from the test set or an upload, x_t at a chosen t with its rates, and the forward process as a GIF."""
    gr.Markdown(
        r"$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$, $\epsilon \sim \mathcal N(0, I)$."
        " Pick $x_0$ and $t$.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            index = image_index()
            upload = Picture(label="…or upload an image", type="pil", sources=["upload", "clipboard"], height=200)
            t = t_slider(h, picker, 0, limits.FORWARD_T)
            seed = seed_box("Noise seed (ε)")
            show = gr.Button("Show", variant="primary")
        with gr.Column(scale=2):
            with gr.Row():
                x0 = gr.Image(label="x₀", alt_text="The clean image x₀", **PNG)
                x_t = gr.Image(label="xₜ", alt_text="The image noised to step t", **PNG)
                gif = gr.Image(label="xₜ for t = 0 → T−1", alt_text="Animation: the image fading into noise", **GIF)
            readout = gr.Markdown()
    rates = [gr.Number(label="signal_rate", visible=False), gr.Number(label="noise_rate", visible=False)]
    # a file that is not an image is refused with a message by the event below; this clears it so the tab recovers
    upload.upload(h.clear_bad_upload, upload, upload, preprocess=False, **PRIVATE)
    gr.on(
        [show.click, t.change, index.change, upload.change, seed.submit, tab.select],  # change: drags and typed values
        quick(h.forward),
        [picker, index, upload, t, seed],
        [x0, x_t, readout, gif, *rates],
        api_name="forward",
        trigger_mode="always_last",
        **QUICK,
    )


def schedule_tab(h: Handlers, picker, tab) -> None:
    """The schedule's plots; one reverse step beside the true posterior; the bound's terms."""
    with gr.Row():
        plots = schedule_plots()
    gr.Markdown(
        r"**One reverse step.** Noise a test image to $x_t$, let the network predict $\hat x_0$, and compare"
        r" the true posterior mean $\tilde\mu_t(x_t, x_0)$ with the model's $\mu_\theta(x_t) ="
        r" \tilde\mu_t(x_t, \hat x_0)$.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            index = image_index()
            t = t_slider(h, picker, 0, limits.POSTERIOR_T)
            variance = gr.Radio(VARIANCE_CHOICES, value=limits.DEFAULT_VARIANCE, label="Variance σₜ² of pθ")
            seed = seed_box("Seed (ε and z)")
            with gr.Row():
                step_button = gr.Button("Posterior step", variant="primary")
                bound_button = gr.Button("Variational bound")
        with gr.Column(scale=3):
            pictures = posterior_pictures()
            step_readout = gr.Markdown()
            curve = bound_plot()
            bound_readout = gr.Markdown()
    step_numbers = [gr.Number(label="mean_gap", visible=False), gr.Number(label="vb_term", visible=False)]
    bound_numbers = [gr.Number(label=name, visible=False) for name in ("total", "prior", "decoder")]
    gr.on([tab.select], quick(h.schedule), picker, plots, api_name="schedule", **QUICK)
    gr.on(
        [step_button.click, t.change, index.change, seed.submit, tab.select],
        quick(gpu(h.posterior, limits.gpu_seconds(1))),
        [picker, index, t, variance, seed],
        [*pictures, step_readout, *step_numbers],
        api_name="posterior",
        trigger_mode="always_last",
        **QUICK,
    )
    gr.on(
        [bound_button.click, tab.select],
        quick(gpu(h.bound, limits.gpu_seconds(limits.BOUND_POINTS))),
        [picker, index, variance, seed],
        [curve, bound_readout, *bound_numbers],
        api_name="bound",
        **QUICK,
    )


def about_tab() -> None:
    where = (
        f'huggingface_hub.snapshot_download("{SPACE_ID}", repo_type="space", allow_patterns="models/*")'
        if SPACE_ID
        else '"."  # a clone of this repository'
    )
    text = (Path(limits.__file__).parent / "about.md").read_text()
    gr.Markdown(text.replace("{where}", where), latex_delimiters=LATEX)


def build(h: Handlers) -> gr.Blocks:
    """The Blocks app: a model picker and one line on the model above the tabs."""
    with gr.Blocks(title="DDPM (Ho et al. 2020)", delete_cache=(limits.CACHE_SWEEP, limits.CACHE_AGE)) as blocks:
        code = f" · [this Space's code](https://huggingface.co/spaces/{SPACE_ID}/tree/main)" if SPACE_ID else ""
        gr.Markdown(HEADER.format(n=limits.DEFAULT_IMAGES, code=code))
        with gr.Row(equal_height=True):
            picker = gr.Dropdown(
                list(h.models.sources),
                value=h.first,
                label="Model",
                scale=1,
                min_width=240,
                info=None if h.models.sources else "no model installed: set DDPM_HF_MODELS_DIR",
            )
            with gr.Column(scale=2, min_width=240):
                model_info = gr.Markdown()
        with gr.Tab("Sample"):
            sample_view = sample_tab(h, picker)
        with gr.Tab("Your digit"):
            digit_tab(h, picker)
        with gr.Tab("Inpaint"):
            inpaint_tab(h, picker)
        with gr.Tab("Forward process") as tab:
            forward_tab(h, picker, tab)
        with gr.Tab("Schedule & posterior") as tab:
            schedule_tab(h, picker, tab)
        with gr.Tab("About"):
            about_tab()
        gr.on(
            [blocks.load, picker.change],
            h.describe,
            picker,
            model_info,
            api_visibility="private",
            concurrency_limit=None,
        )
        blocks.load(
            h.arrival,
            picker,
            list(sample_view),
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
    return blocks


handlers = Handlers(Registry(model_sources()))
demo = build(handlers)

if __name__ == "__main__":
    threading.Thread(target=handlers.prepare_showcase, name="showcase", daemon=True).start()
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    demo.queue(max_size=QUEUE_SIZE).launch(
        theme=theme, css=CSS, js=JS, footer_links=["api", "settings"], max_file_size=limits.MAX_UPLOAD_BYTES
    )
