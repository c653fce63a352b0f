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

import spaces  # before anything starts CUDA (ZeroGPU)
import gradio as gr
from PIL import Image

from ddpm_hf.space import limits
from ddpm_hf.space.components import Canvas, Number, Picture, Slider
from ddpm_hf.space.handlers import Handlers
from ddpm_hf.space.registry import Registry
from ddpm_hf.space.traffic import RateLimit, rate_limited

REPO = Path(__file__).resolve().parent
DEFAULT_MODEL = "ddpm-mnist"
QUEUE_SIZE = int(os.environ.get("DDPM_HF_QUEUE_SIZE", "16"))
CHAIN = {"concurrency_id": "chain", "concurrency_limit": 1}  # reverse chains: one at a time on a CPU Space
QUICK = {"concurrency_id": "quick", "concurrency_limit": 4}  # forward, schedule, posterior, bound
PNG = {"format": "png", "type": "pil", "interactive": False, "elem_classes": ["picture"]}
EDITOR = {
    "type": "pil",
    "sources": ["upload", "clipboard"],
    "height": 320,
    "canvas_size": (280, 280),
    "layers": False,
    "format": "png",  # lossless, as a drawing should be (the default is WebP)
}
# Your digit's default t, and where the digit is forgotten: on models/ddpm-mnist a drawn 7 came back as a 7 in 8 of 8
# chains from t = 100 to 300 (the style varying more with t), 5 of 8 at t = 400, 2 of 8 at t = 500.
DIGIT_T, FORGETS_AT = 250, 400
VARIANCE_CHOICES = [(label, name) for name, label in limits.VARIANCE_LABELS.items()]
GIF = {"type": "filepath", "interactive": False, "elem_classes": ["picture"]}
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
CSS = """
.picture img { padding-top: 2.2rem; }
@media (max-width: 640px) { .picture img { padding-top: 3.4rem; } }
.dark .picture, .dark .picture .image-container { background: transparent; }
.black-canvas canvas { background: #000; }
.picture [data-testid="block-label"] { max-width: calc(100% - 6.5rem); white-space: normal; height: auto; }
"""
SPACE_ID = os.environ.get("SPACE_ID")  # set by Hugging Face Spaces
POSTERIOR_PICTURES = (  # (label, alt text) of the posterior step's pictures, in the handler's order
    (
        ("x₀", "the test image x₀"),
        ("xₜ", "the test image noised to step t"),
        ("x̂₀ (predicted)", "the network's prediction of x₀ from xₜ"),
    ),
    (
        ("μ̃ₜ(xₜ, x₀) (true)", "the true posterior mean, computed from x₀"),
        ("μθ(xₜ) (model)", "the model's posterior mean, computed from its prediction of x₀"),
        ("xₜ₋₁ ~ pθ", "one draw of the next, less noisy image from the model"),
    ),
)
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


def gpu(fn, duration):
    """A handler that runs the network: holds a ZeroGPU device for ``duration`` seconds (a no-op elsewhere)."""
    return spaces.GPU(duration=duration)(fn)


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


def seed_box(label: str = "Seed") -> Number:
    low, high = limits.SEED_RANGE
    return Number(limits.DEFAULT_SEED, label=label, minimum=low, maximum=high, step=1, min_width=120)


def image_index() -> Slider:
    return Slider(0, 255, value=0, step=1, label="Test image (index)")


def chain_view(h: Handlers, grid_label: str) -> list:
    """The result grid, the denoising GIF and a scrubber over its frames: the outputs of every chain event."""
    grid = gr.Image(label=grid_label, alt_text=grid_label, **PNG)
    with gr.Row():
        with gr.Column(scale=3, min_width=240):
            animation = gr.Image(
                label="Denoising: xₜ | predicted x̂₀",
                alt_text="Animation of the chain: the noisy images on the left, what they are heading to on the right",
                **GIF,
            )
        with gr.Column(scale=2, min_width=200):
            frame = gr.Image(label="One frame", alt_text="The frame of the animation chosen with the slider", **PNG)
            scrub = Slider(0, 1, value=1, step=1, label="Frame (after the run)", interactive=False)
    state = gr.State(None)
    hidden = {"api_visibility": "private", "show_progress": "hidden", "concurrency_limit": None}
    scrub.input(h.show_frame, [scrub, state], [frame, scrub], **hidden)
    return [grid, animation, scrub, frame, state]


