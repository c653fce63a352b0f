"""How good is a trained DDPM (``python -m ddpm_hf.evaluate`` is its command line).

- ``evaluate``: the bound in bits/dim on test images and the quality of samples, judged by a classifier;
- ``classifier``: the small CNN that judges (``python -m ddpm_hf.classifier`` trains one);
- ``metrics``: classifier-FID, Inception Score and confident share;
- ``guidance_table``: a class-conditional model's agreement with the class asked for, per guidance w;
- ``result``: the typed result (``Evaluation``) and its ``eval.json``;
- ``report``: the result as markdown, the README's table and a plot.
"""
