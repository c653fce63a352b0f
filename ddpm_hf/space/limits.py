"""Choices and limits of the Space's requests, each written once."""

MAX_IMAGES = 16
STEP_RANGE = (1, 1000)
SEED_RANGE = (0, 2**31 - 1)
DEFAULT_VARIANCE = "fixed_small"  # σ_t² = β̃_t, the paper's choice
VARIANCE_LABELS = {  # announced by meaning (the API takes the key)
    "fixed_small": "β̃ₜ: the true posterior's variance",
    "fixed_large": "βₜ: the forward step's variance",
}
# What the visitor is looking at, and its default step count: the step counts `python -m ddpm_hf.evaluate` compares
# on models/ddpm-mnist (its card has the sweep). The paper's chain is the default, since showing it is the app's
# purpose; the SDE form of DPM-Solver++ at 20 steps scores a better classifier-FID in less time.
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
# Class-conditional models: the class choices besides the class names, and the guidance slider's range.
ANY_CLASS, ALL_CLASSES = "any", "all classes (one row each)"
GUIDANCE_RANGE = (0.0, 8.0)
GUIDANCE_HELP = (
    "How hard to steer toward the class: 0 ignores it, 1 is the model's plain guess, higher is more typical"
)
DEFAULT_SEED = 0
SDEDIT_STEPS = 100  # the strided DDPM chain of Your digit (a small t runs every timestep below it)
INPAINT_STEPS = 250  # the strided DDPM chain of Inpaint
# Your digit's default t, and where the digit is forgotten: on models/ddpm-mnist a drawn 7 comes back as a 7 in 8 of 8
# chains from t = 100 to 300 (the style varying more with t), 5 of 8 at t = 400, 2 of 8 at t = 500.
DIGIT_T, FORGETS_AT = 250, 400
DIGIT_EXAMPLES = (100, DIGIT_T, FORGETS_AT, 600)  # t from the digit kept to the digit forgotten
DIGIT_T_HELP = f"below ~{FORGETS_AT}: your drawing, restyled; above: the model's own"
FORWARD_T, POSTERIOR_T = 300, 200  # the Forward and Schedule tabs' starting t
EXAMPLE_SEED = 7  # the Sample tab's examples: one seed, three samplers
EXAMPLE_SAMPLERS = ("ddpm", "sde-dpm++", "dpm++")
COMPARED_SAMPLERS = ("dpm++", "ddim")  # the side-by-side view's starting pair: deterministic, so they agree
# Below this many steps a sampler's result drifts toward a blurred average of the data (one step gives the mean
# prediction from pure noise); the Sample tab then says so. DDPM and DDIM need the most steps.
ENOUGH_STEPS = {"ddpm": 20, "ddim": 20, "ddim-eta1": 20, "sde-dpm++": 5, "dpm++": 5}
ANIMATION_FRAMES = 30  # captured steps in a denoising GIF (plus the starting x)
# A running chain streams its picture after its first step, then after ceil(steps / PREVIEWS) more steps or, on a slow
# run, PREVIEW_SECONDS, whichever comes first, never after its last (the result shows it): each is a picture a visitor
# downloads, and a quick DDPM-50 run streams 7 of them (26 with PREVIEWS = 20 and a preview of the last step before).
PREVIEWS = 8
PREVIEW_SECONDS = 1.0
BOUND_POINTS = 50  # timesteps of the bound's stratified estimate (and its plotted curve)
MAX_UPLOAD_BYTES = 5 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_LAYERS = 1  # the image editors: a drawing or a mask, nothing more
# Disk: Gradio's cache of results and uploads is swept every CACHE_SWEEP seconds of files older than CACHE_AGE, so a
# file lives at most 20 min; a client may make QUICK_BURST quick requests at once, then QUICK_PER_MINUTE a minute. A
# forward request caches 0.34 MB (two PNGs and a 30-frame GIF, measured), so one client at the limit holds at most
# (20 + 30 × 20) × 0.34 MB ≈ 210 MB.
CACHE_SWEEP, CACHE_AGE = 300, 900
QUICK_PER_MINUTE, QUICK_BURST = 30, 20
# ZeroGPU: seconds a chain holds the GPU, sized from the measured CPU time of the shipped UNet (16 images, one forward
# 42 ms on 2 cores; a GPU is faster), plus start-up and the GIF.
GPU_SECONDS_PER_STEP, GPU_SECONDS_FIXED = 0.05, 10


def sdedit_steps(t: int, num_train_timesteps: int) -> int:
    """The strided DDPM chain's steps for a start at ``t`` (SDEdit, the paper's figures): ``SDEDIT_STEPS``, or every
    timestep when t is below one stride (the strided schedule would keep none of its timesteps)."""
    return SDEDIT_STEPS if t >= num_train_timesteps // SDEDIT_STEPS else num_train_timesteps


def default_steps(sampler: str) -> int:
    return SAMPLER_INFO.get(sampler, ("", 50))[1]


def gpu_seconds(num_inference_steps) -> int:
    """Seconds a chain of ``num_inference_steps`` may hold a ZeroGPU device (1000 steps: 60 s)."""
    try:
        steps = min(max(int(num_inference_steps), 1), STEP_RANGE[1])
    except (TypeError, ValueError):  # refused later with its message; the GPU is then held only briefly
        steps = 1
    return round(GPU_SECONDS_FIXED + GPU_SECONDS_PER_STEP * steps)
