"""The Paper figures tab: figures 7 and 8 of Ho et al. 2020 on the chosen model (``figures`` computes them), each a
section with its controls, the pictures it starts from, and a chain's result view with Run and Stop."""

import functools

import gradio as gr

from . import limits
from .components import Picture, Slider
from .figures import FIGURE_CHAINS, INDEX_B, MIX_T, SHARED_T, FigureHandlers
from .handlers import Handlers
from .layout import LATEX, PNG, PRIVATE, chain_view, image_index, run_chain_on, run_controls, seed_box, t_slider

SECONDS = limits.gpu_seconds(limits.SDEDIT_STEPS)  # both run SDEdit's chain
SHARED_T_EXAMPLES = (100, 250, SHARED_T, 600)  # from the picture kept to the picture forgotten


def upload_box(h: Handlers, label: str) -> Picture:
    """An optional upload that replaces a test image; a file that is not an image is refused with its message by the
    run, and cleared here so that the section recovers."""
    upload = Picture(label=label, type="pil", sources=["upload", "clipboard"], height=180)
    upload.upload(h.clear_bad_upload, upload, upload, preprocess=False, **PRIVATE)
    return upload


def picture(label: str, alt: str) -> gr.Image:
    return gr.Image(label=label, alt_text=alt, min_width=140, **PNG)


def intro(title: str, explanation: str, *equations: str) -> None:
    """A figure's heading, what it shows in plain words, and its equations (LaTeX, one displayed line each, short
    enough for a phone's width)."""
    lines = "\n".join(f"$${equation}$$" for equation in equations)
    gr.Markdown(f"### {title}\n{explanation}\n\n{lines}", latex_delimiters=LATEX)


def figures_tab(h: Handlers, figures: FigureHandlers, picker) -> None:
    """The tab's body: figure 7 (API "shared_xt"), then figure 8 (API "interpolate")."""
    shared_xt_section(h, figures, picker)
    interpolation_section(h, figures, picker)


def shared_xt_section(h: Handlers, figures: FigureHandlers, picker) -> None:
    """Figure 7: one picture noised once, and several chains from that x_t."""
    intro(
        "Figure 7: many samples from one noisy picture",
        "A picture is noised **once** to $x_t$, and several reverse chains run from that same $x_t$, each with its "
        "own noise: what the samples share is what survived the noise at $t$; the larger $t$, the less they share.",
        r"x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon \text{ (one } \epsilon\text{)}",
        r"x_0^{(k)} \sim p_\theta(x_0 \mid x_t),\ k = 1, \dots, n",
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            index = image_index()
            upload = upload_box(h, "…or upload a picture")
            t = t_slider(h, picker, 0, SHARED_T, "t (how much noise)", info="small: kept; large: forgotten")
            gr.Examples([[v] for v in SHARED_T_EXAMPLES], [t], label="Try t")
            chains = Slider(1, limits.MAX_IMAGES, value=FIGURE_CHAINS, step=1, label="Number of chains")
            seed = seed_box()
        with gr.Column(scale=2):
            run, stop, status = run_controls("Run the chains")
            with gr.Row():
                x0 = picture("The picture (x₀)", "The picture x₀")
                x_t = picture("Noised once (xₜ)", "The picture noised to t: every chain starts here")
                guess = picture("Network's guess from xₜ (x̂₀)", "The network's prediction of x₀ from xₜ alone")
            note = gr.Textbox(label="What was done to the picture", interactive=False, lines=1)
            view = chain_view(h, "Samples, all from the same xₜ", status)
    inputs, shown = [picker, index, upload, t, chains, seed], [x0, x_t, guess, note]
    run_chain_on(run, stop, h, figures.shared_xt, inputs, shown, view, "shared_xt", SECONDS)
    picker.change(functools.partial(h.cleared, 3), None, [note, x0, x_t, guess, *view], **PRIVATE)


def interpolation_section(h: Handlers, figures: FigureHandlers, picker) -> None:
    """Figure 8: two pictures noised with one ε, mixed for a row of λ, and brought back with the same noise."""
    intro(
        "Figure 8: interpolation in the noised space",
        "Two pictures are noised to the same $t$ with the same noise, mixed, and each mix is brought back by the "
        "reverse chain (with the same noise for every mix): the row goes from the first picture to the second "
        "through pictures of the model's own; the larger $t$, the coarser and more varied the row.",
        r"\bar x_t = (1-\lambda)\,x_t + \lambda\,x'_t",
        r"\bar x_0 \sim p_\theta(x_0 \mid \bar x_t),\quad \lambda = 0, 0.25, \dots, 1",
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            index_a = Slider(0, 255, value=0, step=1, label="First test image (index)")  # as layout.image_index
            upload_a = upload_box(h, "…or upload the first picture")
            index_b = Slider(0, 255, value=INDEX_B, step=1, label="Second test image (index)")
            upload_b = upload_box(h, "…or upload the second picture")
            t = t_slider(h, picker, 0, MIX_T, "t (how much noise)", info="large: the ends forget the pictures")
            mix = Slider(0, 1, value=0.5, step=0.05, label="λ (your mix)", info="joins the row 0, 0.25, …, 1")
            seed = seed_box()
        with gr.Column(scale=2):
            run, stop, status = run_controls("Interpolate")
            with gr.Row():
                x0_a = picture("First picture (x₀)", "The first picture x₀")
                x0_b = picture("Second picture (x′₀)", "The second picture x′₀")
            starts = gr.Image(label="Mixed xₜ, λ from 0 to 1", alt_text="The mixed noisy pictures, one per λ", **PNG)
            note = gr.Textbox(label="What was done to the pictures", interactive=False, lines=1)
            view = chain_view(h, "Brought back, λ from 0 to 1", status)
    inputs = [picker, index_a, index_b, upload_a, upload_b, t, mix, seed]
    shown = [x0_a, x0_b, starts, note]
    run_chain_on(run, stop, h, figures.interpolate, inputs, shown, view, "interpolate", SECONDS)
    picker.change(functools.partial(h.cleared, 3), None, [note, x0_a, x0_b, starts, *view], **PRIVATE)
