"""The Space's UI pieces, which ``app.py`` assembles into tabs: inputs, a chain's result view with its Run and Stop
buttons, two samplers side by side, and the schedule tab's plots and pictures (the page's styles and script:
``page``).

Every event that takes a visitor's numbers checks them first in a small event of its own (``checked_on``, the Run
buttons' ``run_chain_on``): a bad value is answered with its message alone, and the panels stay as they were.
Handlers that run the network hold a ZeroGPU device (``gpu``, ``spaces.GPU``); on other hardware that does nothing.
"""

import functools
from pathlib import Path

import gradio as gr
import spaces  # before anything starts CUDA (ZeroGPU)
from PIL import Image

from ..scheduling_ddpm_hf import DDPMHFScheduler
from . import limits
from .components import Canvas, Seed, Slider
from .handlers import Handlers
from .outputs import IDLE_FRAME, ChainOutputs
from .page import REFUSED, RUN_BUTTON, RUN_ROW, RUN_STATUS

CHAIN = {"concurrency_id": "chain", "concurrency_limit": 1}  # reverse chains: one at a time on a CPU Space
QUICK = {"concurrency_id": "quick", "concurrency_limit": 4}  # forward, schedule, posterior, bound
PRIVATE = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}  # small events that cannot fail
# the checks before an event: queued, as only a queued event's message is shown; its panels show no progress or error
CHECK = {"api_visibility": "private", "show_progress": "hidden", "concurrency_limit": None}
BUTTONS = ["download", "fullscreen"]
PNG = {"format": "png", "type": "pil", "interactive": False, "buttons": BUTTONS, "elem_classes": ["picture"]}
GIF = {"type": "filepath", "interactive": False, "buttons": BUTTONS, "elem_classes": ["picture"]}
SMALL_PNG = {**PNG, "buttons": [], "elem_classes": ["picture", "small-picture"]}  # three across on a phone
EDITOR = {
    "type": "pil",
    "sources": ["upload", "clipboard"],
    "height": 320,
    "canvas_size": (280, 280),
    "layers": False,
    "format": "png",  # lossless, as a drawing should be (the default is WebP)
}
BLACK = Image.new("RGBA", EDITOR["canvas_size"], "black")
BLANK = {"background": BLACK, "layers": [], "composite": BLACK}  # the drawing canvas, empty
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
# The t sliders end at T − 1 of the chosen model's schedule; until a model is loaded, of the library's default one.
LAST_T = DDPMHFScheduler().config.num_train_timesteps - 1
SAMPLER_CHOICES = [(limits.SAMPLER_INFO[name][0], name) for name in limits.SAMPLER_NAMES]
VARIANCE_CHOICES = [(label, name) for name, label in limits.VARIANCE_LABELS.items()]
POSTERIOR_PICTURES = (  # (label, alt text) of the posterior step's pictures, in the handler's order
    (
        ("Clean x₀", "the test image x₀"),
        ("Noised xₜ", "the test image noised to step t"),
        ("Guess x̂₀", "the network's prediction of x₀ from xₜ"),
    ),
    (
        ("True μ̃ₜ", "the true posterior mean μ̃ₜ(xₜ, x₀), computed from x₀"),
        ("Model's μθ", "the model's posterior mean μθ(xₜ), computed from its prediction of x₀"),
        ("Next xₜ₋₁", "one draw of the next, less noisy image xₜ₋₁ from the model"),
    ),
)


def gpu(fn, duration):
    """A handler that runs the network: holds a ZeroGPU device for ``duration`` seconds (a no-op elsewhere)."""
    return spaces.GPU(duration=duration)(fn)


def seed_box(label: str = "Seed") -> Seed:
    low, high = limits.SEED_RANGE
    return Seed(
        limits.DEFAULT_SEED, label=label, minimum=low, maximum=high, step=1, min_width=120, placeholder="random"
    )


def image_index() -> Slider:
    return Slider(0, 255, value=0, step=1, label="Test image (index)")


def images_slider(value: int = limits.DEFAULT_IMAGES) -> Slider:
    return Slider(1, limits.MAX_IMAGES, value=value, step=1, label="Number of images")


def t_slider(h: Handlers, picker, low: int, value: int, label: str = "t", **kwargs) -> Slider:
    """A slider over timesteps from ``low`` to T − 1 of the model chosen with ``picker`` (set on load and on change)."""
    slider = Slider(low, LAST_T, value=value, step=1, label=label, **kwargs)
    gr.on(None, h.timestep_range, picker, slider, **PRIVATE)
    return slider


