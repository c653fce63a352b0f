"""The Space's event handlers: validate with ``ddpm_hf.space``, compute, and return what the components show.

Each handler's parameter names are its API parameter names. ``ValueError`` messages reach the user as ``gr.Error``.
"""

import random
import threading
import time

import gradio as gr
from PIL import Image

from . import chains, costs, images, limits, paper, texts, views
from .components import user_errors
from .outputs import ChainOutputs, finished_outputs, frame_info, stream
from .registry import Registry

PROGRESS = gr.Progress()  # the default that tells gradio to pass a progress tracker


class Handlers:
    """Every event of the app, over one set of models; ``first`` is the model shown on arrival."""

    def __init__(self, models: Registry):
        self.models = models
        self.first = next(iter(models.sources), None)
        self._showcase: dict = {}
        self._showcase_progress: chains.Progress | None = None  # the start-up run as it goes
        self._showcase_ready = threading.Event()

    @user_errors
    def sample(
        self,
        model,
        num_images,
        sampler,
        num_inference_steps,
        variance,
        seed,
        class_name=limits.ANY_CLASS,
        guidance_scale=None,
        progress=PROGRESS,
    ):
        """Stream grids of x_t while sampling; end with the samples x_0, the denoising GIF and the scrubber. A
        class-conditional model draws ``class_name`` ("any", "all classes (one row each)" or a class) with
        classifier-free guidance ``guidance_scale`` (None: the model's default); other models ignore both."""
        m = self.models.get(model)
        request, capped = class_request(
            m, class_name, guidance_scale, num_images, sampler, num_inference_steps, variance, seed
        )
        hint = texts.few_steps_hint(texts.Subject.of(m), sampler, request.num_inference_steps)
        start = time.perf_counter()
        yield from stream(chains.run_chain(m, request), progress, done_line=" ".join(filter(None, (capped, hint))))
        forwards = request.num_images * (2 if request.guidance_scale not in (None, 0, 1) else 1)
        m.ran(forwards, request.num_inference_steps, time.perf_counter() - start)

    def pick_seed(self, randomize, seed, *checked):
        """The seed a run will use, shown in its box so that it can be replayed: a new one when ``randomize`` is on,
        else the box's (a new one too when the box is empty: ``components.Seed``).

        Args:
            randomize: the "New seed each run" choice (False where there is none).
            seed: the box's seed.
            checked: the run's other number inputs, passed only so that their components check them first: a bad
                value is refused with its message before anything runs.
        """
        return random.randint(*limits.SEED_RANGE) if randomize else seed

    def example_chosen(self) -> tuple:
        """An example was chosen: its seed is replayed from now on ("New seed each run" off), and the status line
        says so."""
        return False, texts.example_chosen(limits.EXAMPLE_SEED)

    def seed_typed(self, payload):
        """A seed typed in the box is meant to be replayed: "New seed each run" goes off; an emptied box (a new seed
        each run) leaves it as it is."""
        return gr.skip() if payload in (None, "") else False

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
        """What Stop leaves: a line saying where the chain stopped, and no panel of an earlier run; when no chain has
        started since the result shown (``state`` holds a finished run, or nothing), nothing changes.

        Returns:
            ``ChainOutputs``: the grid as it is, the status line, the rest cleared; or all unchanged.
        """
        if not state or "step" not in state:
            return ChainOutputs.unchanged()
        of = f" of {state['total']}" if state.get("total") else ""
        where = f" at step {state['step']}{of} (t = {state['timestep']})"
        line = f"**Stopped{where}.** The grid shows the chain where it stopped; press the button again for a new run."
        return ChainOutputs.cleared(gr.skip())._replace(status=line)

    @user_errors
    def sdedit(
        self, model, image, t, num_images, seed, class_name=limits.ANY_CLASS, guidance_scale=None, progress=PROGRESS
    ):
        """Noise the picture to x_t ~ q(x_t | x_0), then run the DDPM chain back from t (SDEdit); a class-conditional
        model steers the way back toward ``class_name`` with guidance ``guidance_scale``."""
        m = self.models.get(model)
        one = texts.Subject.of(m).one
        x0, note = images.to_x0(sketch_of(image, one), m.size, m.channels, white_on_black=m.grey)
        if float(x0.max() - x0.min()) < 0.1:
            raise ValueError(f"the drawing is empty: draw a {one} in white on the black canvas, or upload a picture")
        t = views.check_t(t, m.scheduler)
        steps = limits.sdedit_steps(t, m.scheduler.config.num_train_timesteps)
        request, capped = class_request(
            m, class_name, guidance_scale, num_images, "ddpm", steps, limits.DEFAULT_VARIANCE, seed, start=t
        )
        note = "; ".join(filter(None, (note, capped))) or "used as drawn"
        shown = images.picture(x0), views.forward_process(m.scheduler, x0, t, seed).x_t, note
        yield *shown, *ChainOutputs.unchanged()
        for outputs in stream(chains.run_chain(m, request, x0, start_timestep=t), progress, start_timestep=t):
            yield *shown, *outputs  # every update carries them: a client's result is the last update

    @user_errors
    def inpaint(self, model, image, num_images, seed, progress=PROGRESS):
        """Regenerate the painted part of the picture; the rest is kept by a fresh q(x_t | x_0) draw at each step."""
        m = self.models.get(model)
        if image is None or image.get("background") is None:
            raise ValueError("load a test image or upload one, then paint over the part to regenerate")
        x0, note = images.to_x0(image["background"], m.size, m.channels, white_on_black=m.grey)
        painted = images.mask_of(image["layers"][0] if image.get("layers") else None, m.size)
        if painted.sum() == 0:
            raise ValueError("paint over the part of the picture to regenerate (the brush tool), then press Inpaint")
        request, capped = class_request(
            m, None, None, num_images, "ddpm", limits.INPAINT_STEPS, limits.DEFAULT_VARIANCE, seed
        )
        note = "; ".join(filter(None, (note, capped))) or "used as given"
        shown = images.picture(x0 * (1 - painted)), note  # the part to regenerate shows grey
        yield *shown, *ChainOutputs.unchanged()
        for outputs in stream(chains.run_chain(m, request, x0, keep=1 - painted), progress):
            yield *shown, *outputs

    @user_errors
    def test_picture(self, model, image_index) -> tuple[dict, str]:
        """Test image ``image_index`` of the model's dataset as the editor's background, 8× upscaled, and an empty
        note (the note of an earlier picture no longer holds)."""
        m = self.models.get(model)
        picture = images.picture(images.choose_x0(m, image_index, None)[0], scale=8, padding=0).convert("RGB")
        return {"background": picture, "layers": [], "composite": picture}, ""

    def first_picture(self, model, image_index) -> tuple:
        """The editor's picture on arrival and for a newly chosen model: ``test_picture`` where the model has test
        images, else an empty editor (never an error: the button says why)."""
        try:
            return self.test_picture(model, image_index)
        except ValueError:
            return None, ""

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
        return frame, gr.Slider(info=frame_info(state["labels"], int(index)))

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
    def posterior(self, model, image_index, t, variance, seed, image=None):
        """x_0 (test image ``image_index``, or the uploaded ``image``), x_t, x̂_0, μ̃_t, μ_θ and a draw of x_{t−1};
        RMS(μ̃_t − μ_θ) and L_{t−1} in bits/dim."""
        m = self.models.get(model)
        out = views.posterior_step(m, images.choose_x0(m, image_index, image)[0], t, variance, seed)
        return *out.pictures, out.readout(int(t)), out.mean_gap, out.vb_term

    @user_errors
    def bound(self, model, image_index, variance, seed, image=None):
        """The bound's terms by t (a plot), and L, L_T, L_0 in bits/dim, from one evaluation, for test image
        ``image_index`` or the uploaded ``image``."""
        m = self.models.get(model)
        out = views.bound_terms(m, images.choose_x0(m, image_index, image)[0], variance, seed)
        return out.curve, out.readout(), out.total, out.prior, out.decoder

    def describe(self, model):
        """One line on the chosen model (loading it: first a line saying it is downloading, for one of the paper's
        models), or why it cannot be used; never an error pop-up."""
        if downloading := self.downloading(model):
            yield downloading
        try:
            yield self.models.get(model).describe()
        except ValueError as e:
            yield f"**{model or 'no model'}** cannot be used: {e}"

    def downloading(self, model) -> str:
        """ "Loading the paper's CIFAR-10 model from the Hub (143 MB the first time)…" while one of the paper's models
        is not loaded yet; "" otherwise."""
        known = paper.BY_REPO.get(model)
        if (
            known is None
            or model not in self.models.sources
            or model in self.models.refused
            or self.models.loaded(model)
        ):
            return ""
        return f"**{model}**: {known.downloading()}"

    def picker(self):
        """The model picker's choices as they are now: the paper's models marked once the Hub has not answered."""
        return gr.Dropdown(choices=self.models.choices())

    def request_defaults(self, model):
        """The Sample tab's images, sampler and steps for ``model``: its default request, sized to its cost."""
        m = self._loaded(model)
        if m is None:
            return gr.skip(), gr.skip(), gr.skip()
        sized = m.default_request()
        return sized.num_images, sized.sampler, sized.num_inference_steps

    def model_texts(self, model) -> tuple:
        """The words that depend on what ``model`` draws: the Sample tab's explanation, the Your digit tab's
        instructions, that tab's name and its canvas's label."""
        subject = texts.Subject.of(self._loaded(model))
        name = texts.drawing_label(subject)
        return (
            texts.how_it_works(subject),
            texts.draw_and_denoise(subject),
            gr.Tab(label=name),
            gr.ImageEditor(label=name),
        )

    def model_chosen(self, model):
        """The Sample tab for a newly chosen model: its start-up result where it has one, else no result of the other
        model, and a line saying what Sample does.

        Yields:
            ``ChainOutputs`` (first a line saying that one of the paper's models is downloading).
        """
        done = self._showcase.get(model)
        if done:
            yield finished_outputs(done)
            return
        if downloading := self.downloading(model):
            yield ChainOutputs.cleared()._replace(status=downloading)
        line = texts.ready_to_sample(model, texts.Subject.of(self._loaded(model)))
        yield ChainOutputs.cleared()._replace(status=line)

    def cleared(self, pictures: int = 0) -> tuple:
        """A tab's results made with another model: an empty note, ``pictures`` Nones and ``ChainOutputs`` cleared."""
        return "", *(None,) * pictures, *ChainOutputs.cleared()

    def _loaded(self, model):
        """``model`` loaded, or None when it cannot be (the model line says why)."""
        try:
            return self.models.get(model)
        except ValueError:
            return None

    def class_controls(self, model, default=limits.ALL_CLASSES):
        """The class picker (at ``default``) and guidance slider for ``model``: shown with its classes and default w
        when it is class-conditional, hidden otherwise (or when it cannot load)."""
        try:
            m = self.models.get(model)
        except ValueError:
            return gr.Group(visible=False), gr.skip(), gr.skip()
        if not m.class_names:
            return gr.Group(visible=False), gr.Dropdown(value=limits.ANY_CLASS), gr.skip()
        choices = [limits.ALL_CLASSES, limits.ANY_CLASS, *m.class_names]
        return gr.Group(visible=True), gr.Dropdown(choices, value=default), gr.Slider(value=m.guidance_scale)

    def timestep_range(self, model):
        """A t slider's range for ``model``: up to T − 1 of its schedule (loading it); unchanged if it cannot load."""
        try:
            return gr.Slider(maximum=self.models.get(model).scheduler.config.num_train_timesteps - 1)
        except ValueError:
            return gr.skip()

    def prepare_showcase(self) -> None:
        """Load the first model and sample the default request once, so the first page shows a result (a
        class-conditional model: every class, one row each); its progress is shown to visitors who arrive before it
        is done."""
        try:
            model = self.models.get(self.first)
            request, _ = class_request(
                model,
                limits.ALL_CLASSES,
                None,
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


def class_request(
    m, class_name, guidance_scale, num_images, sampler, steps, variance, seed, start=None
) -> tuple[chains.ChainRequest, str]:
    """A ``ChainRequest`` with the classes and guidance of ``class_name`` / ``guidance_scale`` on model ``m``, sized to
    the model's cost (``costs.fit``); and what was capped, if anything ("" when nothing was).

    ``start``: SDEdit's t, from which a chain of ``steps`` strided steps runs only its last ``steps · t / T``.
    """
    labels, n, columns = m.class_request(class_name, num_images)
    w = (m.guidance_scale if guidance_scale is None else float(guidance_scale)) if labels is not None else None
    T = m.scheduler.config.num_train_timesteps
    forwards = 2 if labels is not None and w not in (0, 1) else 1
    sized = costs.fit_chain(m.cost, n, sampler, steps, start, T, forwards, shrink_images=columns is None)
    labels = labels[: sized.num_images] if labels is not None else None
    request = chains.ChainRequest(
        sized.num_images, sampler, sized.num_inference_steps, variance, seed, labels, w, columns
    )
    return request, sized.note


def sketch_of(image, one: str = "digit") -> Image.Image:
    """The drawing on the canvas (``one``: what to draw, for the message when there is none)."""
    if isinstance(image, dict):
        image = image.get("composite")
    if image is None:
        raise ValueError(f"draw a {one} on the canvas or upload a picture first")
    return image
