"""The Space's event handlers: validate with ``ddpm_hf.space``, compute, and return what the components show.

Each handler's parameter names are its API parameter names. ``ValueError`` messages reach the user as ``gr.Error``.
"""

import threading

import gradio as gr
from PIL import Image

from . import chains, images, limits, views
from .components import user_errors
from .registry import Registry

PROGRESS = gr.Progress()  # the default that tells gradio to pass a progress tracker


class Handlers:
    """Every event of the app, over one set of models; ``first`` is the model shown on arrival."""

    def __init__(self, models: Registry):
        self.models = models
        self.first = next(iter(models.sources), None)
        self._showcase: dict = {}
        self._showcase_ready = threading.Event()

    @user_errors
    def sample(self, model, num_images, sampler, num_inference_steps, variance, seed, progress=PROGRESS):
        """Stream grids of x_t while sampling; end with the samples x_0, the denoising GIF and the scrubber."""
        m = self.models.get(model)
        request = chains.check_request(num_images, sampler, num_inference_steps, variance, seed, m)
        yield from stream(chains.run_chain(m, request), progress)

    @user_errors
    def sdedit(self, model, image, t, num_images, seed, progress=PROGRESS):
        """Noise the picture to x_t ~ q(x_t | x_0), then run the DDPM chain back from t (SDEdit)."""
        m = self.models.get(model)
        x0, note = images.to_x0(sketch_of(image), m.size, m.channels, white_on_black=m.dataset is not None)
        t = views.check_t(t, m.scheduler)
        request = chains.check_request(num_images, "ddpm", 100, limits.DEFAULT_VARIANCE, seed, m)
        shown = images.picture(x0), views.forward_process(m.scheduler, x0, t, seed).x_t, note or "used as drawn"
        yield *shown, *[gr.skip()] * 5
        for outputs in stream(chains.run_chain(m, request, x0, start_timestep=t), progress):
            yield *shown, *outputs  # every update carries them: a client's result is the last update

    @user_errors
    def inpaint(self, model, image, num_images, seed, progress=PROGRESS):
        """Regenerate the painted part of the picture; the rest is kept by a fresh q(x_t | x_0) draw at each step."""
        m = self.models.get(model)
        if image is None or image.get("background") is None:
            raise ValueError("load a test image or upload one, then paint over the part to regenerate")
        x0, note = images.to_x0(image["background"], m.size, m.channels, white_on_black=m.dataset is not None)
        painted = images.mask_of(image["layers"][0] if image.get("layers") else None, m.size)
        if painted.sum() == 0:
            raise ValueError("paint over the part of the picture to regenerate (the brush tool), then press Inpaint")
        request = chains.check_request(num_images, "ddpm", 250, limits.DEFAULT_VARIANCE, seed, m)
        shown = images.picture(x0 * (1 - painted)), note or "used as given"  # the part to regenerate shows grey
        yield *shown, *[gr.skip()] * 5
        for outputs in stream(chains.run_chain(m, request, x0, keep=1 - painted), progress):
            yield *shown, *outputs

    @user_errors
    def test_picture(self, model, image_index) -> dict:
        """Test image ``image_index`` of the model's dataset as the editor's background, 8× upscaled."""
        m = self.models.get(model)
        picture = images.picture(images.choose_x0(m, image_index, None)[0], scale=8, padding=0).convert("RGB")
        return {"background": picture, "layers": [], "composite": picture}

    def clear_bad_upload(self, payload):
        """Keep an upload that is a readable image (``gr.skip()``); clear one that is not (its events say why)."""
        try:
            images.check_upload(payload["path"])
        except (ValueError, KeyError, TypeError):
            return None
        return gr.skip()

    def show_frame(self, index, state):
        if not state:
            return gr.skip(), gr.skip()
        frame = images.animation_frame(state["animation"], index)
        return frame, gr.Slider(label=f"Frame: {state['labels'][int(index)]}")

    @user_errors
    def forward(self, model, image_index, image=None, t=300, seed=0):
        """x_0, x_t, a readout of the rates, the GIF of q(x_t | x_0) with the same ε, and the rates as numbers."""
        m = self.models.get(model)
        x0, _ = images.choose_x0(m, image_index, image)
        out = views.forward_process(m.scheduler, x0, t, seed)
        return out.x0, out.x_t, out.readout(int(t)), str(out.animation), out.signal_rate, out.noise_rate

    @user_errors
    def schedule(self, model):
        tables = views.schedule_tables(self.models.get(model).scheduler)
        return tables["rates"], tables["variances"], tables["snr"]

    @user_errors
    def posterior(self, model, image_index, t, variance, seed):
        """x_0, x_t, x̂_0, μ̃_t, μ_θ and a draw of x_{t−1}; RMS(μ̃_t − μ_θ) and L_{t−1} in bits/dim."""
        m = self.models.get(model)
        out = views.posterior_step(m, images.choose_x0(m, image_index, None)[0], t, variance, seed)
        return *out.pictures, out.readout(int(t)), out.mean_gap, out.vb_term

    @user_errors
    def bound(self, model, image_index, variance, seed):
        """The bound's terms by t (a plot), and L, L_T, L_0 in bits/dim, from one evaluation."""
        m = self.models.get(model)
        out = views.bound_terms(m, images.choose_x0(m, image_index, None)[0], variance, seed)
        return out.curve, out.readout(), out.total, out.prior, out.decoder

    def describe(self, model) -> str:
        """One line on the chosen model (loading it), or why it cannot be used; never an error pop-up."""
        try:
            return self.models.get(model).describe()
        except ValueError as e:
            return f"**{model or 'no model'}** cannot be used: {e}"

    def prepare_showcase(self) -> None:
        """Load the first model and sample the default request once, so the first page shows a result."""
        try:
            model = self.models.get(self.first)
            request = chains.check_request(
                limits.DEFAULT_IMAGES,
                limits.DEFAULT_SAMPLER,
                limits.default_steps(limits.DEFAULT_SAMPLER),
                limits.DEFAULT_VARIANCE,
                limits.DEFAULT_SEED,
                model,
            )
            self._showcase[self.first] = chains.showcase(model, request)
        except ValueError:
            pass  # the model cannot load: the page says so in its model line
        finally:
            self._showcase_ready.set()

    def arrival(self, model):
        self._showcase_ready.wait(timeout=120)
        done = self._showcase.get(model)
        return finished_outputs(done) if done else (gr.skip(),) * 5


def stream(run, progress) -> tuple:
    """Outputs (grid, GIF, scrubber, frame, state) for each update of a chain run."""
    for update in run:
        if isinstance(update, chains.Progress):
            progress(None, desc=f"step {update.step}, t = {update.timestep}")
            yield update.grid, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        else:
            yield finished_outputs(update)


def finished_outputs(done: chains.Finished) -> tuple:
    last = len(done.labels) - 1
    slider = gr.Slider(0, last, value=last, step=1, interactive=True, label=f"Frame: {done.labels[last]}")
    state = {"animation": str(done.animation), "labels": done.labels}
    return done.grid, str(done.animation), slider, images.animation_frame(done.animation, last), state


def sketch_of(image) -> Image.Image:
    if isinstance(image, dict):
        image = image.get("composite")
    if image is None:
        raise ValueError("draw a digit on the canvas or upload a picture first")
    return image
