"""Does a class-conditional model draw the class asked for, by judges other than the one evaluate uses?

Reads the guidance sets that ``python -m ddpm_hf.evaluate --guidance_scales ... --samples_dir DIR`` saved
(``guidance-w<w>.npy``: ``per_class`` images of class 0, then of class 1, ...) and scores each with three judges,
side by side:
- the shipped classifier (``models/<dataset>-classifier``), as evaluate does;
- a second classifier of the same architecture trained here from another seed (``--second_seed``; ~2.5 min on one
  thread, cached under ``--cache``);
- a 3-nearest-neighbour vote on raw pixels against the 60,000 training images (no network at all).
For each w it prints agreement (share judged to be the class asked for), the confident share of both CNNs (p ≥ 0.9)
and the real reference (``per_class`` training images per class scored the same way, kNN on the test split). Usage:
    python bench/bench_guidance_judges.py --samples DIR [--dataset mnist] [--second_seed 1]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_hf.data import load_dataset
from ddpm_hf.evaluation.classifier import load_classifier, predict, train_classifier


def knn_labels(images: torch.Tensor, train_images: torch.Tensor, train_labels: torch.Tensor, k: int = 3) -> np.ndarray:
    """The majority label of the k nearest training images in pixel space (Euclidean, pixels in [0, 1])."""
    bank = train_images.flatten(1).float() / 255
    bank_sq = (bank * bank).sum(1)
    out = []
    for start in range(0, len(images), 250):
        x = images[start : start + 250].flatten(1).float() / 255
        distances = bank_sq[None] - 2 * x @ bank.T  # ‖x‖² is the same for every candidate
        nearest = distances.topk(k, largest=False).indices
        out.append(torch.mode(train_labels[nearest], dim=1).values)
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", required=True, help="the --samples_dir of python -m ddpm_hf.evaluate")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--second_seed", type=int, default=1)
    parser.add_argument("--cache", default="runs/judges")
    args = parser.parse_args()

    second_dir = Path(args.cache, f"{args.dataset}-classifier-seed{args.second_seed}")
    if not (second_dir / "model.safetensors").is_file():
        start = time.perf_counter()
        train_classifier(args.dataset, seed=args.second_seed, log_every=0).save_pretrained(second_dir)
        print(f"second classifier (seed {args.second_seed}) trained in {time.perf_counter() - start:.0f} s")
    judges = {
        "shipped CNN": load_classifier(f"models/{args.dataset}-classifier"),
        "second CNN": load_classifier(second_dir),
    }
    train, test = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    classes = len(train.class_names)

    def score(images: torch.Tensor, wanted: np.ndarray, bank: tuple) -> list[str]:
        cells = []
        for model in judges.values():
            probs, _ = predict(model, images)
            cells.append(f"{(probs.argmax(1) == wanted).mean():.3f} / {(probs.max(1) >= 0.9).mean():.3f}")
        cells.append(f"{(knn_labels(images, *bank) == wanted).mean():.3f}")
        return cells

    print(f"| guidance w | {' | '.join(f'{n}: agreement / confident' for n in judges)} | 3-NN pixels: agreement |")
    print("|---" * (len(judges) + 2) + "|")
    files = sorted(Path(args.samples).glob("guidance-w*.npy"), key=lambda p: float(p.stem.removeprefix("guidance-w")))
    per_class = None
    for path in files:
        images = torch.from_numpy(np.load(path))
        per_class = len(images) // classes
        wanted = np.repeat(np.arange(classes), per_class)
        cells = score(images, wanted, (train.images, train.labels))
        print(f"| {path.stem.removeprefix('guidance-w')} | {' | '.join(cells)} |")
    if per_class:
        order = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(0))
        picked = torch.cat([order[train.labels[order] == k][:per_class] for k in range(classes)])
        cells = score(train.images[picked], train.labels[picked].numpy(), (test.images, test.labels))
        print(f"| real training images | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
