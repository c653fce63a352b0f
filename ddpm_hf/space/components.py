"""Gradio pieces the Space's inputs need: one error adapter, and inputs that answer bad values with the app's own
message (an API caller's wrong type, a file that is not an image, an image too large to decode); an empty seed box
means a new random seed."""

import functools
import inspect
import math
import random
from io import BytesIO

import gradio as gr
from gradio.components.base import server
from gradio.components.image_editor import AcceptBlobs

from . import images
from .limits import MAX_LAYERS, MAX_UPLOAD_BYTES

MAX_PENDING_PICTURES = 256  # editor uploads held for a request that has not come yet, over all visitors


def user_errors(fn):
    """Serve ``fn`` (a function or a generator) with its ``ValueError`` messages shown to the user as ``gr.Error``."""

    def as_user_error(e: ValueError) -> gr.Error:
        return e if isinstance(e, gr.Error) else gr.Error(str(e))

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ValueError as e:
                raise as_user_error(e) from None

        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            raise as_user_error(e) from None

    return function


def number_text(value) -> str:
    """A number as a person writes it: whole ones in full ("2147483647", not "2.14748e+09"), others short ("1.5")."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_number(label, payload, minimum=None, maximum=None, whole: bool = False) -> None:
    """Refuse a value that is not a number, not whole where ``whole``, or out of range, naming the input ("Seed must
    be ≥ 0, got -5"). The app's one check of a number a visitor or an API caller sends."""
    if payload is None:
        return
    if isinstance(payload, bool) or not isinstance(payload, (int, float)):
        raise gr.Error(f"{label} must be a number, got {payload!r}")
    if not math.isfinite(payload):
        raise gr.Error(f"{label} must be a number, got {payload}")
    if whole and not float(payload).is_integer():
        raise gr.Error(f"{label} must be a whole number, got {number_text(payload)}")
    if minimum is not None and payload < minimum:
        raise gr.Error(f"{label} must be ≥ {number_text(minimum)}, got {number_text(payload)}")
    if maximum is not None and payload > maximum:
        raise gr.Error(f"{label} must be ≤ {number_text(maximum)}, got {number_text(payload)}")


def checked(component, payload):
    """``payload`` checked by ``check_number`` (whole when the component steps by whole numbers), as an int then."""
    whole = float(component.step).is_integer()
    check_number(component.label, payload, component.minimum, component.maximum, whole)
    return payload if payload is None or not whole else int(payload)


class Seed(gr.Number):
    """A seed box: a bad value is answered with a message naming the box; an empty box means a new random seed."""

    is_template = True

    def preprocess(self, payload):
        if payload is None:
            return random.randint(int(self.minimum), int(self.maximum))
        return super().preprocess(checked(self, payload))


class Slider(gr.Slider):
    """``gr.Slider`` that answers a bad or missing value with a message naming the input, and gives whole numbers as
    ints. (The page's script keeps a visitor's typed value within the range, as the slider does when the box is
    left; ``page.JS``.)"""

    is_template = True

    def preprocess(self, payload):
        if payload is None:
            low, high = number_text(self.minimum), number_text(self.maximum)
            raise gr.Error(f"{self.label} is empty: give a number from {low} to {high}")
        return super().preprocess(checked(self, payload))


def check_files(*files) -> None:
    """Refuse, with the app's message, any uploaded part that is not an image or is too large to decode."""
    for file in files:
        if file is not None and getattr(file, "path", None):
            try:
                images.check_upload(file.path)
            except ValueError as e:
                raise gr.Error(str(e)) from None


class Picture(gr.Image):
    """An image input that refuses non-images and oversized images with a clear message, before decoding."""

    is_template = True

    def preprocess(self, payload):
        check_files(payload)
        return super().preprocess(payload)


def check_blobs(*blobs) -> None:
    """``check_files`` for the bytes the image editor uploads on its own (``accept_blobs``)."""
    for blob in blobs:
        if blob is not None:
            if len(blob) > MAX_UPLOAD_BYTES:
                raise gr.Error(f"the picture is larger than the limit of {MAX_UPLOAD_BYTES // 2**20} MB")
            try:
                images.check_upload(BytesIO(blob))
            except ValueError as e:
                raise gr.Error(str(e)) from None


class Canvas(gr.ImageEditor):
    """An image editor input with the same checks on every picture it is sent, as files or as the blobs the browser
    uploads beside the request, and at most ``MAX_LAYERS`` layers."""

    is_template = True

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.id is not None:
            cached = self.blob_storage.get(payload.id)
            if cached is not None:
                if len(cached.layers) > MAX_LAYERS:
                    self.blob_storage.pop(payload.id, None)
                    raise gr.Error(f"the picture has {len(cached.layers)} layers; the limit is {MAX_LAYERS}")
                try:
                    check_blobs(cached.background, cached.composite, *cached.layers)
                except gr.Error:
                    self.blob_storage.pop(payload.id, None)
                    raise
        if len(payload.layers) > MAX_LAYERS:
            raise gr.Error(f"the picture has {len(payload.layers)} layers; the limit is {MAX_LAYERS}")
        check_files(payload.background, payload.composite, *payload.layers)
        return super().preprocess(payload)

    @server
    def accept_blobs(self, data: AcceptBlobs):
        """The editor's own upload of a picture: refused before it is stored when it is a layer beyond
        ``MAX_LAYERS`` (an index chosen by the caller would otherwise grow a list) or larger than the upload limit."""
        index = data.data.get("index")
        if data.data.get("type") == "layer" and index not in (None, "null") and not str(index).isdigit():
            raise gr.Error(f"a layer's index must be a whole number, got {index!r}")
        if data.data.get("type") == "layer" and index not in (None, "null") and int(index) >= MAX_LAYERS:
            raise gr.Error(f"the limit is {MAX_LAYERS} layer")
        if data.files and len(data.files[0][1]) > MAX_UPLOAD_BYTES:
            raise gr.Error(f"the picture is larger than the limit of {MAX_UPLOAD_BYTES // 2**20} MB")
        # pictures sent for a request that never came: forget the oldest
        while data.data.get("id") not in self.blob_storage and len(self.blob_storage) >= MAX_PENDING_PICTURES:
            self.blob_storage.pop(next(iter(self.blob_storage)))
        return super().accept_blobs(data)
