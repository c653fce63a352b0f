"""Gradio Space for ddpm-hf: sample a DDPM (Ho et al. 2020), send your own digit or picture through the chain,
inpaint, explore the forward process, the schedule, the posterior and the variational bound, and run the paper's
figures 7 (samples sharing one x_t) and 8 (interpolation) live, on the shipped models and the paper's own.

``python app.py`` serves it on 127.0.0.1:7860 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` override that).
The models offered are the subfolders of ``$DDPM_HF_MODELS_DIR`` (default: ``models/`` beside this file) that hold a
``model_index.json``, plus the Hub repo ``$DDPM_HF_EXTRA_MODEL`` if set, plus the paper's own models on the Hub
(``ddpm_hf.space.paper``: those that can answer on this hardware) unless ``HF_HUB_OFFLINE=1``; clients pick a model by
name, never by path. Requests are sized by each model's measured cost (``ddpm_hf.space.costs``). Models load on first
use; at start-up the first one loads and samples the default request, which the page shows on
arrival. Reverse chains run one at a time; the quick endpoints have their own slots and a per-client rate limit. On
ZeroGPU hardware the handlers that run the network hold a GPU (``spaces.GPU``); elsewhere that decorator does nothing.
The README lists the API.
"""

import functools
import os
import threading
from pathlib import Path

import gradio as gr

from ddpm_hf.space import limits, paper, texts
from ddpm_hf.space.components import Canvas, Picture, Slider
from ddpm_hf.space.figures import FigureHandlers
from ddpm_hf.space.figures_tab import figures_tab
from ddpm_hf.space.handlers import Handlers
from ddpm_hf.space.layout import (
    BLANK,
    EDITOR,
    GIF,
    LATEX,
    PNG,
    PRIVATE,
    QUICK,
    SAMPLER_CHOICES,
    VARIANCE_CHOICES,
    about_page,
    bound_plot,
    chain_view,
    checked_on,
    class_controls,
    clear_on,
    compare_samplers,
    drawing_canvas,
    gpu,
    image_index,
    images_slider,
    posterior_pictures,
    refuse_unreadable,
    run_chain_on,
    run_controls,
    schedule_plots,
    seed_box,
    steps_of_sampler,
    t_slider,
)
from ddpm_hf.space.page import CSS, JS, RESULT_FIRST, RUN_BUTTON
from ddpm_hf.space.registry import Registry, device
from ddpm_hf.space.traffic import RateLimit, rate_limited

REPO = Path(__file__).resolve().parent
DEFAULT_MODEL = "ddpm-mnist-conditional"  # the arrival: every digit, one row each
QUEUE_SIZE = int(os.environ.get("DDPM_HF_QUEUE_SIZE", "16"))
SPACE_ID = os.environ.get("SPACE_ID")  # set by Hugging Face Spaces
QUICK_LIMIT = RateLimit(
    float(os.environ.get("DDPM_HF_QUICK_PER_MINUTE", limits.QUICK_PER_MINUTE)),
    int(os.environ.get("DDPM_HF_QUICK_BURST", limits.QUICK_BURST)),
)
DIGITS = texts.Subject(*texts.NOUNS["mnist"])  # what the page says until the chosen model is known (on load)


def quick(fn):
    """A quick endpoint: within the per-client rate limit."""
    return rate_limited(fn, QUICK_LIMIT, behind_proxy=SPACE_ID is not None)


def sample_seconds(model, num_images, sampler, num_inference_steps, *args, **kwargs) -> int:
    return limits.gpu_seconds(num_inference_steps)


def model_sources() -> dict[str, str]:
    """name → local pipeline folder or Hub repo id: the default model first, the paper's own models last."""
    folder = Path(os.environ.get("DDPM_HF_MODELS_DIR") or REPO / "models")
    names = sorted(p.name for p in folder.iterdir() if (p / "model_index.json").is_file()) if folder.is_dir() else []
    names.sort(key=lambda name: name != DEFAULT_MODEL)
    sources = {name: str(folder / name) for name in names}
    if extra := os.environ.get("DDPM_HF_EXTRA_MODEL", "").strip():
        sources[extra] = extra
    return sources | {m.repo_id: m.repo_id for m in paper.offered(device())}  # the paper's, where the Hub is on


