"""The Space's event handlers: validate with ``ddpm_hf.space``, compute, and return what the components show.

Each handler's parameter names are its API parameter names. ``ValueError`` messages reach the user as ``gr.Error``.
"""

import random
import threading
import time
from typing import Any, NamedTuple

import gradio as gr
from PIL import Image

from . import chains, images, limits, views
from .components import user_errors
from .registry import Registry

PROGRESS = gr.Progress()  # the default that tells gradio to pass a progress tracker


class ChainOutputs(NamedTuple):
    """What a chain's events show, in this order: the result grid, the denoising GIF, the scrubber over its frames,
    the frame chosen with it, the status line ("step k of n, t = …; about 9 s left", or where Stop stopped it), and
    the run's state (how far it came, for Stop; the GIF's frames, for the scrubber). The app's components and each
    update of a handler take this shape."""

    grid: Any
    animation: Any
    scrubber: Any
    frame: Any
    status: Any
    state: Any

    @classmethod
    def unchanged(cls) -> "ChainOutputs":
        return cls(*(gr.skip(),) * len(cls._fields))

    @classmethod
    def cleared(cls, grid=None) -> "ChainOutputs":
        """No result of an earlier run (the grid given, or none) and no status line."""
        return cls(grid, None, idle_scrubber(), None, "", None)


class Handlers:
    """Every event of the app, over one set of models; ``first`` is the model shown on arrival."""

    def __init__(self, models: Registry):
        self.models = models
        self.first = next(iter(models.sources), None)
        self._showcase: dict = {}
        self._showcase_progress: chains.Progress | None = None  # the start-up run as it goes
        self._showcase_ready = threading.Event()

    @user_errors
    def sample(self, model, num_images, sampler, num_inference_steps, variance, seed, progress=PROGRESS):
        """Stream grids of x_t while sampling; end with the samples x_0, the denoising GIF and the scrubber."""
        request = chains.ChainRequest(num_images, sampler, num_inference_steps, variance, seed)
        yield from stream(chains.run_chain(self.models.get(model), request), progress)

    def pick_seed(self, randomize, seed):
        """A new seed when ``randomize`` is on (shown in the box, so it can be replayed), else the box's."""
        return random.randint(*limits.SEED_RANGE) if randomize else seed

    @user_errors
    def compare(self, model, num_images, sampler_a, steps_a, sampler_b, steps_b, seed):
        """Two samplers from the same x_T: the first grid, then both.

        Yields:
            The two result grids (the second skipped until it is done).
        """
        m = self.models.get(model)
        grids = []
        for sampler, steps in ((sampler_a, steps_a), (sampler_b, steps_b)):
            request = chains.ChainRequest(num_images, sampler, steps, limits.DEFAULT_VARIANCE, seed)
            *_, done = chains.run_chain(m, request)
            grids.append(done.grid)
            yield grids[0], grids[1] if len(grids) > 1 else gr.skip()

    def stopped(self, state):
        """What Stop leaves: a line saying where the chain stopped, and no panel of an earlier run.

        Returns:
            ``ChainOutputs``: the grid as it is, the status line, the rest cleared.
        """
        where = ""
        if state and "step" in state:
            of = f" of {state['total']}" if state.get("total") else ""
            where = f" at step {state['step']}{of} (t = {state['timestep']})"
        line = f"**Stopped{where}.** The grid shows the chain where it stopped; press the button again for a new run."
        return ChainOutputs.cleared(gr.skip())._replace(status=line)

    @user_errors
    def sdedit(self, model, image, t, num_images, seed, progress=PROGRESS):
        """Noise the picture to x_t ~ q(x_t | x_0), then run the DDPM chain back from t (SDEdit)."""
        m = self.models.get(model)
        x0, note = images.to_x0(sketch_of(image), m.size, m.channels, white_on_black=m.dataset is not None)
        if float(x0.max() - x0.min()) < 0.1:
            raise ValueError("the drawing is empty: draw a digit in white on the black canvas, or upload a picture")
        t = views.check_t(t, m.scheduler)
        T = m.scheduler.config.num_train_timesteps
        steps = limits.SDEDIT_STEPS if t >= T // limits.SDEDIT_STEPS else T  # below one stride: every timestep
        request = chains.ChainRequest(num_images, "ddpm", steps, limits.DEFAULT_VARIANCE, seed)
        shown = images.picture(x0), views.forward_process(m.scheduler, x0, t, seed).x_t, note or "used as drawn"
        yield *shown, *ChainOutputs.unchanged()
        for outputs in stream(chains.run_chain(m, request, x0, start_timestep=t), progress, start_timestep=t):
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
        request = chains.ChainRequest(num_images, "ddpm", limits.INPAINT_STEPS, limits.DEFAULT_VARIANCE, seed)
        shown = images.picture(x0 * (1 - painted)), note or "used as given"  # the part to regenerate shows grey
        yield *shown, *ChainOutputs.unchanged()
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

    def digit_upload(self, payload):
        """A picture given to the Your digit tab: onto the canvas when it is a readable image; otherwise cleared, with
        the Forward tab's message in the note and every output of an earlier run cleared.

        Returns:
            The canvas, the upload box, the note, x_0, x_t and ``ChainOutputs``.
        """
        cleared = (None, None, *ChainOutputs.cleared())
        try:
            images.check_upload(payload["path"])
            with Image.open(payload["path"]) as picture:
                picture = picture.convert("RGBA")
        except (ValueError, KeyError, TypeError, OSError) as e:
            message = str(e) if isinstance(e, ValueError) else images.NOT_AN_IMAGE
            gr.Warning(message)
            return gr.skip(), None, message, *cleared
        canvas = {"background": picture, "layers": [], "composite": picture}
        return canvas, None, "uploaded: press the button", *cleared

    def picture_refused(self, pictures: int = 0) -> tuple:
        """A file put on an image editor that the browser cannot read as an image (the page's script keeps it from the
        editor, ``layout.JS``): the message of a bad upload, as a warning and in the note, and no earlier result.

        Args:
            pictures: how many pictures the tab shows besides ``ChainOutputs`` (cleared too).

        Returns:
            The note, ``pictures`` Nones and ``ChainOutputs`` cleared.
        """
        gr.Warning(images.NOT_AN_IMAGE)
        return images.NOT_AN_IMAGE, *(None,) * pictures, *ChainOutputs.cleared()

    @user_errors
    def show_frame(self, index, state):
        """Frame ``index`` of the GIF in ``state``, and the scrubber's label for it."""
        if not state or "animation" not in state:
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

    def timestep_range(self, model):
        """A t slider's range for ``model``: up to T − 1 of its schedule (loading it); unchanged if it cannot load."""
        try:
            return gr.Slider(maximum=self.models.get(model).scheduler.config.num_train_timesteps - 1)
        except ValueError:
            return gr.skip()

    def prepare_showcase(self) -> None:
        """Load the first model and sample the default request once, so the first page shows a result; its progress
        is shown to visitors who arrive before it is done."""
        try:
            model = self.models.get(self.first)
            request = chains.ChainRequest(
                limits.DEFAULT_IMAGES,
                limits.DEFAULT_SAMPLER,
                limits.default_steps(limits.DEFAULT_SAMPLER),
                limits.DEFAULT_VARIANCE,
                limits.DEFAULT_SEED,
            )
            for update in chains.run_chain(model, request, rotate=False):
                if isinstance(update, chains.Progress):
                    self._showcase_progress = update
                else:
                    self._showcase[self.first] = update
        except ValueError:
            pass  # the model cannot load: the page says so in its model line
        finally:
            self._showcase_ready.set()

    @user_errors
    def arrival(self, model):
        """The start-up result for a new visitor; while it is being made, the chain as it goes and a line saying so.

        Yields:
            ``ChainOutputs``.
        """
        deadline, shown = time.monotonic() + 300, None
        if not self._showcase_ready.is_set():
            yield ChainOutputs.unchanged()._replace(status="Making the first result: loading the model…")
        while not self._showcase_ready.wait(timeout=0.5) and time.monotonic() < deadline:
            now = self._showcase_progress
            if now is not None and now is not shown:
                line = f"Making the first result: {limits.DEFAULT_IMAGES} images from pure noise, {now.describe()}."
                yield ChainOutputs.unchanged()._replace(grid=now.grid, status=line)
                shown = now
        done = self._showcase.get(model)
        yield finished_outputs(done) if done else ChainOutputs.unchanged()._replace(status="")


