"""Gradio Space for ddpm-hf: sample a DDPM (Ho et al. 2020), watch q(x_t | x_0), explore the schedule and posterior.

``python app.py`` serves it on 127.0.0.1:7860 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` override that).
The models offered are the subfolders of ``$DDPM_HF_MODELS_DIR`` (default: ``models/`` beside this file) that hold a
``model_index.json``, plus the Hub repo ``$DDPM_HF_EXTRA_MODEL`` if set. Clients pick a model by name, never by path.

Importing this file is cheap: gradio is imported by ``build_demo()``, and torch, diffusers, models and data by the
first request that needs them (``ddpm_hf.app_logic``). Compute events share one queue slot (one job at a time).
API endpoints: ``/sample`` (streams), ``/forward``, ``/schedule``, ``/posterior``, ``/bound``; see the README, "The app".
"""

import functools
import importlib
import os
import random
import threading
from pathlib import Path

try:
    import spaces  # Hugging Face ZeroGPU
except ImportError:
    spaces = None

REPO = Path(__file__).resolve().parent
DEFAULT_MODEL = "ddpm-mnist"
VARIANCE_CHOICES = [("β̃_t (fixed_small)", "fixed_small"), ("β_t (fixed_large)", "fixed_large")]
QUEUE_SIZE = int(os.environ.get("DDPM_HF_QUEUE_SIZE", "16"))
CSS = ".picture img { padding-top: 2.4rem; }"  # keep an image's label from covering its top row
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
ABOUT = r"""
### Denoising Diffusion Probabilistic Models
Ho, Jain & Abbeel 2020, [arXiv:2006.11239](https://arxiv.org/abs/2006.11239).

The **forward process** adds Gaussian noise in $T = 1000$ steps, $\beta_t$ rising linearly from $10^{-4}$ to $0.02$.
With $\alpha_t = 1-\beta_t$ and $\bar\alpha_t = \prod_{s\le t}\alpha_s$ it has a closed form:
$$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, \qquad \epsilon \sim \mathcal N(0, I).$$
Given $x_0$, a reverse step is Gaussian: $q(x_{t-1}\mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)$ with
$$\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0
  + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t, \qquad
  \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t .$$
A network learns the noise: $L_\text{simple} = \mathbb E\,\lVert \epsilon - \epsilon_\theta(x_t, t)\rVert^2$.
**Sampling** starts from $x_T \sim \mathcal N(0, I)$ and repeats, with $z \sim \mathcal N(0, I)$,
$$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)\Big)
  + \sigma_t z, \qquad \sigma_t^2 = \tilde\beta_t \ \text{or}\ \beta_t .$$
The variational bound $L = L_T + \sum_{t>1} L_{t-1} + L_0$ (bits/dim) sums KL divergences between these Gaussians.

### Load the model in Python
```python
import ddpm_hf  # this repository's package
pipe = ddpm_hf.load_pipeline("models/ddpm-mnist")  # a pipeline folder or a Hub repo id
images = ddpm_hf.sample(pipe.unet, pipe.scheduler, 16, seed=0).images

from diffusers import DiffusionPipeline  # no ddpm_hf needed: the scheduler's code ships in the folder
pipe = DiffusionPipeline.from_pretrained("models/ddpm-mnist", trust_remote_code=True)
images = pipe(batch_size=16).images
```
"""


def model_choices() -> dict[str, str]:
    """The models clients may ask for: name → local pipeline folder or Hub repo id (the default model first)."""
    folder = Path(os.environ.get("DDPM_HF_MODELS_DIR") or REPO / "models")
    names = sorted(p.name for p in folder.iterdir() if (p / "model_index.json").is_file()) if folder.is_dir() else []
    names.sort(key=lambda name: name != DEFAULT_MODEL)
    models = {name: str(folder / name) for name in names}
    extra = os.environ.get("DDPM_HF_EXTRA_MODEL", "").strip()
    if extra:
        models[extra] = extra
    return models


def gpu(fn):
    """``spaces.GPU`` where the ``spaces`` package exists (ZeroGPU Spaces), else the function itself."""
    return spaces.GPU(fn) if spaces is not None else fn


def logic():
    """``ddpm_hf.app_logic``, imported on first use (it imports torch and diffusers)."""
    return importlib.import_module("ddpm_hf.app_logic")


