"""The Space's UI pieces, which ``app.py`` assembles into tabs: styles, inputs, a chain's result view with its Run and
Stop buttons, two samplers side by side, and the schedule tab's plots and pictures.

Handlers that run the network hold a ZeroGPU device (``gpu``, ``spaces.GPU``); on other hardware that does nothing.
"""

import functools

import gradio as gr
import spaces  # before anything starts CUDA (ZeroGPU)

from ..scheduling_ddpm_hf import DDPMHFScheduler
from . import limits
from .components import Number, Slider
from .handlers import ChainOutputs, Handlers

CHAIN = {"concurrency_id": "chain", "concurrency_limit": 1}  # reverse chains: one at a time on a CPU Space
QUICK = {"concurrency_id": "quick", "concurrency_limit": 4}  # forward, schedule, posterior, bound
PRIVATE = {"api_visibility": "private", "queue": False}  # the page's own small events
PNG = {"format": "png", "type": "pil", "interactive": False, "elem_classes": ["picture"]}
GIF = {"type": "filepath", "interactive": False, "elem_classes": ["picture"]}
EDITOR = {
    "type": "pil",
    "sources": ["upload", "clipboard"],
    "height": 320,
    "canvas_size": (280, 280),
    "layers": False,
    "format": "png",  # lossless, as a drawing should be (the default is WebP)
}
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
CSS = """
.picture img { padding-top: 2.2rem; }
@media (max-width: 640px) { .picture img { padding-top: 3.4rem; } }
.dark .picture, .dark .picture .image-container { background: transparent; }
.black-canvas canvas { background: #000; }
.picture [data-testid="block-label"] { max-width: calc(100% - 6.5rem); white-space: normal; height: auto; }
.katex-display { overflow-x: auto; overflow-y: hidden; }
"""
REFUSED = "-refused"  # an image editor's id + this: its hidden button, pressed when a file put on it is no image
JS = """
() => {
  // A file dropped on (or chosen in) an image editor of class checked-drop is decoded here first. One the browser
  // cannot read as an image is kept from the editor, which would fail with only a console error, and the editor's
  // hidden button (id + "-refused") is pressed, so that the app says why and clears the tab's earlier results.
  const readable = async files => {
    try { for (const file of files) (await createImageBitmap(file)).close(); return true; } catch { return false; }
  };
  const replayed = new WeakSet();
  const check = (event, files, replay) => {
    const editor = event.target.closest && event.target.closest('.checked-drop');
    if (!editor || replayed.has(event) || !files || !files.length) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    readable([...files]).then(ok => {
      if (ok) { const again = replay(); replayed.add(again); event.target.dispatchEvent(again); return; }
      event.target.dispatchEvent(new DragEvent('dragleave', {bubbles: true}));
      if (event.target.type === 'file') event.target.value = '';
      document.getElementById(editor.id + '-refused')?.click();
    });
  };
  document.addEventListener('drop', event => {
    const copy = new DataTransfer();  // the event's own files are gone once it has been handled
    for (const file of event.dataTransfer?.files ?? []) copy.items.add(file);
    check(event, copy.files, () => new DragEvent('drop', {dataTransfer: copy, bubbles: true, cancelable: true}));
  }, true);
  document.addEventListener('change', event => {
    if (event.target.type === 'file') check(event, event.target.files, () => new Event('change', {bubbles: true}));
  }, true);
}
"""
# The t sliders end at T − 1 of the chosen model's schedule; until a model is loaded, of the library's default one.
LAST_T = DDPMHFScheduler().config.num_train_timesteps - 1
SAMPLER_CHOICES = [(limits.SAMPLER_INFO[name][0], name) for name in limits.SAMPLER_NAMES]
VARIANCE_CHOICES = [(label, name) for name, label in limits.VARIANCE_LABELS.items()]
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