def run_chain_on(trigger, stop, status, h_fn, inputs: list, outputs: list, api_name: str, seconds):
    """``trigger`` (a button's ``click`` or an event's ``then``) runs a chain, on a GPU for ``seconds`` where there is
    one; its progress shows on ``status`` (under the button), not over a picture; ``stop`` cancels it and says where
    it stopped, clearing the panels of the run."""
    event = trigger(gpu(h_fn, seconds), inputs, outputs, api_name=api_name, show_progress_on=[status], **CHAIN)
    chain = outputs[-4:]  # GIF, scrubber, frame, state
    stop.click(h_fn.__self__.stopped, chain[-1], [status, *chain], cancels=[event], api_visibility="private")
    return event


def run_and_stop() -> tuple:
    with gr.Row():
        run = gr.Button("Sample", variant="primary", size="md")
        stop = gr.Button("Stop", variant="stop", size="md")
    return run, stop


def sample_tab(h: Handlers, picker) -> tuple[list, gr.Markdown]:
    """Controls, the streamed grid, the denoising GIF and a scrubber over its frames; two samplers side by side."""
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            num_images = Slider(1, limits.MAX_IMAGES, value=limits.DEFAULT_IMAGES, step=1, label="Number of images")
            choices = [(limits.SAMPLER_INFO[name][0], name) for name in limits.SAMPLER_NAMES]
            sampler = gr.Dropdown(choices, value=limits.DEFAULT_SAMPLER, label="Sampler", info=limits.SAMPLER_HELP)
            with gr.Row(equal_height=True):
                seed = seed_box()
                randomize = gr.Checkbox(True, label="New seed each run", info="off: replay the seed in the box")
            with gr.Accordion("Advanced: steps and variance", open=False):
                default = limits.default_steps(limits.DEFAULT_SAMPLER)
                steps = Slider(*limits.STEP_RANGE, value=default, step=1, label="Sampling steps")
                variance = gr.Radio(VARIANCE_CHOICES, value=limits.DEFAULT_VARIANCE, label="Variance σₜ² (DDPM)")
            run, stop = run_and_stop()
            status = gr.Markdown()
            examples = gr.Examples(
                [[name, steps, 7] for name, steps in [("ddpm", 50), ("sde-dpm++", 20), ("dpm++", 20)]],
                [sampler, steps, seed],
                label="Examples: one seed, three samplers (click one, then Sample)",
            )
        with gr.Column(scale=2):
            outputs = chain_view(h, "Samples x₀ (while running: xₜ | x̂₀)")
    inputs = [picker, num_images, sampler, steps, variance, seed]
    private = {"api_visibility": "private", "queue": False}
    picked = run.click(h.pick_seed, [randomize, seed], seed, **private)
    run_chain_on(picked.then, stop, status, h.sample, inputs, outputs, "sample", sample_seconds)
    for typed in (seed.input, examples.dataset.click):  # a typed or chosen seed is meant to be replayed
        typed(lambda: False, None, randomize, **private)
    sampler.change(
        lambda name: (gr.Slider(value=limits.default_steps(name)), gr.Radio(visible=name == "ddpm")),
        sampler,
        [steps, variance],
        **private,
    )
    compare_samplers(h, picker, num_images, seed)
    return outputs, status


def sampler_label(name: str) -> str:
    return f"{limits.SAMPLER_INFO[name][0]}, same seed"