def build_demo():
    """The Blocks app: a model picker above four tabs whose events call ``ddpm_hf.app_logic``."""
    import gradio as gr

    ui = Wiring(gr, model_choices())
    with gr.Blocks(title="DDPM (Ho et al. 2020)", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# Denoising Diffusion Probabilistic Models\nHo, Jain & Abbeel 2020, on the Hugging Face stack.")
        with gr.Row(equal_height=True):
            ui.picker = gr.Dropdown(
                list(ui.models),
                value=next(iter(ui.models), None),
                label="Model",
                scale=1,
                info=None if ui.models else "no model installed: set DDPM_HF_MODELS_DIR",
            )
            model_info = gr.Markdown(scale=3)
        with gr.Tab("Sample"):
            sample_tab(ui)
        with gr.Tab("Forward process") as tab:
            forward_tab(ui, tab)
        with gr.Tab("Schedule & posterior") as tab:
            schedule_tab(ui, tab)
        with gr.Tab("About"):
            gr.Markdown(ABOUT, latex_delimiters=LATEX)

        def describe(model):
            """One line on the chosen model (loading it), or why it cannot be used; never an error pop-up."""
            try:
                return logic().describe(ui.pipeline(model)[0])
            except gr.Error as e:
                return f"**{model or 'no model'}** cannot be used: {e.message}"

        # not in the compute slot: page loads must not wait behind another user's sampling
        gr.on(
            [demo.load, ui.picker.change],
            describe,
            ui.picker,
            model_info,
            api_visibility="private",
            concurrency_limit=None,
        )
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


class Wiring:
    """What every tab needs: gradio, the allowed models and their picker, and the error and queue policies."""

    def __init__(self, gr, models: dict[str, str]):
        self.gr, self.models, self.picker = gr, models, None
        # every computing event shares one queue slot: one job at a time on a CPU Space
        self.compute = {"concurrency_id": "compute", "concurrency_limit": 1}
        self.png = {"format": "png", "type": "pil", "interactive": False, "elem_classes": ["picture"]}
        self.gif = {"type": "filepath", "interactive": False, "elem_classes": ["picture"]}

    def pipeline(self, model: str):
        """(pipeline, source) for a model name from the allowed list; never a path from the client."""
        if model not in self.models:
            raise self.gr.Error(f"unknown model {model!r}; choose one of {', '.join(self.models) or '(none)'}")
        try:
            return logic().get_pipeline(model, self.models[model]), self.models[model]
        except ValueError as e:
            raise self.gr.Error(str(e)) from None

    def user_errors(self, fn):
        """Show ``ValueError`` messages (bad input, unloadable model, missing data) to the user as ``gr.Error``."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except self.gr.Error:  # already for the user (gr.Error is itself a ValueError)
                raise
            except ValueError as e:
                raise self.gr.Error(str(e)) from None

        return wrapper


def seed_box(gr, label: str = "Seed"):
    return gr.Number(0, label=label, minimum=0, maximum=2**31 - 1, step=1, min_width=120)


def sample_tab(ui: Wiring) -> None:
    """Controls, the streamed grid, the denoising GIF and a scrubber over its frames."""
    gr = ui.gr
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            images_slider = gr.Slider(1, 16, value=16, step=1, label="Number of images")
            steps_slider = gr.Slider(
                1,
                1000,
                value=250,
                step=1,
                label="Sampling steps",
                info="strided reverse chain; 1000 is the paper's full chain",
            )
            variance_radio = gr.Radio(VARIANCE_CHOICES, value="fixed_small", label="Variance σ_t²")
            seed = seed_box(gr)
            with gr.Row():
                dice = gr.Button("Random seed", size="md")
                run = gr.Button("Sample", variant="primary", size="md")
        with gr.Column(scale=2):
            grid = gr.Image(label="Samples (x_t while sampling, then x_0)", **ui.png)
    with gr.Row():
        with gr.Column(scale=3):
            animation = gr.Image(label="Denoising: x_t (left) and the predicted x̂_0 (right)", **ui.gif)
        with gr.Column(scale=2):
            frame = gr.Image(label="Captured step", **ui.png)
            scrub = gr.Slider(0, 1, value=0, step=1, label="Captured step (sample first)", interactive=False)
    run_state = gr.State(None)
    progress_bar = gr.Progress()

    @gpu
    def sample(model, num_images, num_inference_steps, variance, seed, progress=progress_bar):
        """Stream grids of x_t while sampling; end with the samples x_0, the GIF and the scrubber."""
        pipe, _ = ui.pipeline(model)
        lg = logic()
        try:
            T = pipe.scheduler.config.num_train_timesteps
            request = lg.check_sample_request(num_images, num_inference_steps, variance, seed, T)
            for update in lg.sample_stream(pipe, *request):
                if isinstance(update, lg.SampleProgress):
                    desc = f"step {update.step}/{update.total}, t = {update.timestep}"
                    progress(update.step / update.total, desc=desc)
                    yield update.grid, gr.skip(), gr.skip(), gr.skip(), gr.skip()
                else:
                    last = len(update.timesteps) - 1
                    label = frame_label(update.timesteps, last)
                    slider = gr.Slider(0, last, value=last, step=1, interactive=True, label=label)
                    state = {"animation": str(update.animation), "timesteps": update.timesteps}
                    yield update.grid, str(update.animation), slider, lg.animation_frame(update.animation, last), state
        except gr.Error:
            raise
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def show_frame(index, state):
        if not state:
            return gr.skip(), gr.skip()
        image = logic().animation_frame(state["animation"], index)
        return image, gr.Slider(label=frame_label(state["timesteps"], int(index)))

    run.click(
        sample,
        [ui.picker, images_slider, steps_slider, variance_radio, seed],
        [grid, animation, scrub, frame, run_state],
        api_name="sample",
        show_progress_on=[animation],
        **ui.compute,
    )
    scrub.input(
        ui.user_errors(show_frame),
        [scrub, run_state],
        [frame, scrub],
        api_visibility="private",
        show_progress="hidden",
        concurrency_limit=None,
    )
    dice.click(lambda: random.randint(0, 2**31 - 1), None, seed, api_visibility="private", queue=False)


def frame_label(timesteps: list[int], index: int) -> str:
    return f"Captured step {index} of 0 … {len(timesteps) - 1}: x_t at t = {timesteps[index]}"


def forward_tab(ui: Wiring, tab) -> None:
    """x_0 from the test set or an upload, x_t at a chosen t with its rates, and the whole forward process as a GIF."""
    gr = ui.gr
    gr.Markdown(
        r"$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$,"
        r" $\epsilon \sim \mathcal N(0, I)$. Pick $x_0$ and $t$.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            index_slider = gr.Slider(0, 9999, value=0, step=1, label="Test-set image (index)")
            upload = gr.Image(
                label="…or upload an image (made grayscale and resized to the model's size)",
                type="pil",
                sources=["upload", "clipboard"],
                height=180,
            )
            t_slider = gr.Slider(0, 999, value=300, step=1, label="t")
            seed = seed_box(gr, "Noise seed (ε)")
            show = gr.Button("Show", variant="primary")
        with gr.Column(scale=2):
            with gr.Row():
                x0_image = gr.Image(label="x_0", height=260, **ui.png)
                xt_image = gr.Image(label="x_t", height=260, **ui.png)
                gif = gr.Image(label="x_t for t = 0 → T−1", height=260, **ui.gif)
            with gr.Row():
                signal = gr.Number(label="signal rate √ᾱ_t", interactive=False)
                noise = gr.Number(label="noise rate √(1−ᾱ_t)", interactive=False)

    @ui.user_errors
    def forward(model, image_index, image, t, seed):
        """x_0, x_t, the rates √ᾱ_t and √(1−ᾱ_t), and a GIF of the forward process with the same ε."""
        pipe, source = ui.pipeline(model)
        lg = logic()
        out = lg.forward_process(pipe.scheduler, lg.choose_x0(pipe, source, image_index, image), t, seed)
        return out.x0, out.x_t, out.signal_rate, out.noise_rate, str(out.animation)

    gr.on(
        [show.click, t_slider.release, index_slider.release, upload.change, seed.submit, tab.select],
        forward,
        [ui.picker, index_slider, upload, t_slider, seed],
        [x0_image, xt_image, signal, noise, gif],
        api_name="forward",
        **ui.compute,
    )


def schedule_tab(ui: Wiring, tab) -> None:
    """Plots of the schedule; one reverse step for a known x_0 (posterior vs model); the bound's terms."""
    gr = ui.gr
    with gr.Row():
        plot = {"x": "t", "y": "value", "color": "quantity"}
        rates = gr.LinePlot(label="rates", title="ᾱ_t and the signal / noise rates", **plot)
        variances = gr.LinePlot(label="variances", title="β_t and β̃_t", caption="β̃_t ≈ β_t except at small t", **plot)
        snr = gr.LinePlot(label="log10 SNR", title="log10 SNR_t = log10 ᾱ_t/(1−ᾱ_t)", **plot)
    gr.Markdown(
        r"**Posterior explorer.** Noise a test image to $x_t$, let the network predict $\hat x_0$,"
        r" and compare the true posterior mean $\tilde\mu_t(x_t, x_0)$ with the model's"
        r" $\mu_\theta(x_t) = \tilde\mu_t(x_t, \hat x_0)$.",
        latex_delimiters=LATEX,
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            index_slider = gr.Slider(0, 9999, value=0, step=1, label="Test-set image (index)")
            t_slider = gr.Slider(0, 999, value=200, step=1, label="t")
            variance_radio = gr.Radio(VARIANCE_CHOICES, value="fixed_small", label="Variance σ_t² of p_θ")
            seed = seed_box(gr, "Seed (ε and z)")
            with gr.Row():
                step_button = gr.Button("Posterior step", variant="primary")
                bound_button = gr.Button("Variational bound")
        with gr.Column(scale=3):
            images = []
            rows = (("x_0", "x_t", "x̂_0 (predicted)"), ("μ̃_t(x_t, x_0) (true)", "μ_θ(x_t) (model)", "x_{t−1} ~ p_θ"))
            for labels in rows:
                with gr.Row():
                    images += [gr.Image(label=label, height=200, min_width=160, **ui.png) for label in labels]
            with gr.Row():
                mean_gap = gr.Number(label="RMS(μ̃_t − μ_θ)", interactive=False)
                vb_term = gr.Number(label="L_{t−1} at this t (bits/dim)", interactive=False)
            curve = gr.LinePlot(
                x="t",
                y="log10 bits/dim",
                label="L_{t-1} by t",
                height=260,
                title="log10 of the bound's terms L_{t−1} for this image (L_0 at t = 0)",
            )
            with gr.Row():
                total = gr.Number(label="bound L (bits/dim, estimate)", interactive=False)
                prior = gr.Number(label="L_T (bits/dim)", interactive=False)
                decoder = gr.Number(label="L_0 (bits/dim)", interactive=False)

    @ui.user_errors
    def schedule(model):
        """Long tables (t, value, quantity) of β_t, ᾱ_t, √ᾱ_t, √(1−ᾱ_t), β̃_t and log10 SNR_t."""
        tables = logic().schedule_tables(ui.pipeline(model)[0].scheduler)
        return tables["rates"], tables["variances"], tables["snr"]

    @gpu
    @ui.user_errors
    def posterior(model, image_index, t, variance, seed):
        """x_0, x_t, x̂_0, μ̃_t, μ_θ, a draw of x_{t−1}; RMS(μ̃_t − μ_θ) and L_{t−1} in bits/dim."""
        pipe, source = ui.pipeline(model)
        lg = logic()
        out = lg.posterior_step(pipe, lg.choose_x0(pipe, source, image_index, None), t, variance, seed)
        pictures = (out.x0, out.x_t, out.pred_x0, out.posterior_mean, out.model_mean, out.x_prev)
        return *pictures, out.mean_gap, out.vb_term

    @gpu
    @ui.user_errors
    def bound(model, image_index, variance, seed):
        """L_{t−1} at 50 values of t (a plot) and the bound's total, L_T and L_0 in bits/dim."""
        pipe, source = ui.pipeline(model)
        lg = logic()
        out = lg.bound_terms(pipe, lg.choose_x0(pipe, source, image_index, None), variance, seed)
        return out.curve, out.total, out.prior, out.decoder

    gr.on([tab.select], schedule, ui.picker, [rates, variances, snr], api_name="schedule", **ui.compute)
    gr.on(
        [step_button.click, t_slider.release, index_slider.release],
        posterior,
        [ui.picker, index_slider, t_slider, variance_radio, seed],
        [*images, mean_gap, vb_term],
        api_name="posterior",
        **ui.compute,
    )
    bound_button.click(
        bound,
        [ui.picker, index_slider, variance_radio, seed],
        [curve, total, prior, decoder],
        api_name="bound",
        **ui.compute,
    )


def main() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    # torch and diffusers load while the server starts, so the first click does not wait for them (no model loads)
    threading.Thread(target=logic, name="ddpm-hf-import", daemon=True).start()
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    build_demo().launch(theme=theme, css=CSS, footer_links=["api", "settings"])


if __name__ == "__main__":
    main()
