"""Class-conditional ε-networks and classifier-free guidance (Ho & Salimans 2022).

A conditional model here is a diffusers ``UNet2DModel`` with ``num_class_embeds = K + 1``: rows 0..K−1 embed the K
classes and row K is ∅, "no class", which the model was trained on for a fraction of the images (label dropout).
The class embedding is added to the timestep embedding, so a model whose embedding is all zeros is exactly the
unconditional one (``add_class_embedding``: how training starts from an unconditional folder).

Guidance mixes the two predictions of one network (Ho & Salimans 2022, eq. 6, with w = 1 + their w):

    ε̃(x_t, y) = ε(x_t, ∅) + w · (ε(x_t, y) − ε(x_t, ∅))

w = 0 is the unconditional model, w = 1 the plain conditional one, w > 1 pushes towards what makes y likely. For
w ∉ {0, 1} both terms come from one forward of a doubled batch ([x, x] with labels [y, ∅]), not two passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import UNet2DModel

from .validate import check_float

Labels = Sequence[int | None] | torch.Tensor | None
Network = Callable[..., torch.Tensor]  # (x_t, t, class_labels=None) → ε_θ

__all__ = [
    "add_class_embedding",
    "doubles_batch",
    "guided",
    "is_conditional",
    "label_tensor",
    "null_label",
    "num_classes",
]


def is_conditional(unet: UNet2DModel) -> bool:
    """Whether the UNet (or the UNet inside a DDP wrapper) takes class labels (a ``num_class_embeds`` embedding)."""
    config = getattr(getattr(unet, "module", unet), "config", None)  # any ε-network; a diffusers UNet has a config
    return getattr(config, "num_class_embeds", None) is not None


def num_classes(unet: UNet2DModel) -> int:
    """K, the number of classes of a conditional UNet (its embedding has K + 1 rows, the last one ∅); 0 if none."""
    return getattr(unet, "module", unet).config.num_class_embeds - 1 if is_conditional(unet) else 0


def null_label(unet: UNet2DModel) -> int:
    """The index of ∅, "no class": the last row of the class embedding."""
    return num_classes(unet)


def label_tensor(unet: UNet2DModel, class_labels: Labels, batch_size: int) -> torch.Tensor | None:
    """The labels to run ``unet`` with, as int64 on its device: one per image, ``None`` entries (or no labels) as ∅;
    None for an unconditional UNet.

    Raises:
        ValueError: labels for a model without class embeddings, a wrong count, or a class outside 0..K−1.
    """
    if not is_conditional(unet):
        if class_labels is not None:
            raise ValueError("class_labels given, but this model has no class embedding (it is unconditional)")
        return None
    k = num_classes(unet)
    if class_labels is None:
        return torch.full((batch_size,), k, dtype=torch.long, device=unet.device)
    if isinstance(class_labels, torch.Tensor):
        values = class_labels.flatten().tolist()
    elif isinstance(class_labels, (str, bytes)) or not isinstance(class_labels, Sequence):
        raise ValueError(f"class_labels must be a list of class indices (one per image), got {class_labels!r}")  # noqa: TRY004
    else:
        values = list(class_labels)
    if len(values) != batch_size:
        raise ValueError(f"class_labels has {len(values)} entries for {batch_size} images; give one per image")
    bad = [v for v in values if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < k)]
    if bad:
        raise ValueError(f"class_labels must be integers in [0, {k - 1}] or None (no class), got {bad[0]!r}")
    return torch.tensor([k if v is None else v for v in values], dtype=torch.long, device=unet.device)


def check_guidance(guidance_scale: float | None) -> float | None:
    """Validate w: None or a finite number ≥ 0."""
    if guidance_scale is not None:
        check_float("guidance_scale", guidance_scale, 0, 100)
    return guidance_scale


def doubles_batch(labels: torch.Tensor | None, null: int, guidance_scale: float | None) -> bool:
    """Whether guidance needs both predictions, i.e. one forward of the doubled batch [x, x] (``guided``): a
    labelled batch, not all ∅, with w other than None, 0 and 1."""
    return labels is not None and guidance_scale not in (None, 0, 1) and not bool((labels == null).all())


def guided(network: Network, labels: torch.Tensor | None, null: int, guidance_scale: float | None) -> Network:
    """(x_t, t) → ε̃: the network with classifier-free guidance applied.

    Args:
        network: (x_t, t, class_labels) → ε_θ, e.g. from ``ddpm_hf.speed.running``.
        labels: from ``label_tensor``; None for an unconditional model.
        null: the ∅ index (``null_label``).
        guidance_scale: w; None or 1: ε(x, y) in one forward; 0: ε(x, ∅); otherwise one forward of [x, x] with
            labels [y, ∅] mixed as ε(x, ∅) + w (ε(x, y) − ε(x, ∅)).
    """
    if labels is None:
        return lambda x, t: network(x, t)
    if guidance_scale == 0:
        unconditional = torch.full_like(labels, null)
        return lambda x, t: network(x, t, unconditional)
    if not doubles_batch(labels, null, guidance_scale):
        return lambda x, t: network(x, t, labels)
    both = torch.cat([labels, torch.full_like(labels, null)])

    def mix(x: torch.Tensor, t: int) -> torch.Tensor:
        eps_y, eps_null = network(torch.cat([x, x]), t, both).chunk(2)
        return eps_null + guidance_scale * (eps_y - eps_null)

    return mix


def forward(unet: UNet2DModel, x: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """ε_θ(x_t, t[, y]) of any UNet: a conditional one given no labels runs with ∅ (its unconditional model)."""
    if class_labels is None and is_conditional(unet):
        class_labels = torch.full((x.shape[0],), null_label(unet), dtype=torch.long, device=x.device)
    return (unet(x, t) if class_labels is None else unet(x, t, class_labels=class_labels)).sample


def add_class_embedding(unet: UNet2DModel, classes: int) -> UNet2DModel:
    """A copy of an unconditional UNet with a class embedding of ``classes`` + 1 rows (the last ∅), all zeros: it
    computes exactly what ``unet`` computes, for every label, until training moves the embedding."""
    if is_conditional(unet):
        raise ValueError("the model already has a class embedding")
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}  # "_use_default_values" would undo it
    conditional = UNet2DModel.from_config({**config, "num_class_embeds": classes + 1})
    missing, unexpected = conditional.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or set(missing) != {"class_embedding.weight"}:
        raise ValueError(f"cannot add a class embedding: missing {missing}, unexpected {unexpected}")
    torch.nn.init.zeros_(conditional.class_embedding.weight)
    return conditional.to(device=unet.device, dtype=unet.dtype)