def compare_samplers(h: Handlers, picker, num_images, seed) -> None:
    """Two samplers from the same x_T (the seed in the box), side by side."""
    choices = [(limits.SAMPLER_INFO[name][0], name) for name in limits.SAMPLER_NAMES]
    with gr.Accordion("Compare two samplers on the same seed", open=False):
        with gr.Row():
            pairs = []
            for name in ("ddpm", "sde-dpm++"):
                with gr.Column(min_width=200):
                    sampler = gr.Dropdown(choices, value=name, label="Sampler")
                    steps = Slider(*limits.STEP_RANGE, value=limits.default_steps(name), step=1, label="Steps")
                    grid = gr.Image(label=sampler_label(name), alt_text=f"Samples of {name}", **PNG)
                    pairs.append((sampler, steps, grid))
                    sampler.change(
                        lambda s: (gr.Slider(value=limits.default_steps(s)), gr.Image(label=sampler_label(s))),
                        sampler,
                        [steps, grid],
                        api_visibility="private",
                        queue=False,
                    )
        compare = gr.Button("Run both")
    (a, a_steps, a_grid), (b, b_steps, b_grid) = pairs
    compare.click(
        gpu(h.compare, lambda *args, **kw: limits.gpu_seconds(1000)),
        [picker, num_images, a, a_steps, b, b_steps, seed],
        [a_grid, b_grid],
        api_visibility="private",
        **CHAIN,
    )