def class_controls(h: Handlers, picker, default: str = limits.ALL_CLASSES) -> tuple[gr.Dropdown, Slider]:
    """A class picker (starting at ``default``) and a guidance slider, shown only for a class-conditional model (set
    on load and on change)."""
    with gr.Group(visible=False) as group:
        choice = gr.Dropdown(
            [limits.ANY_CLASS, limits.ALL_CLASSES],
            value=default,
            allow_custom_value=True,  # the model's class names arrive with the model; the handler checks the value
            label="Class",
            info='Which one to draw; "any" lets the model choose',
        )
        guidance = Slider(*limits.GUIDANCE_RANGE, value=1, step=0.5, label="Guidance w", info=limits.GUIDANCE_HELP)
    gr.on(None, functools.partial(h.class_controls, default=default), picker, [group, choice, guidance], **PRIVATE)
    return choice, guidance


def steps_of_sampler(name: str) -> tuple:
    """A newly chosen sampler's step count, and the variance choice shown only for DDPM."""
    return gr.Slider(value=limits.default_steps(name)), gr.Radio(visible=name == "ddpm")


def drawing_canvas(label: str) -> Canvas:
    """The Your digit tab's canvas: black, with a white brush, as the training images are (``BLANK`` empties it)."""
    return Canvas(
        value=BLANK,
        label=label,
        brush=gr.Brush(colors=["#ffffff"], default_size=18, color_mode="fixed"),
        image_mode="RGBA",
        elem_id="digit-canvas",
        elem_classes=["black-canvas", "checked-drop"],
        **EDITOR,
    )


def refuse_unreadable(h: Handlers, editor_id: str, outputs: list, pictures: int) -> None:
    """The hidden button ``page.JS`` presses when a file put on the editor ``editor_id`` is not an image: it shows why
    in the note (``outputs[0]``) and clears ``pictures`` pictures and the ``ChainOutputs`` that follow it."""
    button = gr.Button("The picture could not be read", visible="hidden", elem_id=editor_id + REFUSED)
    button.click(functools.partial(h.picture_refused, pictures), None, outputs, api_visibility="private")


def run_controls(label: str, status: str = "") -> tuple[gr.Button, gr.Button, gr.Markdown]:
    """A chain's Run and Stop buttons and its status line (starting with ``status``)."""
    with gr.Row(elem_classes=[RUN_ROW]):
        run = gr.Button(label, variant="primary", size="md", min_width=100, elem_classes=[RUN_BUTTON])
        stop = gr.Button("Stop", variant="stop", size="md", min_width=80)
    return run, stop, gr.Markdown(status, elem_classes=[RUN_STATUS])


def chain_view(h: Handlers, grid_label: str, status: gr.Markdown) -> ChainOutputs:
    """The result grid, the denoising GIF and a scrubber over its frames, with ``status`` (the line under the run
    button): what every chain event shows."""
    grid = gr.Image(label=grid_label, alt_text=grid_label, **PNG)
    with gr.Row():
        with gr.Column(scale=3, min_width=240):
            animation = gr.Image(
                label="The run as an animation: now | guessed end",
                alt_text="Animation of the chain: the noisy images on the left, what they are heading to on the right",
                **GIF,
            )
        with gr.Column(scale=2, min_width=200):
            frame = gr.Image(label="One frame", alt_text="The frame of the animation chosen with the slider", **PNG)
            scrubber = Slider(0, 1, value=1, step=1, label="Frame", info=IDLE_FRAME, interactive=False)
    state = gr.State(None)
    scrubber.input(h.show_frame, [scrubber, state], [frame, scrubber], **CHECK)
    return ChainOutputs(grid, animation, scrubber, frame, status, state)


def checked_on(triggers, h: Handlers, seed: Seed, numbers: list, randomize=None, disable=None, **kwargs):
    """The check before an event on ``triggers``: the seed it will use, shown in its box (a new one where
    ``randomize`` is on or the box is empty), and the event's other inputs (``numbers``, uploads) refused with their
    message when bad, nothing else changed. Chain the event with ``.success``.

    Args:
        disable: a button to turn off (until the caller turns it on again).
    """
    pick = h.pick_seed if randomize is not None else functools.partial(h.pick_seed, False)
    inputs = [randomize, seed, *numbers] if randomize is not None else [seed, *numbers]
    if disable is None:
        return gr.on(triggers, pick, inputs, seed, **kwargs, **CHECK)

    def pick_and_disable(*values):
        return pick(*values), gr.Button(interactive=False)

    return gr.on(triggers, pick_and_disable, inputs, [seed, disable], **kwargs, **CHECK)


def clear_on(trigger, outputs: list) -> None:
    """Empty ``outputs`` (two or more) on ``trigger``: results of another model."""
    trigger(lambda: (None,) * len(outputs), None, outputs, **PRIVATE)


