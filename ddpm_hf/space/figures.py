"""Two figures of Ho et al. 2020, live on any model: samples that share one x_t (fig. 7) and interpolation of two
pictures in the noised space (fig. 8, §4.3).

- Figure 7: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (eq. 4) is drawn once, and n reverse DDPM chains run from that same x_t, each
  with its own noise (seed + i): what the samples share is what survives the noise at t. The network's x̂_0 from that
  x_t (eq. 15) is what they scatter around.
- Figure 8: two pictures are noised to t with the same ε, x_t and x'_t, mixed as x̄_t = (1 − λ) x_t + λ x'_t for a
  row of λ from 0 to 1, and each mix is brought back by the reverse chain with the same noise (``run_chain`` with
  ``same_noise``), so the row differs only by λ; its two ends are the pictures brought back from their own x_t. With
  one ε the mix is itself a draw of q(x̄_t | (1 − λ) x_0 + λ x'_0), noise of the variance the network was trained on
  (two independent ε would shrink it by (1 − λ)² + λ²).

ε is the first draw of the generator seeded ``seed`` (``seed_generators``), which is what chain 0 of ``run_chain``
draws for its own start: figure 7's chain 0 is then the SDEdit chain 0 of the same seed. Both figures run the strided
DDPM chain of SDEdit (``limits.SDEDIT_STEPS`` steps; below one stride, every timestep) with σ_t² = β̃_t, cut like it
to the model's measured cost on a CPU (``costs.fit``); a class-conditional model runs unconditionally (∅).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from ..guidance import forward
from ..sampling import initial_noise, seed_generators
from ..validate import check_float, check_int
from . import chains, costs, images, limits, views
from .components import user_errors
from .handlers import PROGRESS
from .outputs import ChainOutputs, stream
from .registry import Model, Registry

FIGURE_CHAINS = 4  # figure 7's chains by default
SHARED_T = 400  # figure 7's: on models/ddpm-mnist 8 chains from test image 0 all give a 7, more varied than at 250
# figure 8's: on models/ddpm-mnist test images 0 and 1 (seed 0) give 7, 7, a 7-2 hybrid, 2, 2; from t = 400 the row
# passes through other digits (7, 4, 1, 2, 2) and at 500 the 7 comes back as a 4. The paper mixes faces at t = 500.
MIX_T = 250
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # figure 8's row; the chosen λ joins it
INDEX_B = 1  # figure 8's second test image by default


def noise_once(model: Model, x0: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Ho et al. 2020, eq. 4) for each picture of the batch ``x0`` (B, C, H, W), with
    one ε for all: the first draw of the generator seeded ``seed``."""
    noise = initial_noise(model.pipe.unet, 1, seed_generators(seed, 1))
    x0 = x0.to(noise.device, noise.dtype)
    timesteps = torch.full((x0.shape[0],), t, device=noise.device)
    return model.scheduler.add_noise(x0, noise.expand_as(x0), timesteps)


