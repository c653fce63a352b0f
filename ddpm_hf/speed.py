"""How the ε-network runs fastest on the machine at hand: memory format and precision chosen by timing, and compiling.

No single layout is fastest everywhere: on one CPU float32 convolutions gain 1.1-1.3× from channels_last (NHWC), on
another bfloat16 autocast runs 1.2× faster in NCHW than in channels_last. So at the first use of a UNet, for each
(device, precision asked for, batch-size class), ``choose`` times a few forwards of every candidate and keeps the
fastest:

    candidates = {NCHW, channels_last} × {float32}                precision="float32"
                 {NCHW, channels_last} × {float32, reduced}       precision="auto"; reduced as ``resolve_precision``
                                                                  picks it: bfloat16 on a CPU with native bf16,
                                                                  bfloat16 or float16 on CUDA, none elsewhere
                 {NCHW, channels_last} × {the dtype asked for}    precision="bfloat16" or "float16"

The choice is cached for the process (per architecture: two UNets of one configuration run alike, and two runs in one
process give the same numbers) and the UNet's weights are put in its memory format. ``DDPM_HF_AUTOTUNE=0`` (or
``autotune=False``) skips the timing for runs that must repeat bit for bit: the network then runs in the precision
``resolve_precision`` names and in its weights' memory format as they are. ``describe(unet)`` says what the last
chain ran.

``torch.compile`` is opt-in (``compile=True``; ``DDPM_HF_COMPILE=1``: the Space compiles in a background thread at
start-up): tens of seconds once for 1.2-1.6× per forward at 4-16 images on a CPU. The batch dimension is dynamic
(batch 1 runs padded to 2) and the compiling forwards run at ``WARM_BATCHES``, so no batch of 1-16 compiles later.
"""

import contextlib
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from diffusers import UNet2DModel

from .guidance import forward
from .samplers import autocast, resolve_precision

AUTOTUNE_ENV = "DDPM_HF_AUTOTUNE"
COMPILE_ENV = "DDPM_HF_COMPILE"
COMPILE_BACKEND = "inductor"
REPEATS = 2  # timed forwards per candidate, after one warm-up each; the fastest counts
WARM_BATCHES = (2, 4, 8, 16)  # batch sizes of the compiling forwards; each range of sizes a graph serves has one
TIMING_TIMESTEP = 500  # any t: the network's cost does not depend on it
FORMAT_NAMES = {torch.contiguous_format: "NCHW", torch.channels_last: "channels_last"}
Network = Callable[..., torch.Tensor]  # (x_t, t, class_labels=None) → ε_θ

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """How the network runs: the autocast ``dtype`` of its forward (float32: none) and the ``memory_format`` of its
    weights and input; ``measured`` is False for the fixed rule used without timing."""

    dtype: torch.dtype
    memory_format: torch.memory_format
    measured: bool = field(default=True, compare=False)

    def __str__(self) -> str:
        text = f"{str(self.dtype).removeprefix('torch.')}, {FORMAT_NAMES[self.memory_format]}"
        return text if self.measured else f"{text} (fixed, not timed)"


_lock = threading.RLock()
_chosen: dict[tuple, Choice] = {}  # by architecture, weights' dtype, device, candidates and batch class
_latest: "weakref.WeakKeyDictionary[UNet2DModel, Choice]" = weakref.WeakKeyDictionary()
_compiled: "weakref.WeakKeyDictionary[UNet2DModel, tuple[Choice, torch.nn.Module]]" = weakref.WeakKeyDictionary()
_compile_lock = threading.Lock()
_running: "weakref.WeakKeyDictionary[UNet2DModel, int]" = weakref.WeakKeyDictionary()  # chains running per UNet


def autotune_enabled() -> bool:
    """Whether ``choose`` times the candidates (the default), i.e. ``DDPM_HF_AUTOTUNE`` is not "0"."""
    return os.environ.get(AUTOTUNE_ENV, "1").strip() != "0"


def compile_requested() -> bool:
    """Whether ``DDPM_HF_COMPILE=1`` asks the Space to compile its models at start-up."""
    return os.environ.get(COMPILE_ENV, "0").strip() == "1"


def batch_class(batch_size: int) -> int:
    """The smallest power of 4 ≥ ``batch_size`` (1, 4, 16, 64, …): batches in one class share a timed choice."""
    return 4 ** math.ceil(math.log(max(batch_size, 1), 4) - 1e-9)


def candidates(precision: str, device: torch.device) -> list[Choice]:
    """The (dtype, memory format) pairs that meet ``precision`` on ``device``, float32 first."""
    dtype = resolve_precision(precision, device)
    dtypes = [torch.float32, dtype] if precision == "auto" and dtype != torch.float32 else [dtype]
    return [Choice(d, f) for d in dtypes for f in (torch.contiguous_format, torch.channels_last)]


def weights_format(unet: UNet2DModel) -> torch.memory_format:
    """channels_last if all the UNet's 4-D weights are laid out so (``load_pipeline`` puts them so), else NCHW."""
    weights = [p for p in unet.parameters() if p.dim() == 4]
    channels_last = bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    return torch.channels_last if channels_last else torch.contiguous_format