def digit_tab(h: Handlers, picker) -> None:
    """A sketch or upload through q(x_t | x_0) and back with the DDPM chain (SDEdit)."""
    gr.Markdown(
        "Draw a digit (white on black, like the training images) or upload a picture, pick $t$, and run the "
        f"chain back from $x_t$: a small $t$ keeps your digit and varies its style; above about $t = {FORGETS_AT}$ "
        "the model forgets it and draws a digit of its own.",
        latex_delimiters=LATEX,
    )
    black = Image.new("RGBA", (280, 280), "black")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            canvas = Canvas(
                value={"background": black, "layers": [], "composite": black},
                label="Your digit",
                brush=gr.Brush(colors=["#ffffff"], default_size=18, color_mode="fixed"),
                image_mode="RGBA",
                elem_classes=["black-canvas"],
                **EDITOR,
            )
            upload = Picture(label="…or upload a picture", sources=["upload", "clipboard"], height=170)
            t = Slider(
                1,
                999,
                value=DIGIT_T,
                step=1,
                label="t (how much noise)",
                info=f"below ~{FORGETS_AT}: your digit, restyled; above: the model's own digits",
            )
            num_images = Slider(1, limits.MAX_IMAGES, value=4, step=1, label="Number of images")
            seed = seed_box()
            with gr.Row():
                run = gr.Button("Noise and denoise", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            status = gr.Markdown()
            gr.Examples([[100], [DIGIT_T], [FORGETS_AT], [600]], [t], label="Try t (the digit kept → forgotten)")
        with gr.Column(scale=2):
            with gr.Row():
                x0 = gr.Image(label="x₀ as the model sees it", alt_text="Your picture, as x₀", min_width=160, **PNG)
                x_t = gr.Image(label="xₜ ~ q(xₜ | x₀)", alt_text="Your picture noised to t", min_width=160, **PNG)
            note = gr.Textbox(label="What was done to your picture", interactive=False, lines=1)
            outputs = chain_view(h, "Back to x₀, one chain per image")
    inputs = [picker, canvas, t, num_images, seed]
    outputs = [x0, x_t, note, *outputs]
    run_chain_on(run.click, stop, status, h.sdedit, inputs, outputs, "sdedit", limits.gpu_seconds(limits.SDEDIT_STEPS))
    upload.upload(
        h.digit_upload,
        upload,
        [canvas, upload, note, x0, x_t, *outputs],
        preprocess=False,
        api_visibility="private",
        queue=False,
    )


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
                **EDITOR,
            )
            index = image_index()
            load = gr.Button("Load test image")
            num_images = Slider(1, limits.MAX_IMAGES, value=4, step=1, label="Number of images")
            seed = seed_box()
            with gr.Row():
                run = gr.Button("Inpaint", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            status = gr.Markdown()
        with gr.Column(scale=2):
            kept = gr.Image(label="Kept (grey: to regenerate)", alt_text="The picture, painted part grey", **PNG)
            note = gr.Textbox(label="What was done to your picture", interactive=False, lines=1)
            outputs = chain_view(h, "Inpainted")
    load.click(quick(h.test_picture), [picker, index], editor, api_visibility="private", **QUICK)
    inputs = [picker, editor, num_images, seed]
    outputs = [kept, note, *outputs]
    run_chain_on(run.click, stop, status, h.inpaint, inputs, outputs, "inpaint", limits.gpu_seconds(250))


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
            t = Slider(0, 999, value=300, step=1, label="t")
            seed = seed_box("Noise seed (ε)")
            show = gr.Button("Show", variant="primary")
        with gr.Column(scale=2):
            with gr.Row():
                x0 = gr.Image(label="x₀", alt_text="The clean image x₀", **PNG)
                x_t = gr.Image(label="xₜ", alt_text="The image noised to step t", **PNG)
                gif = gr.Image(label="xₜ for t = 0 → T−1", alt_text="Animation: the image fading into noise", **GIF)
            readout = gr.Markdown()
    rates = [Number(label="signal_rate", visible=False), Number(label="noise_rate", visible=False)]
    # a file that is not an image is refused with a message by the event below; this clears it so the tab recovers
    upload.upload(h.clear_bad_upload, upload, upload, preprocess=False, api_visibility="private", queue=False)
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
        plot = {"x": "t", "y": "value", "color": "quantity", "min_width": 280, "x_title": "t (timestep)"}
        rates = gr.LinePlot(label="rates", title="ᾱₜ and the two rates", y_title="rate (no unit, 0 to 1)", **plot)
        variances = gr.LinePlot(
            label="variances",
            title="β̃ₜ / βₜ: the two σₜ²",
            y_title="β̃ₜ / βₜ (ratio)",
            caption="β̃ₜ = (1−ᾱₜ₋₁)/(1−ᾱₜ) βₜ: 0.45 βₜ at t = 1, within 2 % of it from t = 100 on",
            **plot,
        )
        snr = gr.LinePlot(
            label="log10 SNR",
            title="log10 SNRₜ",
            y_title="log10 SNR (SNR = ᾱₜ/(1−ᾱₜ))",
            **plot,
        )
    gr.Markdown(
        r"**One reverse step.** Noise a test image to $x_t$, let the network predict $\hat x_0$, and compare"
        r" the true posterior mean $\tilde\mu_t(x_t, x_0)$ with the model's $\mu_\theta(x_t) ="
        r" \tilde\mu_t(x_t, \hat x_0)$.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            index = image_index()
            t = Slider(0, 999, value=200, step=1, label="t")
            variance = gr.Radio(VARIANCE_CHOICES, value=limits.DEFAULT_VARIANCE, label="Variance σₜ² of pθ")
            seed = seed_box("Seed (ε and z)")
            with gr.Row():
                step_button = gr.Button("Posterior step", variant="primary")
                bound_button = gr.Button("Variational bound")
        with gr.Column(scale=3):
            pictures = []
            for row in POSTERIOR_PICTURES:
                with gr.Row():
                    pictures += [gr.Image(label=label, alt_text=alt, min_width=110, **PNG) for label, alt in row]
            step_readout = gr.Markdown()
            curve = gr.LinePlot(
                x="t",
                y="log10 bits/dim",
                label="bound terms",
                height=260,
                min_width=280,
                title="Bound terms: L₀, then Lₜ₋₁",
                x_title="t (timestep)",
                y_title="log10 of the term (bits/dim)",
            )
            bound_readout = gr.Markdown()
    step_numbers = [Number(label="mean_gap", visible=False), Number(label="vb_term", visible=False)]
    bound_numbers = [Number(label=name, visible=False) for name in ("total", "prior", "decoder")]
    gr.on([tab.select], quick(h.schedule), picker, [rates, variances, snr], api_name="schedule", **QUICK)
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
            sample_outputs, sample_status = sample_tab(h, picker)
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
            [*sample_outputs, sample_status],
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
        theme=theme, css=CSS, footer_links=["api", "settings"], max_file_size=limits.MAX_UPLOAD_BYTES
    )