def gpu(fn, duration):
    """A handler that runs the network: holds a ZeroGPU device for ``duration`` seconds (a no-op elsewhere)."""
    return spaces.GPU(duration=duration)(fn)


def seed_box(label: str = "Seed") -> Number:
    low, high = limits.SEED_RANGE
    return Number(limits.DEFAULT_SEED, label=label, minimum=low, maximum=high, step=1, min_width=120)


def image_index() -> Slider:
    return Slider(0, 255, value=0, step=1, label="Test image (index)")


def images_slider(value: int = limits.DEFAULT_IMAGES) -> Slider:
    return Slider(1, limits.MAX_IMAGES, value=value, step=1, label="Number of images")


def t_slider(h: Handlers, picker, low: int, value: int, label: str = "t", **kwargs) -> Slider:
    """A slider over timesteps from ``low`` to T − 1 of the model chosen with ``picker`` (set on load and on change)."""
    slider = Slider(low, LAST_T, value=value, step=1, label=label, **kwargs)
    gr.on(None, h.timestep_range, picker, slider, **PRIVATE)
    return slider


def refuse_unreadable(h: Handlers, editor_id: str, outputs: list, pictures: int) -> None:
    """The hidden button ``JS`` presses when a file put on the editor ``editor_id`` is not an image: it shows why in the
    note (``outputs[0]``) and clears ``pictures`` pictures and the ``ChainOutputs`` that follow it."""
    button = gr.Button("The picture could not be read", visible="hidden", elem_id=editor_id + REFUSED)
    button.click(functools.partial(h.picture_refused, pictures), None, outputs, api_visibility="private")


def run_and_stop(label: str) -> tuple[gr.Button, gr.Button]:
    with gr.Row():
        return gr.Button(label, variant="primary", size="md"), gr.Button("Stop", variant="stop", size="md")


def chain_view(h: Handlers, grid_label: str, status: gr.Markdown) -> ChainOutputs:
    """The result grid, the denoising GIF and a scrubber over its frames, with ``status`` (the line under the run
    button): what every chain event shows."""
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
            scrubber = Slider(0, 1, value=1, step=1, label="Frame (after the run)", interactive=False)
    state = gr.State(None)
    hidden = {"api_visibility": "private", "show_progress": "hidden", "concurrency_limit": None}
    scrubber.input(h.show_frame, [scrubber, state], [frame, scrubber], **hidden)
    return ChainOutputs(grid, animation, scrubber, frame, status, state)


def run_chain_on(trigger, stop, h: Handlers, fn, inputs: list, shown: list, view: ChainOutputs, api_name, seconds):
    """``trigger`` (a button's ``click`` or an event's ``then``) runs the chain handler ``fn``, on a GPU for ``seconds``
    where there is one, showing ``shown`` and ``view``; the queue's word shows on the status line, not over a picture;
    ``stop`` cancels it and says where it stopped, clearing the panels of the run."""
    outputs = [*shown, *view]
    event = trigger(gpu(fn, seconds), inputs, outputs, api_name=api_name, show_progress_on=[view.status], **CHAIN)
    stop.click(h.stopped, view.state, list(view), cancels=[event], api_visibility="private")
    return event


def sampler_label(name: str) -> str:
    return f"{limits.SAMPLER_INFO[name][0]}, same seed"


def compare_samplers(h: Handlers, picker, num_images, seed) -> None:
    """Two samplers from the same x_T (the seed in the box), side by side."""
    with gr.Accordion("Compare two samplers on the same seed", open=False):
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

    compare.click(
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
            pictures += [gr.Image(label=label, alt_text=alt, min_width=110, **PNG) for label, alt in row]
    return pictures


def bound_plot() -> gr.LinePlot:
    return gr.LinePlot(
        x="t",
        y="log10 bits/dim",
        label="bound terms",
        height=260,
        min_width=280,
        title="Bound terms: L₀, then Lₜ₋₁",
        x_title="t (timestep)",
        y_title="log10 of the term (bits/dim)",
    )
