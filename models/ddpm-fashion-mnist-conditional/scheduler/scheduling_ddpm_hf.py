"""The DDPM Markov chain of Ho et al. 2020 (arXiv 2006.11239) as a diffusers scheduler.

This file is self-contained (torch, numpy, diffusers) so that it can travel inside a saved pipeline folder and be
loaded with ``trust_remote_code=True`` where ``ddpm_hf`` is not installed.

Glossary (diffusers indexes t = 0..T-1; the paper's t = 1..T; s is the step's target, t-1 on the full chain):

    β_t          betas[t]                      α_t = 1 - β_t        alphas[t]
    ᾱ_t          alphas_cumprod[t]             ᾱ_{t-1}              alphas_cumprod_prev[t]  (ᾱ_{-1} = 1)
    √ᾱ_t         sqrt_alphas_cumprod[t]        (signal rate)        √(1-ᾱ_t)  sqrt_one_minus_alphas_cumprod[t]
    SNR_t        snr[t] = ᾱ_t / (1 - ᾱ_t)
    β̃_t          posterior_variance[t]         log β̃_t, clipped at t=0: posterior_log_variance_clipped[t]
    μ̃_t          posterior_mean_coef1[t] · x_0 + posterior_mean_coef2[t] · x_t
    x̂_0          pred_x0: x_0 predicted from the model output (ε, x_0 or v) at x_t

One timestep's path: ``set_timesteps`` picks the descending timesteps and, for each t, the step's target s (the
next kept timestep; -1 after the last). ``step(model_output, t, x_t)`` calls ``p_mean_variance(model_output, x_t,
t, s)``, which (1) reads every coefficient of the step t -> s from ``reverse_coefficients`` (one float64 formula per
quantity on ᾱ_t and ᾱ_s; a strided step is the same formula with ᾱ_s for ᾱ_{t-1}), (2) forms x̂_0
(``_predict_start``, the one dispatch on ``prediction_type``), (3) clips it, (4) takes the posterior mean μ̃(x_t,
x̂_0) (``_posterior``, shared with ``q_posterior_mean_variance``) and p_θ's log variance; ``step`` then adds σ z.
The bound (``ddpm_hf.likelihood``) calls the same ``p_mean_variance``.

Differences from diffusers' ``DDPMScheduler`` (0.42), which this class otherwise mirrors key for key:
``fixed_large_log`` samples with σ_t = √β_t (diffusers takes the square root of log β_t: NaN); an unknown
``variance_type``, ``prediction_type``, ``beta_schedule`` or ``timestep_spacing`` is a ``ValueError`` at
construction (diffusers: silently fixed_small, or an error only inside ``step``); the chain's last step (no earlier
timestep) adds no noise, whatever its t (diffusers adds noise whenever t > 0, e.g. σ² = 1 - ᾱ_t at the end of a
``trailing`` schedule with ``fixed_large``). ``_get_variance`` returns what diffusers' does, for code that calls it.
"""

import math
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


def q_posterior_coefficients(alphas_cumprod_t, alphas_cumprod_prev) -> dict:
    """Coefficients of q(x_s | x_t, x_0) for s < t (Ho et al. 2020, eqs. 6-7, with ᾱ_s for ᾱ_{t-1}).

    Args:
        alphas_cumprod_t: ᾱ_t, float64 (numpy array or torch tensor).
        alphas_cumprod_prev: ᾱ_s, the same shape (1 where the chain ends, s = -1).

    Returns:
        betas (1 - ᾱ_t/ᾱ_s), posterior_variance β̃ = (1-ᾱ_s)/(1-ᾱ_t)·β, posterior_mean_coef1 = √ᾱ_s·β/(1-ᾱ_t) (on x_0),
        posterior_mean_coef2 = √(ᾱ_t/ᾱ_s)·(1-ᾱ_s)/(1-ᾱ_t) (on x_t).
    """
    ab_t, ab_prev = alphas_cumprod_t, alphas_cumprod_prev
    betas = 1 - ab_t / ab_prev
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "betas": betas,
            "posterior_variance": (1 - ab_prev) / (1 - ab_t) * betas,
            "posterior_mean_coef1": ab_prev**0.5 * betas / (1 - ab_t),
            "posterior_mean_coef2": (1 - betas) ** 0.5 * (1 - ab_prev) / (1 - ab_t),
        }


