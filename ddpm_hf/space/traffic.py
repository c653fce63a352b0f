"""Traffic of the Space: a per-client rate limit on the quick endpoints, and pictures served whole under load.

Every quick request (forward process, schedule, posterior step, bound) writes pictures that Gradio keeps in its cache
until ``delete_cache`` prunes them; a client looping on one of them could fill the disk. ``RateLimit`` lets each
client make ``burst`` requests at once and ``per_minute`` a minute after that (a token bucket per client).

Gradio (6.31) writes a picture result into its cache in place, at a path named after the hash of its bytes
(``processing_utils.save_pil_to_cache``): two requests with the same answer (ten clients asking ``/forward`` for the
same image, t and seed) write one file, and a client downloading it while it is rewritten is sent a file cut short,
which uvicorn answers by dropping the connection ("peer closed connection without sending complete message body").
Importing this module (``app.py`` does) makes that write atomic (``save_pictures_atomically``), as Gradio's own
``save_file_to_cache`` already is.
"""

import functools
import inspect
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
from gradio import processing_utils

from .limits import QUICK_BURST, QUICK_PER_MINUTE


class RateLimit:
    """A token bucket per client: ``burst`` requests at once, then ``per_minute`` a minute.

    Args:
        per_minute: sustained requests a minute a client may make.
        burst: requests a client may make at once (a slider dragged back and forth).
    """

    def __init__(self, per_minute: float = QUICK_PER_MINUTE, burst: int = QUICK_BURST):
        self.rate, self.burst = per_minute / 60, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Count one request of ``client``.

        Returns:
            0 when the request may run, else the seconds until it could.
        """
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 10_000:  # forget clients whose buckets have refilled
                full = self.burst / self.rate if self.rate > 0 else float("inf")
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
            tokens, then = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self.rate if self.rate > 0 else float("inf")
            self._buckets[client] = (tokens - 1, now)
            return 0.0


def client_of(request: gr.Request | None, behind_proxy: bool) -> str:
    """Who sent ``request``: on a Space, the address its proxy appended last to X-Forwarded-For (a client cannot
    forge that entry); elsewhere the connection's address."""
    if request is None:
        return "unknown"
    forwarded = request.headers.get("x-forwarded-for", "") if behind_proxy else ""
    if forwarded.strip():
        return forwarded.split(",")[-1].strip()
    return request.client.host if request.client else "unknown"


def rate_limited(fn, limit: RateLimit, behind_proxy: bool = False):
    """``fn`` (a function) served only within ``limit`` for each client; beyond it, a ``gr.Error`` saying how long to
    wait. The wrapper asks Gradio for the request by adding a ``request`` parameter to ``fn``'s signature (not part of
    the API).

    Args:
        fn: the handler.
        limit: the shared ``RateLimit``.
        behind_proxy: trust the last X-Forwarded-For entry (True on Hugging Face Spaces).

    Returns:
        The wrapped handler.
    """

    @functools.wraps(fn)
    def limited(*args, request: gr.Request = None, **kwargs):
        wait = limit.take(client_of(request, behind_proxy))
        if wait > 0:
            raise gr.Error(f"Too many requests from your address: try again in {max(1, round(wait))} s.")
        return fn(*args, **kwargs)

    signature = inspect.signature(fn)
    request = inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=gr.Request)
    limited.__signature__ = signature.replace(parameters=[*signature.parameters.values(), request])
    return limited


def save_pictures_atomically(save_pil_to_cache):
    """Gradio's ``save_pil_to_cache`` writing into a fresh folder of its own and renaming the file into place: a reader
    of the path sees the whole file, old or new (the same bytes: the path is their hash), never a half-written one.

    Args:
        save_pil_to_cache: Gradio's function; it still encodes, hashes and names the file.

    Returns:
        The function with Gradio's signature.
    """

    @functools.wraps(save_pil_to_cache)
    def save(img, cache_dir: str, *args, **kwargs) -> str:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=cache_dir))
        try:
            written = Path(save_pil_to_cache(img, str(staging), *args, **kwargs))
            path = Path(cache_dir).resolve() / written.relative_to(staging.resolve())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written, path)
            return str(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    save.atomic = True
    return save


if not getattr(processing_utils.save_pil_to_cache, "atomic", False):
    processing_utils.save_pil_to_cache = save_pictures_atomically(processing_utils.save_pil_to_cache)