def run_chain_on(
    run, stop, h: Handlers, fn, inputs: list, shown: list, view: ChainOutputs, api_name, seconds, randomize=None
):
    """``run`` runs the chain handler ``fn``, on a GPU for ``seconds`` where there is one, showing ``shown`` and
    ``view``; the queue's word shows on the status line, not over a picture; ``stop`` cancels it and says where it
    stopped, clearing the panels of the run.

    First the run's seed (the ``Seed`` among ``inputs``; a new one where ``randomize``, "New seed each run", is on) is
    picked and shown and its numbers are checked; Run is off until the chain ends, so the seed in the box is always
    the one of the result shown.
    """
    (seed,) = [x for x in inputs if isinstance(x, Seed)]
    numbers = [x for x in inputs if isinstance(x, Slider)]
    picked = checked_on(run.click, h, seed, numbers, randomize, disable=run)
    event = picked.success(
        gpu(fn, seconds), inputs, [*shown, *view], api_name=api_name, show_progress_on=[view.status], **CHAIN
    )
    for after in (event.then, event.failure):  # after an error or Stop only the second runs
        after(lambda: gr.Button(interactive=True), None, run, **PRIVATE)
    stop.click(h.stopped, view.state, list(view), cancels=[event], **CHECK)
    return event


def sampler_label(name: str) -> str:
    return f"{limits.SAMPLER_INFO[name][0]}, same seed"


def compare_samplers(h: Handlers, picker, num_images, seed) -> None:
    """Two samplers from the same x_T (the seed in the box), side by side."""
    with gr.Accordion("Compare two samplers on the same seed", open=False):
        gr.Markdown(
            "Both start from the same noise (the seed in the box). The deterministic samplers (DPM-Solver++, DDIM "
            "with η = 0) turn it into nearly the same pictures; the stochastic ones (DDPM, DPM-Solver++ SDE, DDIM with "
            "η = 1) add fresh noise at every step, so from the same start they end at different pictures."
        )
        with gr.Row():
            pairs = []
            for name in limits.COMPARED_SAMPLERS:
                with gr.Column(min_width=200):
                    sampler = gr.Dropdown(SAMPLER_CHOICES, value=name, label="Sampler")
                    steps = Slider(*limits.STEP_RANGE, value=limits.default_steps(name), step=1, label="Steps")
                    grid = gr.Image(label=sampler_label(name), alt_text=f"Samples of {name}", **PNG)
                    pairs.append((sampler, steps, grid))
                    sampler.change(
                        lambda s: (gr.Slider(value=limits.default_steps(s)), gr.Image(label=sampler_label(s))),
                        sampler,
                        [steps, grid],
                        **PRIVATE,
                    )
        compare = gr.Button("Run both")
    (a, a_steps, a_grid), (b, b_steps, b_grid) = pairs

    def seconds(model, num_images, sampler_a, steps_a, sampler_b, steps_b, *args, **kwargs) -> int:
        return limits.gpu_seconds(steps_a) + limits.gpu_seconds(steps_b)

    checked_on(compare.click, h, seed, [num_images, a_steps, b_steps]).success(
        gpu(h.compare, seconds),
        [picker, num_images, a, a_steps, b, b_steps, seed],
        [a_grid, b_grid],
        api_visibility="private",
        **CHAIN,
    )


def schedule_plots() -> list[gr.LinePlot]:
    """The schedule's three plots (the ``schedule`` handler's outputs): the rates, the two σₜ², log10 SNR."""
    plot = {"x": "t", "y": "value", "color": "quantity", "min_width": 280, "x_title": "t (timestep)"}
    return [
        gr.LinePlot(label="rates", title="ᾱₜ and the two rates", y_title="rate (no unit, 0 to 1)", **plot),
        gr.LinePlot(
            label="variances",
            title="β̃ₜ / βₜ: the two σₜ²",
            y_title="β̃ₜ / βₜ (ratio)",
            caption="β̃ₜ = (1−ᾱₜ₋₁)/(1−ᾱₜ) βₜ: 0.45 βₜ at t = 1, within 2 % of it from t = 100 on",
            **plot,
        ),
        gr.LinePlot(label="log10 SNR", title="log10 SNRₜ", y_title="log10 SNR (SNR = ᾱₜ/(1−ᾱₜ))", **plot),
    ]


def posterior_pictures() -> list[gr.Image]:
    """The posterior step's six pictures, in two rows (the ``posterior`` handler's first outputs)."""
    pictures = []
    for row in POSTERIOR_PICTURES:
        with gr.Row():
            pictures += [gr.Image(label=label, alt_text=alt, min_width=100, **SMALL_PNG) for label, alt in row]
    return pictures


def bound_plot() -> gr.LinePlot:
    return gr.LinePlot(
        x="t",
        y="log10 bits/dim",
        label="bound terms",
        min_width=280,
        title="Bound terms: L₀, then Lₜ₋₁",
        x_title="t (timestep)",
        y_title="log10 of the term (bits/dim)",
    )


def about_page(space_id: str | None) -> None:
    """The About tab: the paper's equations and how to use the models (``about.md``)."""
    where = (
        f'huggingface_hub.snapshot_download("{space_id}", repo_type="space", allow_patterns="models/*")'
        if space_id
        else '"."  # a clone of this repository'
    )
    text = (Path(__file__).parent / "about.md").read_text()
    gr.Markdown(text.replace("{where}", where), latex_delimiters=LATEX)