def reverse_coefficients(ab_t: torch.Tensor, ab_prev: torch.Tensor, log_variance_floor: float) -> dict:
    """Every coefficient of one reverse step t -> s, from float64 ᾱ_t and ᾱ_s: the one table behind ``step``,
    ``q_posterior_mean_variance`` and the bound.

    Adds to ``q_posterior_coefficients`` the x̂_0 coefficients √ᾱ_t, √(1-ᾱ_t), 1/√ᾱ_t, √(1/ᾱ_t - 1) (eq. 15) and the
    two fixed log variances of p_θ (§3.2): ``posterior_log_variance_clipped`` (σ² = β̃) and ``log_betas_clipped``
    (σ² = β). Where the chain ends (ᾱ_s = 1, so β̃ = 0) both are ``log_variance_floor`` = log β̃ of the unit step
    at t = 1, as in the paper's code: the decoder L_0 needs that variance; ``step`` adds no noise there.
    """
    c = q_posterior_coefficients(ab_t, ab_prev)
    end = ab_prev == 1
    floor = torch.tensor(log_variance_floor, dtype=ab_t.dtype, device=ab_t.device)
    c["posterior_log_variance_clipped"] = torch.where(end, floor, c["posterior_variance"].log())
    c["log_betas_clipped"] = torch.where(end, floor, c["betas"].log())
    c["sqrt_alphas_cumprod"], c["sqrt_one_minus_alphas_cumprod"] = ab_t.sqrt(), (1 - ab_t).sqrt()
    c["sqrt_recip_alphas_cumprod"], c["sqrt_recipm1_alphas_cumprod"] = ab_t.rsqrt(), (1 / ab_t - 1).sqrt()
    return c


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

        ab = torch.from_numpy(np.cumprod(1 - betas))
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        first = q_posterior_coefficients(ab[1:2], ab[:1])["posterior_variance"]  # β̃ of the unit step at t = 1
        self._log_variance_floor = float(first.log()) if num_train_timesteps > 1 else float(np.log(MIN_VARIANCE))
        self._alphas_cumprod_ext = torch.cat([torch.ones(1, dtype=torch.float64), ab])  # [ᾱ_{-1} = 1, ᾱ_0, ...]
        tables = reverse_coefficients(ab, ab_prev, self._log_variance_floor) | {
            "betas": torch.from_numpy(betas),
            "alphas": torch.from_numpy(1 - betas),
            "alphas_cumprod": ab,
            "alphas_cumprod_prev": ab_prev,
            "snr": ab / (1 - ab),
        }
        for name, table in tables.items():
            setattr(self, name, table.to(torch.float32))
        self._cache: dict = {}
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
        """Record a descending schedule and each timestep's target s: the next kept timestep, -1 after the last."""
        self._previous = dict(zip(schedule.tolist(), [*schedule[1:].tolist(), -1]))
        self.timesteps = torch.from_numpy(schedule).to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The timestep the chain moves to from ``timestep`` (-1 after the last)."""
        try:
            prev = self._previous[int(timestep)]
        except KeyError:
            raise ValueError(f"timestep {int(timestep)} is not in the current schedule") from None
        return torch.tensor(prev) if isinstance(timestep, torch.Tensor) else prev

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM feeds x_t to the model unscaled (kept: diffusers' scheduler interface, which pipelines call)."""
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ tables

    def _check_timesteps(self, timesteps: int | torch.Tensor, low: int = 0) -> None:
        """Raise unless low <= t < T. Only values already on the host are read (ints, CPU tensors): on an
        accelerator the check would make every call wait for the device, so it is skipped there."""
        if isinstance(timesteps, torch.Tensor) and (timesteps.device.type != "cpu" or not timesteps.numel()):
            return
        T = self.config.num_train_timesteps
        values = [timesteps] if isinstance(timesteps, int) else torch.as_tensor(timesteps).flatten().tolist()
        if min(values) < low or max(values) >= T:
            raise ValueError(f"timesteps must lie in [{low}, {T - 1}], got {values[:8]}")

    def _on(self, name: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The table ``name`` on ``like``'s device in ``dtype``, copied once per device and dtype."""
        key = (name, like.device, dtype)
        if key not in self._cache:
            with torch.inference_mode(False):  # a plain tensor, usable later under autograd too
                self._cache[key] = getattr(self, name).to(device=like.device, dtype=dtype)
        return self._cache[key]

    def _extract(self, name: str, timesteps: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[timesteps]`` shaped (B, 1, 1, ...) to broadcast against ``like``; no host sync."""
        index = torch.as_tensor(timesteps, device=like.device).long()
        return self._on(name, like, like.dtype)[index].reshape(-1, *([1] * (like.ndim - 1)))

    def _coefficients(self, t: int | torch.Tensor, prev_t: int | torch.Tensor, like: torch.Tensor) -> dict:
        """``reverse_coefficients`` of the step(s) t -> prev_t, evaluated in float64, returned in ``like``'s dtype
        shaped to broadcast against it; kept per device and dtype when t and prev_t are ints (as in ``step``)."""
        key = (t, prev_t, like.device, like.dtype, like.ndim) if isinstance(t + prev_t, int) else None
        if key in self._cache:
            return self._cache[key]
        wide = torch.float32 if like.device.type == "mps" else torch.float64  # MPS has no float64
        with torch.inference_mode(key is None and torch.is_inference_mode_enabled()):
            ab = self._on("_alphas_cumprod_ext", like, wide)  # ab[k + 1] = ᾱ_k, ab[0] = 1
            c = reverse_coefficients(ab[t + 1], ab[prev_t + 1], self._log_variance_floor)
            values = torch.stack(list(c.values())).to(like.dtype).reshape(len(c), -1, *([1] * (like.ndim - 1)))
        c = dict(zip(c, values.unbind()))
        if key is not None:
            self._cache[key] = c
        return c

    # ------------------------------------------------------------------ forward process q

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (Ho et al. 2020, eq. 4)."""
        self._check_timesteps(timesteps)
        x0 = original_samples
        return (
            self._extract("sqrt_alphas_cumprod", timesteps, x0) * x0
            + self._extract("sqrt_one_minus_alphas_cumprod", timesteps, x0) * noise
        )

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022, §4)."""
        self._check_timesteps(timesteps)
        return (
            self._extract("sqrt_alphas_cumprod", timesteps, sample) * noise
            - self._extract("sqrt_one_minus_alphas_cumprod", timesteps, sample) * sample
        )

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean μ̃_t, variance β̃_t and clipped log variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

        Returns:
            (posterior mean, posterior variance, posterior log variance clipped), broadcastable to x_t.
        """
        self._check_timesteps(timesteps)
        c = self._coefficients(timesteps, timesteps - 1, x_t)
        return self._posterior_mean(c, x_start, x_t), c["posterior_variance"], c["posterior_log_variance_clipped"]

    @staticmethod
    def _posterior_mean(c: dict, x_start: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """μ̃(x_t, x_0) = coef1 · x_0 + coef2 · x_t (Ho et al. 2020, eq. 7)."""
        return c["posterior_mean_coef1"] * x_start + c["posterior_mean_coef2"] * x_t

    # ------------------------------------------------------------------ reverse process p_θ

    def p_mean_variance(
        self, model_output: torch.Tensor, sample: torch.Tensor, t: int | torch.Tensor, prev_t: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """p_θ(x_s | x_t) for the step t -> s = ``prev_t`` (Ho et al. 2020, eqs. 1, 7, 15 and §3.2).

        Args:
            model_output: the network's output at (x_t, t): ε, x_0 or v per ``prediction_type`` (with the variance
                channels appended for ``learned``/``learned_range``).
            sample: x_t.
            t: the timestep(s): an int, or a tensor of shape () or (B,).
            prev_t: s < t in the same form; -1 is the chain's end (ᾱ_s = 1).

        Returns:
            (mean, variance, log_variance, pred_x0), broadcastable to x_t. Where s = -1 the log variance is the
            clipped value the decoder L_0 uses (``reverse_coefficients``); ``step`` adds no noise there.
        """
        self._check_timesteps(t)
        self._check_timesteps(prev_t, low=-1)
        model_output, predicted_variance = self._split_variance(model_output, sample)
        c = self._coefficients(t, prev_t, sample)
        # 1. x̂_0 from the model output; 2. kept in the data range
        pred_x0 = self.clip_predicted_start(self._predict_start(model_output, sample, c))
        # 3. μ_θ = μ̃(x_t, x̂_0)
        mean = self._posterior_mean(c, pred_x0, sample)
        # 4. log σ_t² per variance_type
        kind = self.config.variance_type
        small, large = c["posterior_log_variance_clipped"], c["log_betas_clipped"]
        if kind in ("fixed_small", "fixed_small_log"):
            log_variance = small
        elif kind in ("fixed_large", "fixed_large_log"):
            log_variance = large
        elif kind == "learned":
            log_variance = predicted_variance.clamp(min=MIN_VARIANCE).log()
        else:
            frac = (predicted_variance + 1) / 2
            log_variance = frac * large + (1 - frac) * small
        return mean, log_variance.exp(), log_variance, pred_x0

    def _predict_start(self, model_output: torch.Tensor, sample: torch.Tensor, c: dict) -> torch.Tensor:
        """x̂_0 from ε (Ho et al. 2020, eq. 15), from x_0 itself, or from v (Salimans & Ho 2022, §4)."""
        kind = self.config.prediction_type
        if kind == "epsilon":
            return c["sqrt_recip_alphas_cumprod"] * sample - c["sqrt_recipm1_alphas_cumprod"] * model_output
        if kind == "sample":
            return model_output
        return c["sqrt_alphas_cumprod"] * sample - c["sqrt_one_minus_alphas_cumprod"] * model_output

    def _split_variance(self, model_output: torch.Tensor, sample: torch.Tensor):
        """(the prediction, the variance channels or None), checking the shapes against ``variance_type``."""
        channels = sample.shape[1] if sample.ndim > 1 else None
        predicted_variance = None
        if self.config.variance_type in ("learned", "learned_range"):
            if model_output.shape[1:] != (2 * channels, *sample.shape[2:]):
                raise ValueError(
                    f"variance_type={self.config.variance_type!r} needs 2x{channels} output channels, got "
                    f"model_output {tuple(model_output.shape)} for sample {tuple(sample.shape)}"
                )
            model_output, predicted_variance = torch.split(model_output, channels, dim=1)
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}")
        return model_output, predicted_variance

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
        Ho et al. 2020, Algorithm 2, line 4): ``p_mean_variance`` plus σ_t z.

        Args:
            model_output: the network's output at (x_t, t), as ``p_mean_variance`` takes it.
            timestep: t, one of ``self.timesteps``.
            sample: x_t.
            generator: seeds the noise z exactly as diffusers' ``DDPMScheduler`` does.
            return_dict: return a ``DDPMSchedulerOutput`` rather than ``(prev_sample, pred_original_sample)``.
        """
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        # one reduction; the elementwise check runs only if the sum is not finite (it may overflow in fp16)
        if not torch.isfinite(model_output.sum()) and not torch.isfinite(model_output).all():
            raise ValueError(f"model_output at timestep {t} holds NaN or infinite values")
        mean, _, log_variance, pred_x0 = self.p_mean_variance(model_output, sample, t, prev_t)
        prev_sample = mean
        if prev_t >= 0:  # x_s = μ_θ + σ_t z, z ~ N(0, I); the chain's last step is noise-free
            z = self._draw_noise(model_output[:, : sample.shape[1]] if sample.ndim > 1 else model_output, generator)
            prev_sample = torch.addcmul(mean, torch.exp(0.5 * log_variance), z)
        if not return_dict:
            return prev_sample, pred_x0
        return DDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_x0)

    def _get_variance(self, t: int, predicted_variance: torch.Tensor | None = None, variance_type: str | None = None):
        """What diffusers' ``DDPMScheduler._get_variance`` returns, for code written against it: β̃ clamped at
        1e-20 (fixed_small), its square root (fixed_small_log), β (fixed_large), log β (fixed_large_log), the model's
        σ² (learned), or log σ² between log β̃ and log β (learned_range), for the step t -> ``previous_timestep(t)``.
        """
        kind = self.config.variance_type if variance_type is None else variance_type
        _check_choice("variance_type", kind, VarianceType)
        c = self._coefficients(int(t), self.previous_timestep(int(t)), self.betas)
        small, beta = c["posterior_variance"].clamp(min=MIN_VARIANCE).reshape(()), c["betas"].reshape(())
        if kind in ("learned", "learned_range") and predicted_variance is None:
            raise ValueError(f"variance_type={kind!r} needs predicted_variance")
        if kind == "learned":
            return predicted_variance
        if kind == "learned_range":
            frac = (predicted_variance + 1) / 2
            return frac * beta.log() + (1 - frac) * small.log()
        return {"fixed_small": small, "fixed_small_log": small.sqrt(), "fixed_large": beta}.get(kind, beta.log())

    @staticmethod
    def _draw_noise(like: torch.Tensor, generator) -> torch.Tensor:
        """z ~ N(0, I) drawn as diffusers' ``randn_tensor`` draws it, so a seed gives diffusers' images."""
        if isinstance(generator, list) or (generator is not None and generator.device != like.device):
            return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