def predict_x0(model: Model, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """The network's x̂_0 = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t (Ho et al. 2020, eq. 15), clipped to [-1, 1]."""
    unet = model.pipe.unet
    with torch.inference_mode():
        output = forward(unet, x_t.to(unet.device, unet.dtype), t).float()
        return model.scheduler.p_mean_variance(output, x_t.float(), t, t - 1)[3]


@dataclass
class FigureRun:
    """A figure's chains: where they start (x_t, or the row of x̄_t), the streamed run (``chains.run_chain``; its
    ``Finished.result`` holds the samples), and what was cut to fit the model's cost ("" if nothing)."""

    start: torch.Tensor
    request: chains.ChainRequest
    updates: Iterator[chains.Progress | chains.Finished]
    note: str = ""


def sized_request(
    model: Model, num_images: int, t: int, seed: int, row: bool = False
) -> tuple[chains.ChainRequest, str]:
    """The chains' request from ``t``, cut to the model's measured cost as SDEdit's is (``handlers.class_request``,
    ``costs.fit_chain``: fewer steps, or fewer images unless they are a ``row``, shown as one), and the note of what was cut
    ("" if nothing)."""
    T = model.scheduler.config.num_train_timesteps
    sized = costs.fit_chain(model.cost, num_images, "ddpm", limits.sdedit_steps(t, T), t, T, shrink_images=not row)
    columns = sized.num_images if row else None
    request = chains.ChainRequest(
        sized.num_images, "ddpm", sized.num_inference_steps, limits.DEFAULT_VARIANCE, seed, columns=columns
    )
    return request, sized.note


def shared_xt_run(model: Model, x0: torch.Tensor, t: int, num_images: int, seed: int) -> FigureRun:
    """Figure 7's chains: ``num_images`` (or fewer, to fit the model's cost) reverse chains from one
    x_t = ``noise_once(x0)`` (1, C, H, W), chain i with the noise of seed + i."""
    request, note = sized_request(model, num_images, t, seed)
    x_t = noise_once(model, x0, t, seed)
    run = chains.run_chain(model, request, start_timestep=t, x_t=x_t.expand(request.num_images, -1, -1, -1))
    return FigureRun(x_t, request, run, note)


def lambda_row(mix: float) -> tuple[float, ...]:
    """Figure 8's λ, left to right: ``LAMBDAS`` and the chosen ``mix``."""
    return tuple(sorted({*LAMBDAS, mix}))


def mixed_starts(model: Model, x0_a: torch.Tensor, x0_b: torch.Tensor, t: int, lambdas, seed: int) -> torch.Tensor:
    """x̄_t = (1 − λ) x_t + λ x'_t (Ho et al. 2020, §4.3) for each λ, x_t and x'_t the two pictures (1, C, H, W) noised
    to ``t`` with the same ε (``noise_once``); λ = 0 and 1 give x_t and x'_t exactly.

    Returns:
        (len(lambdas), C, H, W).
    """
    x_t_a, x_t_b = noise_once(model, torch.cat([x0_a, x0_b]), t, seed)
    lam = torch.tensor(lambdas, dtype=x_t_a.dtype, device=x_t_a.device).view(-1, 1, 1, 1)
    return (1 - lam) * x_t_a + lam * x_t_b


def interpolation_run(model: Model, x0_a: torch.Tensor, x0_b: torch.Tensor, t: int, lambdas, seed: int) -> FigureRun:
    """Figure 8's chains: one per λ from ``mixed_starts`` (the row x̄_t), all with the noise of ``seed``, shown as one
    row (kept whole; fewer steps where the model's cost asks)."""
    request, note = sized_request(model, len(lambdas), t, seed, row=True)
    starts = mixed_starts(model, x0_a, x0_b, t, lambdas, seed)
    run = chains.run_chain(model, request, start_timestep=t, x_t=starts, same_noise=True)
    return FigureRun(starts, request, run, note)


def either_picture(model: Model, which: str, index, upload: Image.Image | None) -> tuple[torch.Tensor, str]:
    """``images.choose_x0`` for the picture ``which`` ("first", "second"), naming it in a refusal and in the note."""
    try:
        x0, note = images.choose_x0(model, index, upload)
    except ValueError as e:
        raise ValueError(f"{which} picture: {e}") from None
    return x0, f"{which} picture {note}" if note else ""


def notes(*lines: str) -> str:
    """The note under a figure's pictures: what was done to them and to the request, or that nothing was."""
    return "; ".join(filter(None, lines)) or "used as given"


class FigureHandlers:
    """The Paper figures tab's events, over the app's models (the ``Registry`` its ``Handlers`` hold). Each handler's
    parameter names are its API parameter names; ``ValueError`` messages reach the user as ``gr.Error``."""

    def __init__(self, models: Registry):
        self.models = models

    @user_errors
    def shared_xt(
        self, model, image_index, image=None, t=SHARED_T, num_images=FIGURE_CHAINS, seed=0, progress=PROGRESS
    ):
        """Figure 7: the picture (test image ``image_index``, or ``image`` when given) noised once to x_t, and
        ``num_images`` reverse chains from that one x_t, each with its own noise.

        Yields:
            x_0, x_t, the network's x̂_0 from x_t, a note on the picture, and ``ChainOutputs`` (the samples).
        """
        m = self.models.get(model)
        t = views.check_t(t, m.scheduler)
        n = check_int("Number of chains", num_images, 1, limits.MAX_IMAGES)
        x0, note = images.choose_x0(m, image_index, image)
        run = shared_xt_run(m, x0, t, n, seed)
        x_t, n, note = run.start, run.request.num_images, notes(note, run.note)
        shown = images.picture(x0), images.picture(x_t), images.picture(predict_x0(m, x_t, t)), note
        yield *shown, *ChainOutputs.unchanged()
        done = f"{n} chain{'s' * (n != 1)} from one xₜ at t = {t}: what the samples share survived the noise."
        for outputs in stream(run.updates, progress, start_timestep=t, done_line=done):
            yield *shown, *outputs  # every update carries them: a client's result is the last update

    @user_errors
    def interpolate(
        self, model, index_a, index_b=INDEX_B, image_a=None, image_b=None, t=MIX_T, mix=0.5, seed=0, progress=PROGRESS
    ):
        """Figure 8: two pictures (test images ``index_a`` / ``index_b``, or the uploads ``image_a`` / ``image_b``)
        noised to t with one ε, mixed in the noised space for the λ of ``lambda_row(mix)``, and each mix brought back
        by the reverse chain with the same noise.

        Yields:
            The two pictures x_0 and x'_0, the row of mixed starts x̄_t, a note on the pictures, and ``ChainOutputs``
            (the row brought back, λ from 0 to 1 left to right).
        """
        m = self.models.get(model)
        t = views.check_t(t, m.scheduler)
        lambdas = lambda_row(check_float("λ", mix, 0, 1))
        x0_a, note_a = either_picture(m, "first", index_a, image_a)
        x0_b, note_b = either_picture(m, "second", index_b, image_b)
        run = interpolation_run(m, x0_a, x0_b, t, lambdas, seed)
        row = images.picture(run.start, images.grid_scale(m.size), nrow=len(lambdas))
        shown = images.picture(x0_a), images.picture(x0_b), row, notes(note_a, note_b, run.note)
        yield *shown, *ChainOutputs.unchanged()
        done = f"λ = {', '.join(f'{v:g}' for v in lambdas)}, left to right; the ends are each picture brought back."
        for outputs in stream(run.updates, progress, start_timestep=t, done_line=done):
            yield *shown, *outputs
