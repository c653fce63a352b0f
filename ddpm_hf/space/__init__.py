"""What the Gradio Space (``app.py``) computes, without any UI: models, requests, pictures and tables.

- ``limits``: every choice and limit a request may take (written once; the UI and the checks both read it).
- ``registry``: the models offered, loaded on first use with a lock per model; a failed load is remembered.
- ``images``: user pictures in (uploads, sketches, masks) and pictures out (grids, GIFs, the app's own files).
- ``chains``: streamed reverse chains — sampling, a picture through noise and back (SDEdit), inpainting.
- ``views``: the forward process, the schedule, one posterior step and the variational bound.
- ``traffic``: the per-client rate limit of the quick endpoints.

Every function validates its inputs and raises ``ValueError`` with a message meant for the user.
"""
