"""Test images of a dataset on the Hub, for a model with no built-in dataset (the paper's CIFAR-10 model).

One parquet file of the dataset repo is downloaded with huggingface_hub (cached in ``HF_HOME`` like the models) and
read with pyarrow; its ``img`` column holds each image's PNG bytes (``struct<bytes, path>``, the layout of the
Hub's image datasets), decoded with PIL. Nothing is unpickled. The first ``COUNT`` images are decoded once per
process.
"""

import io
from functools import cache

import numpy as np
import pyarrow.parquet as pq
import torch
from huggingface_hub import hf_hub_download
from PIL import Image

COUNT = 256  # the range of the image index slider (layout.image_index): 0 to 255


@cache
def hub_test_images(repo_id: str, filename: str, count: int = COUNT) -> torch.Tensor:
    """The first ``count`` images of ``filename`` in the dataset repo ``repo_id``, as RGB.

    Args:
        repo_id: a dataset repo on the Hub, e.g. "uoft-cs/cifar10".
        filename: a parquet file in it with an ``img`` column of ``struct<bytes: binary, path: string>``.
        count: how many images to decode, from the first; fewer if the file has fewer.

    Returns:
        uint8 tensor (N, 3, H, W).

    Raises:
        whatever huggingface_hub raises when the file cannot be fetched, pyarrow when it is not such a parquet
        file, PIL when an image cannot be decoded; a failure is not cached, so the next call tries again.
    """
    path = hf_hub_download(repo_id, filename, repo_type="dataset")
    column = pq.read_table(path, columns=["img"]).column("img").slice(0, count).combine_chunks()
    pixels = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in column.field("bytes").to_pylist()]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
