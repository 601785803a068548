"""The plain PyTorch loop that ``benchmarks/step_overhead.py`` holds cg-train against.

What a user writes after torchvision's references/classification: ``ImageFolder``
with Resize + CenterCrop + ToTensor + Normalize (cg-train's transform when
``--random-augmentations`` is off), a ``DataLoader`` with shuffling and workers
(pinned memory on a GPU), torchvision's model, SGD, cross-entropy; nothing else.
Prints one JSON line: the images and seconds of each training pass, timed from
``iter(loader)`` (worker start-up included) to the last step's completion,
as cg-train's ``epoch E: trained on N samples, ... S s`` line times it.

``--compute-only``: the same steps (as many batches of the same sizes) on one batch of
random images held in memory, no loader at all: what the plain loop's step costs without
its loader (on a noisy machine a run with a loader can still come out above it).
``--keep-freed-memory``: glibc keeps freed blocks for the next step, as cg-train does on a CPU by
default (``cg_train.engine.fast_path.keep_freed_memory``); with ``--compute-only`` it is the bare
step at its cheapest with the default kernels: no engine and no loader can train faster.

    python benchmarks/plain_loop.py DATA_DIR --arch resnet18 --image-size 32 --batch-size 64 --workers 2
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, models
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compute-only", action="store_true", help="no loader: one in-memory batch, reused")
    parser.add_argument("--keep-freed-memory", action="store_true", help="malloc keeps freed blocks (as cg-train)")
    args = parser.parse_args()
    if args.keep_freed_memory:
        from cg_train.engine.fast_path import keep_freed_memory

        keep_freed_memory()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    resize = round(args.image_size * 256 / 224)  # cg-train's default resize for a custom crop
    transform = T.Compose([T.Resize(resize), T.CenterCrop(args.image_size), T.ToTensor(), T.Normalize(MEAN, STD)])
    train_set = datasets.ImageFolder(f"{args.data}/train", transform)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda")
    if args.compute_only:  # the loader's batch sizes, one random batch on the device
        sizes = [min(args.batch_size, len(train_set) - start) for start in range(0, len(train_set), args.batch_size)]
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        targets = torch.randint(0, len(train_set.classes), (args.batch_size,), device=device)
        loader = [(images[:n], targets[:n]) for n in sizes]
    model = getattr(models, args.arch)(weights=None, num_classes=len(train_set.classes)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    passes = []
    for epoch in range(args.epochs):
        model.train()
        started = time.perf_counter()
        count, loss_sum = 0, torch.zeros((), device=device)
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(targets)
            count += len(targets)
        mean_loss = (loss_sum / count).item()  # waits for the last step
        seconds = time.perf_counter() - started
        passes.append({"epoch": epoch, "images": count, "seconds": seconds, "loss": mean_loss})
    print(json.dumps({"passes": passes}), flush=True)


if __name__ == "__main__":
    main()
