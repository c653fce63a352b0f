"""Gradio pieces the Space's inputs need: one error adapter, and inputs that answer bad values with the app's own
message (an API caller's wrong type, a file that is not an image, an image too large to decode)."""

import functools
import inspect

import gradio as gr

from . import images


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


def check_number(label, payload) -> None:
    if payload is not None and (isinstance(payload, bool) or not isinstance(payload, (int, float))):
        raise gr.Error(f"{label} must be a number, got {payload!r}")


class Number(gr.Number):
    """``gr.Number`` that answers an API caller's wrong type with a message naming the input."""

    is_template = True

    def preprocess(self, payload):
        check_number(self.label, payload)
        return super().preprocess(payload)


class Slider(gr.Slider):
    """``gr.Slider`` that answers an API caller's wrong type with a message naming the input."""

    is_template = True

    def preprocess(self, payload):
        check_number(self.label, payload)
        return super().preprocess(payload)


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


class Canvas(gr.ImageEditor):
    """An image editor input with the same checks on every layer."""

    is_template = True

    def preprocess(self, payload):
        if payload is not None:
            check_files(payload.background, payload.composite, *payload.layers)
        return super().preprocess(payload)