def fixed_choice(unet: UNet2DModel, precision: str) -> Choice:
    """The choice without timing: ``resolve_precision``'s dtype, the weights' memory format as they are."""
    return Choice(resolve_precision(precision, unet.device), weights_format(unet), measured=False)


def use_format(unet: UNet2DModel, memory_format: torch.memory_format) -> None:
    """Put the UNet's 4-D weights in ``memory_format`` (in place; nothing to do when they already are)."""
    if not all(p.is_contiguous(memory_format=memory_format) for p in unet.parameters() if p.dim() == 4):
        unet.to(memory_format=memory_format)


def input_shape(unet: UNet2DModel, batch_size: int) -> tuple[int, ...]:
    """(B, C, H, W) of the UNet's input."""
    size = unet.config.sample_size
    return (batch_size, unet.config.in_channels, *((size, size) if isinstance(size, int) else size))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_candidates(
    unet: UNet2DModel,
    batch_size: int,
    options: list[Choice],
    *,
    clock: Callable[[], float] = time.perf_counter,
    repeats: int = REPEATS,
) -> dict[Choice, float]:
    """Seconds of one forward of a ``batch_size`` batch per candidate: the fastest of ``repeats`` after a warm-up.

    The candidates take turns (one forward of each per round), so a change in the machine's load hits them alike.
    The input comes from a private generator: the global random state is not touched.

    Args:
        unet: the network (its weights end in the last candidate's memory format).
        batch_size: images per forward.
        options: the candidates.
        clock: seconds, monotonic (injectable for tests).
        repeats: timed rounds after the warm-up round.

    Returns:
        Seconds per candidate.
    """
    device = unet.device
    x = torch.randn(input_shape(unet, batch_size), generator=torch.Generator().manual_seed(0))
    x = x.to(device=device, dtype=unet.dtype)
    best = dict.fromkeys(options, math.inf)
    for round_ in range(repeats + 1):
        for option in options:
            use_format(unet, option.memory_format)
            inputs = x.contiguous(memory_format=option.memory_format)
            with torch.inference_mode(), autocast(device, option.dtype):
                _synchronize(device)
                start = clock()
                forward(unet, inputs, TIMING_TIMESTEP)
                _synchronize(device)
                seconds = clock() - start
            if round_:
                best[option] = min(best[option], seconds)
    return best