def stream(run, progress, start_timestep: int | None = None) -> ChainOutputs:
    """``ChainOutputs`` for each update of a chain run: the first clears the panels of an earlier run; the status line
    says how far the chain has come and the time left, the state the same for Stop."""
    first = True
    for update in run:
        if isinstance(update, chains.Progress):
            text = update.describe(start_timestep)
            if update.total:
                progress((update.step, update.total), desc=text, unit="steps")
            else:
                progress(1 - update.timestep / max(start_timestep or 1, 1), desc=text)
            state = {"step": update.step, "total": update.total, "timestep": update.timestep}
            panels = ChainOutputs.cleared() if first else ChainOutputs.unchanged()
            yield panels._replace(grid=update.grid, status=text, state=state)
            first = False
        else:
            yield finished_outputs(update)


def idle_scrubber() -> gr.Slider:
    return gr.Slider(0, 1, value=1, step=1, interactive=False, label="Frame (after the run)")


def finished_outputs(done: chains.Finished) -> ChainOutputs:
    last = len(done.labels) - 1
    slider = gr.Slider(0, last, value=last, step=1, interactive=True, label=f"Frame: {done.labels[last]}")
    state = {"animation": str(done.animation), "labels": done.labels}
    frame = images.animation_frame(done.animation, last)
    return ChainOutputs(done.grid, str(done.animation), slider, frame, "", state)


def sketch_of(image) -> Image.Image:
    if isinstance(image, dict):
        image = image.get("composite")
    if image is None:
        raise ValueError("draw a digit on the canvas or upload a picture first")
    return image
