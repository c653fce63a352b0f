"""UNet presets for ε_θ: diffusers' ``UNet2DModel`` sized for small images on a CPU."""

import json
import os

from diffusers import UNet2DModel

# Each preset: block widths per resolution level and whether the lowest level has self-attention.
# "small" is the default 28x28 model: 2.7M parameters, ~38 ms per forward of 16 images on 2 cores.
PRESETS: dict[str, dict] = {
    "tiny": {"block_out_channels": (8, 16, 16), "attention": False, "norm_num_groups": 4},
    "small": {"block_out_channels": (32, 64, 128), "attention": True, "norm_num_groups": 8},
}


def build_unet(preset: str | None, resolution: int, channels: int, model_config: str | os.PathLike | None = None):
    """A fresh ``UNet2DModel`` from a preset name or a UNet2DModel JSON config file.

    Args:
        preset: a key of ``PRESETS`` (ignored when ``model_config`` is given).
        resolution: image side; each of the UNet's levels but the last halves it, so it must divide evenly.
        channels: image channels (1 grayscale, 3 RGB).
        model_config: path to a JSON dict of ``UNet2DModel`` arguments.

    Returns:
        The model, in training mode.
    """
    if model_config is not None:
        try:
            with open(model_config) as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--model_config {model_config}: cannot read a JSON UNet2DModel config ({e})") from None
        config = {**config, "sample_size": resolution, "in_channels": channels, "out_channels": channels}
    else:
        if preset not in PRESETS:
            raise ValueError(f"--model_preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        p = PRESETS[preset]
        levels = len(p["block_out_channels"])
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if p["attention"]:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        config = {
            "sample_size": resolution,
            "in_channels": channels,
            "out_channels": channels,
            "block_out_channels": p["block_out_channels"],
            "down_block_types": down,
            "up_block_types": up,
            "layers_per_block": 1,
            "norm_num_groups": p["norm_num_groups"],
            "attention_head_dim": 8,
        }
    check_resolution(resolution, len(config.get("block_out_channels", (0,) * 4)))
    try:
        return UNet2DModel(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"UNet2DModel rejects the config: {e}") from None


def check_resolution(resolution: int, levels: int) -> None:
    """Refuse a resolution that the UNet's ``levels - 1`` halvings cannot take evenly (28 takes 3 levels, not 4)."""
    factor = 2 ** (levels - 1)
    if resolution < factor or resolution % factor:
        fits = [n for n in range(1, 7) if resolution % 2 ** (n - 1) == 0 and resolution >= 2 ** (n - 1)]
        raise ValueError(
            f"--resolution {resolution} cannot pass through a {levels}-level UNet (needs a multiple of {factor});"
            f" a UNet with at most {max(fits)} levels fits it"
        )