def _architecture(unet: UNet2DModel) -> str:
    """What a forward's speed depends on besides the device: the UNet's configuration and its weights' dtype."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}  # not its path or version
    return json.dumps({**config, "dtype": str(unet.dtype)}, sort_keys=True, default=str)


def forget() -> None:
    """Drop the timed choices (the next chain times again), e.g. after ``torch.set_num_threads``."""
    with _lock:
        _chosen.clear()


def choose(
    unet: UNet2DModel,
    batch_size: int,
    precision: str = "auto",
    *,
    autotune: bool | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Choice:
    """The fastest way to run ``unet`` on batches of ``batch_size`` that meets ``precision``, timed once per
    (architecture, device, candidates, ``batch_class``) and cached for the process; the UNet's weights are put in its
    memory format, unless a chain is running on it (``running``): then they stay, and nothing is timed.

    Args:
        unet: the network; the choice is for its device.
        batch_size: images per forward.
        precision: "auto" (float32 or the device's reduced precision, whichever is faster), "float32", "bfloat16"
            or "float16" (as ``ddpm_hf.samplers.resolve_precision``).
        autotune: False: the fixed rule (``fixed_choice``), no timing; None: as ``DDPM_HF_AUTOTUNE`` says.
        clock: seconds, monotonic (injectable for tests).

    Returns:
        The ``Choice``; ``describe(unet)`` reports it from now on.
    """
    device = unet.device
    fixed = fixed_choice(unet, precision)  # validates precision
    if autotune is None:
        autotune = autotune_enabled()
    with _lock:
        busy = _running.get(unet, 0) > 0  # another thread's chain runs it: its weights must not move meanwhile
        if not autotune or device.type not in ("cpu", "cuda"):
            choice = fixed
        else:
            options = candidates(precision, device)
            key = (_architecture(unet), str(device), tuple(options), batch_class(batch_size))
            if key not in _chosen and not busy:
                seconds = time_candidates(unet, batch_size, options, clock=clock)
                _chosen[key] = min(seconds, key=seconds.get)
                logger.info(
                    "timed %s: chose %s", {str(c): f"{s * 1e3:.1f} ms" for c, s in seconds.items()}, _chosen[key]
                )
            choice = _chosen.get(key, fixed)  # busy and not yet timed: untimed this once
        if busy and choice.memory_format != weights_format(unet):
            choice = Choice(choice.dtype, weights_format(unet), measured=False)
        use_format(unet, choice.memory_format)
        _latest[unet] = choice
    return choice


def describe(unet: UNet2DModel) -> str | None:
    """How the last chain ran ``unet``, e.g. "bfloat16, NCHW" (", compiled" when it ran compiled); None before any."""
    choice = _latest.get(unet)
    if choice is None:
        return None
    compiled = _compiled.get(unet)
    return f"{choice}, compiled" if compiled is not None and compiled[0] == choice else str(choice)


def _compiled_network(module: torch.nn.Module) -> Network:
    """Call a compiled UNet with a dynamic batch dimension; batch 1 runs padded to 2 (size 1 is always specialised)."""

    def run(x: torch.Tensor, t: int, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        if n == 1 or not x.is_inference():  # a chain's first x_t is a normal tensor, the rest inference tensors:
            padded = torch.cat([x, x]) if n == 1 else x.clone()  # one kind keeps one graph (dispatch keys are guarded)
        else:
            padded = x
        torch._dynamo.mark_dynamic(padded, 0)  # sizes >= 2 share the graph
        if class_labels is not None:
            class_labels = torch.cat([class_labels, class_labels]) if n == 1 else class_labels.clone()
            torch._dynamo.mark_dynamic(class_labels, 0)
        return forward(module, padded, torch.tensor(t, device=x.device), class_labels)[:n]

    return run


def compile_unet(unet: UNet2DModel, choice: Choice, batch_size: int = 16) -> Network:
    """``torch.compile`` the UNet for ``choice`` and compile it now with forwards of ``WARM_BATCHES`` and
    ``batch_size`` images (in ``inference_mode`` and ``choice``'s autocast, as ``ddpm_hf.sampling`` runs it); cached
    per UNet and choice.

    Args:
        unet: the network, its weights in ``choice``'s memory format (as ``running`` holds them).
        choice: dtype and memory format to compile for (from ``choose``).
        batch_size: the batch the caller runs, compiled too when ``WARM_BATCHES`` does not cover it.

    Returns:
        A ``Network``: (x_t, t) → ε_θ.
    """
    with _compile_lock:
        ready = _compiled.get(unet)
        if ready is not None and ready[0] == choice:
            return _compiled_network(ready[1])
        module = torch.compile(unet, backend=COMPILE_BACKEND)
        network = _compiled_network(module)
        device = unet.device
        start = time.perf_counter()
        for n in sorted({*WARM_BATCHES, batch_size}):
            x = torch.zeros(input_shape(unet, n), device=device, dtype=unet.dtype)
            with torch.inference_mode(), autocast(device, choice.dtype):
                network(x.contiguous(memory_format=choice.memory_format), TIMING_TIMESTEP)
        logger.info("compiled the UNet for %s in %.1f s", choice, time.perf_counter() - start)
        _compiled[unet] = (choice, module)
        return network


def network(unet: UNet2DModel, choice: Choice, compile: bool | None = None, batch_size: int = 16) -> Network:
    """The callable a chain runs: (x_t, t) → ε_θ.

    Args:
        unet: the network.
        choice: from ``choose``.
        compile: True: compiled (compiling now if needed); False: eager; None: compiled if a compiled network for
            this choice is ready (``compile_in_background``), else eager.
        batch_size: the batch the chain runs (compiled too if ``WARM_BATCHES`` does not cover it).

    Returns:
        The ``Network``.
    """
    if compile:
        return compile_unet(unet, choice, batch_size)
    ready = _compiled.get(unet) if compile is None else None
    if ready is not None and ready[0] == choice:
        return _compiled_network(ready[1])
    return lambda x, t, class_labels=None: forward(unet, x, t, class_labels)


@contextlib.contextmanager
def running(
    unet: UNet2DModel,
    batch_size: int,
    precision: str = "auto",
    *,
    autotune: bool | None = None,
    compile: bool | None = None,
) -> Iterator[tuple[Choice, Network]]:
    """Choose (``choose``) and hold: while the context is open no other thread moves the UNet's weights to another
    memory format (a forward whose weights change layout under it computes garbage).

    Args:
        unet: the network.
        batch_size: images per forward.
        precision: as ``choose``.
        autotune: as ``choose``.
        compile: as ``network``.

    Yields:
        (the ``Choice``, the ``Network`` to call).
    """
    with _lock:
        choice = choose(unet, batch_size, precision, autotune=autotune)
        _running[unet] = _running.get(unet, 0) + 1
    try:
        yield choice, network(unet, choice, compile, batch_size)
    finally:
        with _lock:
            _running[unet] -= 1


def compile_in_background(unet: UNet2DModel, batch_size: int = 16, precision: str = "auto") -> threading.Thread:
    """Choose (for ``batch_size`` and ``precision``) and compile in a started daemon thread, returned; chains run eager
    until it is done, then compiled (``compile=None``). A failure (no C++ compiler, say) is logged: they stay eager."""

    def run() -> None:
        try:
            with running(unet, batch_size, precision, compile=True):
                pass
        except Exception:  # a Space without a C++ compiler still serves, eager
            logger.exception("compiling the UNet failed; it runs eager")

    thread = threading.Thread(target=run, name="compile-unet", daemon=True)
    thread.start()
    return thread
