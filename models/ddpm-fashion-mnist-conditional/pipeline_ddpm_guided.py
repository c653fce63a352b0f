"""``DDPMGuidedPipeline``: a class-conditional DDPM pipeline with classifier-free guidance (Ho & Salimans 2022).

This file is self-contained (diffusers and torch only): a conditional pipeline folder carries a copy of it and names
it in ``model_index.json``, so stock diffusers loads the folder with
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``; ``ddpm_hf.load_pipeline`` uses this module
from the installed package instead and runs no shipped code.

The UNet is a diffusers ``UNet2DModel`` with ``num_class_embeds = K + 1``; the last class index, K, is ∅ ("no
class"). Each step predicts ε̃ = ε(x_t, ∅) + w · (ε(x_t, y) − ε(x_t, ∅)) from one forward of the doubled batch
[x_t, x_t] with labels [y, ∅], then takes the scheduler's step with ε̃.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor


class DDPMGuidedPipeline(DiffusionPipeline):
    """Class-conditional DDPM sampling with classifier-free guidance.

    Args:
        unet: a ``UNet2DModel`` with ``num_class_embeds`` = number of classes + 1 (the last index is ∅).
        scheduler: a DDPM-family scheduler (``DDPMHFScheduler``, ``DDPMScheduler``, ``DDIMScheduler``, ...).
        class_names: the name of each class index, e.g. ["0", ..., "9"].
        guidance_scale: the default guidance w of ``__call__``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self, unet: UNet2DModel, scheduler, class_names: list[str] | None = None, guidance_scale: float = 1.0
    ):
        super().__init__()
        if unet.config.num_class_embeds is None:
            raise ValueError("DDPMGuidedPipeline needs a UNet with a class embedding (num_class_embeds)")
        self.register_modules(unet=unet, scheduler=scheduler)
        classes = unet.config.num_class_embeds - 1
        names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
        if len(names) != classes:
            raise ValueError(f"class_names has {len(names)} names for the UNet's {classes} classes")
        self.register_to_config(class_names=names, guidance_scale=float(guidance_scale))

    @property
    def null_label(self) -> int:
        """The index of ∅, "no class"."""
        return self.unet.config.num_class_embeds - 1

    def labels(self, class_labels, batch_size: int) -> torch.Tensor:
        """One label per image from class indices or names (None: ∅); a single value is repeated."""
        if class_labels is None or isinstance(class_labels, (int, str)):
            class_labels = [class_labels] * batch_size
        names = self.config.class_names
        out = []
        for label in class_labels:
            if label is None:
                out.append(self.null_label)
            elif isinstance(label, str) and label in names:
                out.append(names.index(label))
            elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < self.null_label:
                out.append(label)
            else:
                raise ValueError(
                    f"class label {label!r} is neither a class index in [0, {self.null_label - 1}] nor one of {names}"
                )
        if len(out) != batch_size:
            raise ValueError(f"got {len(out)} class labels for batch_size={batch_size}")
        return torch.tensor(out, device=self.device, dtype=torch.long)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        class_labels=None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Sample images of the given classes.

        Args:
            batch_size: number of images (default: one per label, or 1).
            class_labels: a class index or name per image (None entries: unconditional); one value for all.
            guidance_scale: w; None takes the folder's default. 0 samples unconditionally, 1 plain conditionally.
            generator: a torch generator, or one per image.
            num_inference_steps: steps of the reverse chain.
            output_type: "pil", "np" or "pt".
            return_dict: return an ``ImagePipelineOutput`` (else a tuple).
        """
        if batch_size is None:
            batch_size = len(class_labels) if isinstance(class_labels, (list, tuple)) else 1
        labels = self.labels(class_labels, batch_size)
        w = self.config.guidance_scale if guidance_scale is None else float(guidance_scale)
        if w < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {w}")
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, self.unet.config.in_channels, *size)
        image = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        both = torch.cat([labels, torch.full_like(labels, self.null_label)])
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(self.scheduler.timesteps):
            eps_y, eps_null = self.unet(torch.cat([image, image]), t, class_labels=both).sample.chunk(2)
            eps = eps_null + w * (eps_y - eps_null)
            image = self.scheduler.step(eps, t, image, generator=generator).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return ImagePipelineOutput(images=image) if return_dict else (image,)
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
        if output_type == "pil":
            image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)
