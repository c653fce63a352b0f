"""Choices and limits of the Space's requests, each written once."""

MAX_IMAGES = 16
STEP_RANGE = (1, 1000)
SEED_RANGE = (0, 2**31 - 1)
DEFAULT_VARIANCE = "fixed_small"  # σ_t² = β̃_t, the paper's choice
VARIANCE_LABELS = {"fixed_small": "β̃ₜ (fixed_small)", "fixed_large": "βₜ (fixed_large)"}
# What the visitor is looking at, and its default step count. The defaults come from `python -m ddpm_hf.evaluate`
# on models/ddpm-mnist (README, "Evaluation"; N = 1000): the paper's chain at 50 steps, classifier-FID 1.96× its
# real floor; the SDE form of DPM-Solver++ at 20, 1.52× in 2.3× less time; DPM-Solver++ at 20, 2.60×. The
# deterministic solvers stop improving early (on the stage-2 weights: DPM-Solver++ 2.4× from 10 steps on).
SAMPLER_INFO = {
    "ddpm": ("DDPM: the paper's chain", 50),
    "sde-dpm++": ("DPM-Solver++ SDE: fast, stochastic", 20),
    "dpm++": ("DPM-Solver++: fast, deterministic", 20),
    "ddim": ("DDIM, η = 0: deterministic", 50),
    "ddim-eta1": ("DDIM, η = 1: stochastic", 50),
}
SAMPLER_HELP = "Every sampler runs the same trained network; DDPM is the paper's chain, the others need fewer steps."
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLER_INFO)  # the dropdown's order
DEFAULT_SAMPLER = "ddpm"
DEFAULT_IMAGES = 16
DEFAULT_SEED = 0
ANIMATION_FRAMES = 30  # captured steps in a denoising GIF (plus the starting x)
PREVIEWS = 20  # streamed grids per run
BOUND_POINTS = 50  # timesteps of the bound's stratified estimate (and its plotted curve)
MAX_UPLOAD_BYTES = 5 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096


def default_steps(sampler: str) -> int:
    return SAMPLER_INFO.get(sampler, ("", 50))[1]