def sample_tab(h: Handlers, picker):
    """How diffusion works in two sentences; controls; the streamed grid, the denoising GIF and a scrubber over its
    frames; two samplers side by side.

    Returns:
        The tab's ``ChainOutputs`` components (the arrival's outputs) and its explanation.
    """
    intro = gr.Markdown(texts.how_it_works(DIGITS))
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            num_images = images_slider()
            choice, guidance = class_controls(h, picker)
            sampler = gr.Dropdown(
                SAMPLER_CHOICES, value=limits.DEFAULT_SAMPLER, label="Sampler", info=limits.SAMPLER_HELP
            )
            with gr.Row(equal_height=True):
                seed = seed_box()
                randomize = gr.Checkbox(True, label="New seed each run", info="off: replay the seed in the box")
            with gr.Accordion("Advanced: steps and variance", open=False):
                default = limits.default_steps(limits.DEFAULT_SAMPLER)
                steps = Slider(*limits.STEP_RANGE, value=default, step=1, label="Sampling steps")
                variance = gr.Radio(
                    VARIANCE_CHOICES, value=limits.DEFAULT_VARIANCE, label="Noise added at each step: σₜ² (DDPM)"
                )
        with gr.Column(scale=2, elem_classes=[RESULT_FIRST]):  # on a phone: before the controls
            run, stop, status = run_controls("Sample", "Loading the first result…")  # until the arrival shows it
            view = chain_view(h, "Samples (while running: now | guessed end)", status)
            examples = gr.Examples(
                [[name, limits.default_steps(name), limits.EXAMPLE_SEED] for name in limits.EXAMPLE_SAMPLERS],
                [sampler, steps, seed],
                label="Examples: one seed, three samplers (click one, then Sample)",
            )
    inputs = [picker, num_images, sampler, steps, variance, seed, choice, guidance]
    run_chain_on(run, stop, h, h.sample, inputs, [], view, "sample", sample_seconds, randomize=randomize)
    picker.change(h.request_defaults, picker, [num_images, sampler, steps], **PRIVATE)  # sized to the model's cost
    seed.input(h.seed_typed, seed, randomize, preprocess=False, **PRIVATE)  # a typed seed is meant to be replayed
    examples.dataset.click(h.example_chosen, None, [randomize, status], **PRIVATE)
    sampler.change(steps_of_sampler, sampler, [steps, variance], **PRIVATE)
    compare_samplers(h, picker, num_images, seed)
    return view, intro


def digit_tab(h: Handlers, picker):
    """A sketch or upload through q(x_t | x_0) and back with the DDPM chain (SDEdit).

    Returns:
        The tab's instructions and its canvas (both worded for the chosen model).
    """
    intro = gr.Markdown(texts.draw_and_denoise(DIGITS), latex_delimiters=LATEX)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            canvas = drawing_canvas(texts.drawing_label(DIGITS))
            upload = Picture(label="…or upload a picture", sources=["upload", "clipboard"], height=210)
            t = t_slider(h, picker, 1, limits.DIGIT_T, "t (how much noise)", info=limits.DIGIT_T_HELP)
            gr.Examples([[v] for v in limits.DIGIT_EXAMPLES], [t], label="Try t (the drawing kept → forgotten)")
            num_images = images_slider(4)
            choice, guidance = class_controls(h, picker, default=limits.ANY_CLASS)
            seed = seed_box()
        with gr.Column(scale=2):
            run, stop, status = run_controls("Noise and denoise")
            with gr.Row():
                x0 = gr.Image(label="Your picture (x₀)", alt_text="Your picture, as x₀", min_width=160, **PNG)
                x_t = gr.Image(label="Noised to t (xₜ)", alt_text="Your picture noised to t", min_width=160, **PNG)
            note = gr.Textbox(label="What was done to your picture", interactive=False, lines=1)
            view = chain_view(h, "Denoised again, one run per image", status)
    inputs, shown = [picker, canvas, t, num_images, seed, choice, guidance], [x0, x_t, note]
    run_chain_on(run, stop, h, h.sdedit, inputs, shown, view, "sdedit", limits.gpu_seconds(limits.SDEDIT_STEPS))
    upload.upload(h.digit_upload, upload, [canvas, upload, note, x0, x_t, *view], preprocess=False, **PRIVATE)
    canvas.upload(lambda: "", None, note, **PRIVATE)  # a new picture: the note on the last one is gone
    canvas.clear(lambda: (BLANK, ""), None, [canvas, note], **PRIVATE)  # a blank black canvas again, not a white one
    refuse_unreadable(h, "digit-canvas", [note, x0, x_t, *view], pictures=2)
    picker.change(functools.partial(h.cleared, 2), None, [note, x0, x_t, *view], **PRIVATE)
    return intro, canvas


