"""The Gradio Space (``app.py``) in pieces: what it computes, its handlers and its UI parts.

- ``limits``: every choice and limit a request may take (written once; the UI and the checks both read it).
- ``registry``: the models offered, loaded on first use with a lock per model; a failed load is remembered.
- ``paper``: the paper's own models on the Hub, listed where they can answer, probed in the background.
- ``costs``: a reverse step's measured cost per model, and requests sized to it (default ≤ 15 s, at most ~60 s).
- ``images``: user pictures in (uploads, sketches, masks) and pictures out (grids, GIFs, the app's own files).
- ``chains``: streamed reverse chains — sampling, a picture through noise and back (SDEdit), inpainting.
- ``views``: the forward process, the schedule, one posterior step and the variational bound.
- ``figures``: the paper's figures 7 (chains from one shared x_t) and 8 (interpolation), with ``figures_tab``.
- ``traffic``: the per-client rate limit of the quick endpoints.
- ``components``: the app's inputs, which check every number and file they are sent, once, with the field's name.
- ``texts``: what the page says that depends on the chosen model (digits, garments, pictures).
- ``outputs``: what a reverse chain's events show, from the first streamed update to the finished run.
- ``handlers``: the app's events, over the modules above; ``layout``: the UI parts ``app.py`` assembles; ``page``:
  the page's own styles and script.

Errors meant for the user are ``ValueError``s; the handlers show them as ``gr.Error``.
"""
