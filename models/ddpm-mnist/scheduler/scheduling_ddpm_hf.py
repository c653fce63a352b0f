"""The DDPM Markov chain of Ho et al. 2020 (arXiv 2006.11239) as a diffusers scheduler.

This file is self-contained (torch, numpy, diffusers) so that it can travel inside a saved pipeline folder and be
loaded with ``trust_remote_code=True`` where ``ddpm_hf`` is not installed.

Glossary (diffusers indexes t = 0..T-1; the paper's t = 1..T):

    β_t          betas[t]                      α_t = 1 - β_t        alphas[t]
    ᾱ_t          alphas_cumprod[t]             ᾱ_{t-1}              alphas_cumprod_prev[t]  (ᾱ_{-1} = 1)
    √ᾱ_t         sqrt_alphas_cumprod[t]        (signal rate)        √(1-ᾱ_t)  sqrt_one_minus_alphas_cumprod[t]
    SNR_t        snr[t] = ᾱ_t / (1 - ᾱ_t)
    β̃_t          posterior_variance[t]         log β̃_t, clipped at t=0: posterior_log_variance_clipped[t]
    μ̃_t          posterior_mean_coef1[t] · x_0 + posterior_mean_coef2[t] · x_t

A strided schedule (``set_timesteps``) steps from t to the previous kept timestep s < t; every coefficient is the
same formula with ᾱ_s in place of ᾱ_{t-1} (the one-step β becomes 1 - ᾱ_t/ᾱ_s). Coefficients are computed once in
float64 and stored as float32 tensors (for batched indexing) and Python floats (for ``step``).

Differences from diffusers' ``DDPMScheduler`` (0.42), which this class otherwise mirrors key for key:
``fixed_large_log`` samples with σ_t = √β_t (diffusers takes the square root of log β_t: NaN); an unknown
``variance_type``, ``prediction_type``, ``beta_schedule`` or ``timestep_spacing`` is a ``ValueError`` at
construction (diffusers: silently fixed_small, or an error only inside ``step``); the chain's last step (no earlier
timestep) adds no noise, whatever its t (diffusers adds noise whenever t > 0, e.g. σ² = 1 - ᾱ_t at the end of a
``trailing`` schedule with ``fixed_large``).
"""

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
VarianceType = Literal["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]
TimestepSpacing = Literal["linspace", "leading", "trailing"]
MIN_VARIANCE = 1e-20  # β̃ at the last step is 0; diffusers clamps it here before taking logs and roots


def make_betas(schedule: BetaSchedule, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """β_1..β_T in float64 for a named schedule ("linear" is Ho et al. 2020, §4; cosine is Nichol & Dhariwal 2021)."""
    T = num_train_timesteps
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if schedule == "sigmoid":
        return 1 / (1 + np.exp(-np.linspace(-6, 6, T, dtype=np.float64))) * (beta_end - beta_start) + beta_start

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)])


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale √ᾱ_t so that ᾱ_T = 0 and ᾱ_1 is unchanged (Lin et al. 2023, Algorithm 1)."""
    sqrt_ab = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    alphas_cumprod = ((sqrt_ab - last) * first / (first - last)) ** 2
    return 1 - np.concatenate([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])


def q_posterior_coefficients(alphas_cumprod_t: np.ndarray, alphas_cumprod_prev: np.ndarray) -> dict[str, np.ndarray]:
    """Coefficients of q(x_s | x_t, x_0) for s < t (Ho et al. 2020, eqs. 6-7, with ᾱ_s for ᾱ_{t-1}).

    Returns:
        betas (1 - ᾱ_t/ᾱ_s), posterior_variance β̃ = (1-ᾱ_s)/(1-ᾱ_t)·β, posterior_mean_coef1 = √ᾱ_s·β/(1-ᾱ_t) (on x_0),
        posterior_mean_coef2 = √(ᾱ_t/ᾱ_s)·(1-ᾱ_s)/(1-ᾱ_t) (on x_t), all float64.
    """
    betas = 1 - alphas_cumprod_t / alphas_cumprod_prev
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "betas": betas,
            "posterior_variance": (1 - alphas_cumprod_prev) / (1 - alphas_cumprod_t) * betas,
            "posterior_mean_coef1": np.sqrt(alphas_cumprod_prev) * betas / (1 - alphas_cumprod_t),
            "posterior_mean_coef2": np.sqrt(1 - betas) * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod_t),
        }


@dataclass(frozen=True)
class StepCoefficients:
    """Python-float coefficients of one reverse step t -> prev_t (one row of the step table)."""

    prev_t: int
    sqrt_alphas_cumprod: float
    sqrt_one_minus_alphas_cumprod: float
    sqrt_recip_alphas_cumprod: float
    sqrt_recipm1_alphas_cumprod: float
    posterior_mean_coef1: float
    posterior_mean_coef2: float
    log_variance_small: float  # log β̃ (clamped at MIN_VARIANCE)
    log_variance_large: float  # log β


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_choice(key: str, value, allowed_type) -> None:
    allowed = get_args(allowed_type)
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")


class DDPMHFScheduler(SchedulerMixin, ConfigMixin):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), a drop-in for diffusers' ``DDPMScheduler``.

    Args mirror ``DDPMScheduler`` (same keys and defaults). ``variance_type`` picks σ_t²: β̃_t (``fixed_small``,
    the paper's σ² = β̃), β_t (``fixed_large``), the model's own (``learned``: the extra output channels are σ²;
    ``learned_range``: they interpolate log σ² between log β̃ and log β, Nichol & Dhariwal 2021). The ``_log``
    variants are the same σ_t computed through logs.
    """

    _compatibles: ClassVar[list[str]] = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: BetaSchedule = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: VarianceType = "fixed_small",
        clip_sample: bool = True,
        prediction_type: PredictionType = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: TimestepSpacing = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        betas = self._validated_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        for key, value, allowed in [
            ("variance_type", variance_type, VarianceType),
            ("prediction_type", prediction_type, PredictionType),
            ("timestep_spacing", timestep_spacing, TimestepSpacing),
        ]:
            _check_choice(key, value, allowed)
        for key, value in [("clip_sample_range", clip_sample_range), ("sample_max_value", sample_max_value)]:
            if not value > 0:
                raise ValueError(f"{key} must be > 0, got {value}")
        if not 0 < dynamic_thresholding_ratio <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must be in (0, 1], got {dynamic_thresholding_ratio}")
        if not _is_integer(steps_offset) or steps_offset < 0:
            raise ValueError(f"steps_offset must be an integer >= 0, got {steps_offset!r}")
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)

        alphas_cumprod = np.cumprod(1 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior = q_posterior_coefficients(alphas_cumprod, alphas_cumprod_prev)
        with np.errstate(divide="ignore"):
            tables = {
                "betas": betas,
                "alphas": 1 - betas,
                "alphas_cumprod": alphas_cumprod,
                "alphas_cumprod_prev": alphas_cumprod_prev,
                "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
                "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - alphas_cumprod),
                "snr": alphas_cumprod / (1 - alphas_cumprod),
                "posterior_variance": posterior["posterior_variance"],
                # β̃ is 0 at t=0: the paper's code clips its log with β̃_1 (Ho et al., diffusion_utils_2.py)
                "posterior_log_variance_clipped": np.log(
                    np.append(posterior["posterior_variance"][1:2], posterior["posterior_variance"][1:])
                    if num_train_timesteps > 1
                    else np.maximum(posterior["posterior_variance"], MIN_VARIANCE)
                ),
                "posterior_mean_coef1": posterior["posterior_mean_coef1"],
                "posterior_mean_coef2": posterior["posterior_mean_coef2"],
            }
        self._alphas_cumprod64 = alphas_cumprod
        for name, table in tables.items():
            setattr(self, name, torch.from_numpy(table).to(torch.float32))
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.custom_timesteps = False
        self._use_timesteps(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64), device=None)

    @staticmethod
    def _validated_betas(T, beta_start, beta_end, beta_schedule, trained_betas) -> np.ndarray:
        if not _is_integer(T) or T < 1:
            raise ValueError(f"num_train_timesteps must be an integer >= 1, got {T!r}")
        _check_choice("beta_schedule", beta_schedule, BetaSchedule)
        if trained_betas is not None:
            betas = np.asarray(trained_betas, dtype=np.float64)
            if betas.shape != (T,):
                raise ValueError(f"trained_betas must hold num_train_timesteps={T} values, got shape {betas.shape}")
            if not np.all((betas > 0) & (betas <= 1)):
                raise ValueError("trained_betas must all lie in (0, 1]")
            return betas
        if beta_schedule != "squaredcos_cap_v2":
            for key, value in [("beta_start", beta_start), ("beta_end", beta_end)]:
                if not 0 < value < 1:
                    raise ValueError(f"{key} must lie in (0, 1), got {value}")
            if beta_end < beta_start:
                raise ValueError(
                    f"beta_end={beta_end} < beta_start={beta_start}: a {beta_schedule} schedule must increase"
                )
        return make_betas(beta_schedule, T, beta_start, beta_end)

    # ------------------------------------------------------------------ timesteps

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the timesteps of the reverse chain: ``num_inference_steps`` spaced by ``timestep_spacing`` or an
        explicit strictly descending list ``timesteps`` (not both)."""
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None:
            schedule = np.asarray([int(t) for t in timesteps], dtype=np.int64)
            if schedule.size == 0 or np.any(np.diff(schedule) >= 0):
                raise ValueError(f"timesteps must be a non-empty, strictly descending list, got {list(timesteps)}")
            num_inference_steps, custom = None, True
        else:
            n = num_inference_steps
            if not _is_integer(n) or not 1 <= n <= T:
                raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {n!r}")
            spacing = self.config.timestep_spacing
            if spacing == "linspace":
                schedule = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
            elif spacing == "leading":
                schedule = (np.arange(n) * (T // n)).round()[::-1].astype(np.int64) + self.config.steps_offset
            else:
                # T - k·T/n for k < n: np.arange(T, 0, -T/n) overshoots to n+1 values for some n (e.g. 61)
                schedule = np.round(T - np.arange(n) * (T / n)).astype(np.int64) - 1
            num_inference_steps, custom = int(n), False
        if schedule[0] >= T or schedule[-1] < 0:
            raise ValueError(f"timesteps must lie in [0, {T - 1}], got {schedule[0]}..{schedule[-1]}")
        self.num_inference_steps, self.custom_timesteps = num_inference_steps, custom
        self._use_timesteps(schedule.copy(), device)

    def _use_timesteps(self, schedule: np.ndarray, device) -> None:
        """Build the step table for a descending schedule: one ``StepCoefficients`` row per timestep."""
        prev = np.append(schedule[1:], -1)
        ab_t = self._alphas_cumprod64[schedule]
        ab_prev = np.where(prev >= 0, self._alphas_cumprod64[np.maximum(prev, 0)], 1.0)
        post = q_posterior_coefficients(ab_t, ab_prev)
        with np.errstate(divide="ignore"):
            columns = (
                np.sqrt(ab_t), np.sqrt(1 - ab_t), 1 / np.sqrt(ab_t), np.sqrt(1 / ab_t - 1),
                post["posterior_mean_coef1"], post["posterior_mean_coef2"],
                np.log(np.maximum(post["posterior_variance"], MIN_VARIANCE)), np.log(post["betas"]),
            )  # fmt: skip
        self._step_table = {
            int(t): StepCoefficients(int(p), *map(float, values)) for t, p, *values in zip(schedule, prev, *columns)
        }
        self.timesteps = torch.from_numpy(schedule).to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The timestep the chain moves to from ``timestep`` (-1 after the last step)."""
        prev = self._coefficients(timestep).prev_t
        return torch.tensor(prev) if isinstance(timestep, torch.Tensor) else prev

    def _coefficients(self, timestep: int | torch.Tensor) -> StepCoefficients:
        try:
            return self._step_table[int(timestep)]
        except KeyError:
            raise ValueError(f"timestep {int(timestep)} is not in the current schedule") from None

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM feeds x_t to the model unscaled."""
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ forward process q

    def extract(self, table: torch.Tensor, timesteps: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``table[timesteps]`` shaped (B, 1, 1, ...) to broadcast against ``like``."""
        timesteps = torch.as_tensor(timesteps, device=like.device).long().flatten()
        T = self.config.num_train_timesteps
        if timesteps.numel() and (timesteps.min() < 0 or timesteps.max() >= T):
            raise ValueError(f"timesteps must lie in [0, {T - 1}], got {timesteps.tolist()[:8]}")
        values = table.to(device=like.device, dtype=like.dtype)[timesteps]
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (Ho et al. 2020, eq. 4)."""
        return (
            self.extract(self.sqrt_alphas_cumprod, timesteps, original_samples) * original_samples
            + self.extract(self.sqrt_one_minus_alphas_cumprod, timesteps, original_samples) * noise
        )

    def q_sample_step(self, x_prev: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_{t-1}): x_t = √α_t x_{t-1} + √β_t z (Ho et al. 2020, eq. 2)."""
        return (
            self.extract(self.alphas.sqrt(), timesteps, x_prev) * x_prev
            + self.extract(self.betas.sqrt(), timesteps, x_prev) * noise
        )

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022, §4)."""
        return (
            self.extract(self.sqrt_alphas_cumprod, timesteps, sample) * noise
            - self.extract(self.sqrt_one_minus_alphas_cumprod, timesteps, sample) * sample
        )

    def predict_start_from_noise(
        self, x_t: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t, the inverse of eq. 4 (Ho et al. 2020, eq. 15)."""
        return (x_t - self.extract(self.sqrt_one_minus_alphas_cumprod, timesteps, x_t) * noise) / self.extract(
            self.sqrt_alphas_cumprod, timesteps, x_t
        )

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance β̃_t and clipped log variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

        Returns:
            (posterior mean μ̃_t, posterior variance, posterior log variance clipped), broadcastable to x_t.
        """
        mean = (
            self.extract(self.posterior_mean_coef1, timesteps, x_t) * x_start
            + self.extract(self.posterior_mean_coef2, timesteps, x_t) * x_t
        )
        return (
            mean,
            self.extract(self.posterior_variance, timesteps, x_t),
            self.extract(self.posterior_log_variance_clipped, timesteps, x_t),
        )

    # ------------------------------------------------------------------ reverse process p_θ

    def clip_predicted_start(self, x0: torch.Tensor) -> torch.Tensor:
        """x̂_0 kept in the data range as configured: dynamic thresholding, clipping to ±clip_sample_range, or as is."""
        if self.config.thresholding:
            return self._threshold_sample(x0)
        if self.config.clip_sample:
            return x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return x0

    def _threshold_sample(self, x0: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Saharia et al. 2022, §2.3): clip each image to its s-quantile of |x̂_0|, rescale."""
        flat = x0.float().reshape(x0.shape[0], -1)
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = s.clamp(min=1, max=self.config.sample_max_value).unsqueeze(1)
        return (torch.maximum(torch.minimum(flat, s), -s) / s).reshape(x0.shape).to(x0.dtype)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """One reverse step x_t -> x_s ~ p_θ(x_s | x_t), s = ``previous_timestep(t)`` (t-1 on the full chain;
        Ho et al. 2020, Algorithm 2, line 4).

        Args:
            model_output: the network's output at (x_t, t): ε, x_0 or v per ``prediction_type`` (with the variance
                channels appended for ``learned``/``learned_range``).
            timestep: t, one of ``self.timesteps``.
            sample: x_t.
            generator: seeds the noise z exactly as diffusers' ``DDPMScheduler`` does.
            return_dict: return a ``DDPMSchedulerOutput`` rather than ``(prev_sample, pred_original_sample)``.
        """
        c = self._coefficients(timestep)
        cfg = self.config
        channels = sample.shape[1] if sample.ndim > 1 else None
        learned = cfg.variance_type in ("learned", "learned_range")
        if learned and model_output.shape[1:] == (2 * channels, *sample.shape[2:]):
            model_output, predicted_variance = torch.split(model_output, channels, dim=1)
        elif learned:
            raise ValueError(
                f"variance_type={cfg.variance_type!r} needs 2x{channels} output channels, got "
                f"model_output {tuple(model_output.shape)} for sample {tuple(sample.shape)}"
            )
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}")
        # one reduction; the elementwise check runs only if the sum is not finite (it may overflow in fp16)
        if not torch.isfinite(model_output.sum()) and not torch.isfinite(model_output).all():
            raise ValueError(f"model_output at timestep {int(timestep)} holds NaN or infinite values")

        # 1. x̂_0 from the model output (eq. 15 for ε; v-prediction: Salimans & Ho 2022)
        if cfg.prediction_type == "epsilon":
            x0 = torch.sub(sample * c.sqrt_recip_alphas_cumprod, model_output, alpha=c.sqrt_recipm1_alphas_cumprod)
        elif cfg.prediction_type == "sample":
            x0 = model_output
        else:
            x0 = torch.sub(sample * c.sqrt_alphas_cumprod, model_output, alpha=c.sqrt_one_minus_alphas_cumprod)
        # 2. keep x̂_0 in the data range
        x0 = self.clip_predicted_start(x0)
        # 3. posterior mean μ̃_t(x_t, x̂_0) (eq. 7)
        prev_sample = torch.add(sample * c.posterior_mean_coef2, x0, alpha=c.posterior_mean_coef1)
        # 4. x_{t-1} = μ + σ_t z, z ~ N(0, I); the chain's last step is noise-free
        if c.prev_t >= 0:
            z = self._draw_noise(model_output, generator)
            if cfg.variance_type in ("fixed_small", "fixed_small_log"):
                prev_sample = prev_sample.add_(z, alpha=math.exp(0.5 * c.log_variance_small))
            elif cfg.variance_type in ("fixed_large", "fixed_large_log"):
                prev_sample = prev_sample.add_(z, alpha=math.exp(0.5 * c.log_variance_large))
            elif cfg.variance_type == "learned":
                prev_sample = prev_sample + predicted_variance.sqrt() * z
            else:
                frac = (predicted_variance + 1) / 2
                log_variance = frac * c.log_variance_large + (1 - frac) * c.log_variance_small
                prev_sample = prev_sample + torch.exp(0.5 * log_variance) * z
        if not return_dict:
            return prev_sample, x0
        return DDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    @staticmethod
    def _draw_noise(like: torch.Tensor, generator) -> torch.Tensor:
        """z ~ N(0, I) drawn as diffusers' ``randn_tensor`` draws it, so a seed gives diffusers' images."""
        if isinstance(generator, list) or (generator is not None and generator.device != like.device):
            return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