def inpaint_tab(h: Handlers, picker) -> None:
    """Mask part of a test image and let the unconditional model fill it in (RePaint without resampling)."""
    gr.Markdown(
        "A test image is loaded (or upload one): paint over the part to regenerate, and press Inpaint. At every "
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
        with gr.Column(scale=2):
            run, stop, status = run_controls("Inpaint")
            kept = gr.Image(label="Kept (grey: to regenerate)", alt_text="The picture, painted part grey", **PNG)
            note = gr.Textbox(label="What was done to your picture", interactive=False, lines=1)
            view = chain_view(h, "Inpainted", status)
    shown = {
        "inputs": [picker, index],
        "outputs": [editor, note],
        "api_visibility": "private",
        "show_progress": "hidden",
    }
    gr.on(None, quick(h.first_picture), **shown, **QUICK)  # on arrival, for another model or index
    load.click(quick(h.test_picture), **shown, **QUICK)
    inputs, seconds = [picker, editor, num_images, seed], limits.gpu_seconds(limits.INPAINT_STEPS)
    run_chain_on(run, stop, h, h.inpaint, inputs, [kept, note], view, "inpaint", seconds)
    editor.upload(lambda: "", None, note, **PRIVATE)
    refuse_unreadable(h, "inpaint-canvas", [note, kept, *view], pictures=1)
    picker.change(functools.partial(h.cleared, 1), None, [note, kept, *view], **PRIVATE)


def forward_tab(h: Handlers, picker, tab) -> None:
    """x_0 from the test set or an upload, x_t at a chosen t with its rates, and the forward process as a GIF."""
    gr.Markdown(
        "How a training image is turned into noise: at step $t$ it is scaled down and Gaussian noise is added,"
        r" $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ with $\epsilon \sim \mathcal N(0, I)$;"
        " by the last step nothing of the image is left. Pick an image and $t$.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            index = image_index()
            upload = Picture(label="…or upload an image", type="pil", sources=["upload", "clipboard"], height=200)
            t = t_slider(h, picker, 0, limits.FORWARD_T)
            seed = seed_box("Noise seed (ε)")
            show = gr.Button("Show", variant="primary", elem_classes=[RUN_BUTTON])
        with gr.Column(scale=2):
            with gr.Row():
                x0 = gr.Image(label="Clean image (x₀)", alt_text="The clean image x₀", **PNG)
                x_t = gr.Image(label="Noised to t (xₜ)", alt_text="The image noised to step t", **PNG)
                gif = gr.Image(label="From t = 0 to the end", alt_text="Animation: the image fading into noise", **GIF)
            readout = gr.Markdown()
    rates = [gr.Number(label="signal_rate", visible=False), gr.Number(label="noise_rate", visible=False)]
    # a file that is not an image is refused with a message by the check below; this clears it so the tab recovers
    upload.upload(h.clear_bad_upload, upload, upload, preprocess=False, **PRIVATE)
    triggers = [show.click, t.change, index.change, upload.change, seed.submit, tab.select]
    checked_on(triggers, h, seed, [index, upload, t], trigger_mode="always_last").success(  # change: drags, typing
        quick(h.forward),
        [picker, index, upload, t, seed],
        [x0, x_t, readout, gif, *rates],
        api_name="forward",
        trigger_mode="always_last",
        **QUICK,
    )
    clear_on(picker.change, [x0, x_t, readout, gif])  # another model's: redrawn when the tab is shown


def schedule_tab(h: Handlers, picker, tab) -> None:
    """The schedule's plots; one reverse step beside the true posterior; the bound's terms."""
    gr.Markdown(
        "How much noise each step adds (the schedule), one step of the way back beside the true answer, and how "
        "well the model can explain an image (the variational bound, in bits per pixel)."
    )
    with gr.Row():
        plots = schedule_plots()
    gr.Markdown(
        r"**One reverse step.** Noise a test image to $x_t$, let the network guess the clean image $\hat x_0$, and"
        r" compare the true posterior mean $\tilde\mu_t(x_t, x_0)$ with the model's $\mu_\theta(x_t) ="
        r" \tilde\mu_t(x_t, \hat x_0)$.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            index = image_index()
            upload = Picture(label="…or upload an image", type="pil", sources=["upload", "clipboard"], height=160)
            t = t_slider(h, picker, 0, limits.POSTERIOR_T)
            variance = gr.Radio(VARIANCE_CHOICES, value=limits.DEFAULT_VARIANCE, label="Variance σₜ² of pθ")
            seed = seed_box("Seed (ε and z)")
            with gr.Row():
                step_button = gr.Button("Posterior step", variant="primary", elem_classes=[RUN_BUTTON])
                bound_button = gr.Button("Variational bound")
        with gr.Column(scale=3):
            pictures = posterior_pictures()
            step_readout = gr.Markdown()
            curve = bound_plot()
            bound_readout = gr.Markdown()
    step_numbers = [gr.Number(label="mean_gap", visible=False), gr.Number(label="vb_term", visible=False)]
    bound_numbers = [gr.Number(label=name, visible=False) for name in ("total", "prior", "decoder")]
    gr.on([tab.select], quick(h.schedule), picker, plots, api_name="schedule", **QUICK)
    upload.upload(h.clear_bad_upload, upload, upload, preprocess=False, **PRIVATE)
    step_triggers = [step_button.click, t.change, index.change, upload.change, seed.submit, tab.select]
    checked_on(step_triggers, h, seed, [index, upload, t], trigger_mode="always_last").success(
        quick(gpu(h.posterior, limits.gpu_seconds(1))),
        [picker, index, t, variance, seed, upload],
        [*pictures, step_readout, *step_numbers],
        api_name="posterior",
        trigger_mode="always_last",
        **QUICK,
    )
    checked_on([bound_button.click, tab.select], h, seed, [index, upload]).success(
        quick(gpu(h.bound, limits.gpu_seconds(limits.BOUND_POINTS))),
        [picker, index, variance, seed, upload],
        [curve, bound_readout, *bound_numbers],
        api_name="bound",
        **QUICK,
    )
    clear_on(picker.change, [*plots, *pictures, step_readout, curve, bound_readout])


def build(h: Handlers) -> gr.Blocks:
    """The Blocks app: a model picker, and what the model is in a fold beside it, above the tabs."""
    with gr.Blocks(title="DDPM (Ho et al. 2020)", delete_cache=(limits.CACHE_SWEEP, limits.CACHE_AGE)) as blocks:
        code = f" · [this Space's code](https://huggingface.co/spaces/{SPACE_ID}/tree/main)" if SPACE_ID else ""
        gr.Markdown(texts.HEADER.format(code=code))
        with gr.Row():
            picker = gr.Dropdown(
                h.models.choices(),
                value=h.first,
                label="Model",
                scale=1,
                min_width=240,
                info=None if h.models.sources else "no model installed: set DDPM_HF_MODELS_DIR",
            )
            with gr.Column(scale=2, min_width=240), gr.Accordion("About this model", open=False):
                model_info = gr.Markdown()
        with gr.Tabs(overflow_behavior="wrap"):
            with gr.Tab("Sample"):
                sample_view, sample_intro = sample_tab(h, picker)
            with gr.Tab(texts.drawing_label(DIGITS)) as drawing:
                digit_intro, canvas = digit_tab(h, picker)
            with gr.Tab("Inpaint"):
                inpaint_tab(h, picker)
            with gr.Tab("Forward") as tab:
                forward_tab(h, picker, tab)
            with gr.Tab("Posterior") as tab:
                schedule_tab(h, picker, tab)
            with gr.Tab("Paper figures"):
                figures_tab(h, FigureHandlers(h.models), picker)
            with gr.Tab("About"):
                about_page(SPACE_ID)
        blocks.load(h.picker, None, picker, **PRIVATE)  # the paper's models, once the Hub has answered
        on_model = {"triggers": [blocks.load, picker.change], "inputs": picker, "api_visibility": "private"}
        gr.on(fn=h.describe, outputs=model_info, concurrency_limit=None, **on_model)
        texts_of_model = [sample_intro, digit_intro, drawing, canvas]
        gr.on(fn=h.model_texts, outputs=texts_of_model, concurrency_limit=None, show_progress="hidden", **on_model)
        picker.change(h.model_chosen, picker, list(sample_view), api_visibility="private", concurrency_limit=None)
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
    paper.probe_in_background(paper.offered(device()), handlers.models.refuse)  # start-up never waits for the Hub
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    demo.queue(max_size=QUEUE_SIZE).launch(
        theme=theme, css=CSS, js=JS, footer_links=["api"], max_file_size=limits.MAX_UPLOAD_BYTES
    )
