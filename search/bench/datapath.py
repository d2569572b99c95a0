"""Benchmark 2: one training epoch of the grid winner through the service's data path (Batches
over resident uint8 tensors, normalised by the network's first layer) against torchvision's FashionMNIST +
ToTensor/Normalize + DataLoader; and a CIFAR-10 augmentation epoch as batched tensor ops
against torchvision's per-sample transforms."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from search.bench import augment_ref
from search.bench.common import Bench, bar_plot, tmpdir, write_idx_layout
from spaces.fashion_space import GRID_WINNER
from trainables.augment import augment
from trainables.model import NetConfig, Normalize, build_model, make_optimizer
from trainables.train import Batches, input_norm

CIFAR_FILE = "cifar10/cifar10-subset.npz"


def _train_epoch(cfg: NetConfig, batches, input_shape, seed: int, norm: Normalize | None = None) -> float:
    torch.manual_seed(seed)
    model = build_model(cfg, input_shape, 10, norm=norm)
    opt = make_optimizer(cfg, model)
    model.train()
    started = time.perf_counter()
    for xb, yb in batches:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - started


def fashion_epochs(bench: Bench) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.set_num_threads(1)
    cfg = NetConfig.from_flat(GRID_WINNER)
    ds = bench.subset(bench.sizes.datapath_train)
    data = ds.for_final()
    root = write_idx_layout(ds, tmpdir("hpsearch-bench-tv-"))
    generator = torch.Generator().manual_seed(bench.seed)
    service = Batches(data.train, torch.device("cpu"))
    service_s = _train_epoch(cfg, service.shuffled(cfg.batch_size, generator), data.input_shape, bench.seed,
                             input_norm(data))
    tv = datasets.FashionMNIST(str(root), train=True, download=False, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]))
    loader = DataLoader(tv, batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    tv_s = _train_epoch(cfg, loader, data.input_shape, bench.seed)
    # The data side alone: one pass producing batches, no model.
    t = time.perf_counter()
    for _ in service.shuffled(cfg.batch_size, generator):
        pass
    service_data_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in loader:
        pass
    tv_data_s = time.perf_counter() - t
    return {"train_images": len(data.train), "service_epoch_s": service_s, "torchvision_epoch_s": tv_s,
            "speedup": tv_s / service_s, "target_speedup": 1.3, "target_met": tv_s / service_s >= 1.3,
            "service_data_only_s": service_data_s, "torchvision_data_only_s": tv_data_s,
            "torchvision_root": str(root), "loader": "DataLoader(batch 64, shuffle, num_workers=0: one CPU per trial)"}


def cifar_augmentation(bench: Bench, data_root: Path) -> dict:
    """Seconds per epoch to produce augmented, normalised batches (no model: the augmentation
    cost alone), plus an un-augmented pass of each for reference."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    torch.set_num_threads(1)
    npz = np.load(data_root / CIFAR_FILE)
    x = npz["x_train"][: bench.sizes.augment_images]
    y = npz["y_train"][: bench.sizes.augment_images]
    mean = tuple(float(m) for m in x.mean(axis=(0, 1, 2)) / 255)
    std = tuple(float(s) for s in x.std(axis=(0, 1, 2)) / 255)
    batch = 128
    per_sample = transforms.Compose([
        transforms.RandomRotation(15), transforms.RandomResizedCrop(32, scale=(0.8, 1.0)),
        transforms.RandomAffine(0, translate=(0.1, 0.1)), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std)])
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    class Pil(Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(x[i])), int(y[i])

    def loader_pass(transform) -> float:
        t = time.perf_counter()
        for _ in DataLoader(Pil(transform), batch_size=batch, shuffle=True, num_workers=0):
            pass
        return time.perf_counter() - t

    resident = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(bench.seed)

    labels = torch.zeros(batch, dtype=torch.long)  # augmentation without CutMix ignores them

    def batched_pass(with_aug: bool) -> float:
        t = time.perf_counter()
        order = torch.randperm(len(resident), generator=generator)
        for start in range(0, len(order), batch):
            xb = (resident[order[start:start + batch]].float() / 255 - m) / s
            if with_aug:
                xb = augment(xb, labels[:len(xb)], augment_ref.BENCH_CONFIG, generator)[0]
        return time.perf_counter() - t

    tv_aug, tv_plain = loader_pass(per_sample), loader_pass(plain)
    b_aug, b_plain = batched_pass(True), batched_pass(False)
    return {"images": len(y), "batch": batch, "augmentations": augment_ref.BENCH_AUGMENT,
            "batched_function": "trainables.augment.augment",
            "torchvision_per_sample_epoch_s": tv_aug, "torchvision_plain_epoch_s": tv_plain,
            "batched_epoch_s": b_aug, "batched_plain_epoch_s": b_plain,
            "torchvision_aug_cost_s": tv_aug - tv_plain, "batched_aug_cost_s": b_aug - b_plain,
            "speedup": tv_aug / b_aug}


def run(bench: Bench, data_root: Path) -> dict:
    fashion = fashion_epochs(bench)
    augmentation = cifar_augmentation(bench, data_root)
    result = {"fashion": fashion, "cifar_augmentation": augmentation}
    bench.write("datapath", result)
    plt_path = bench.out / "datapath.png"
    bar_plot(plt_path, "Training epoch (s): data path", ["hpsearch Batches", "torchvision DataLoader",
                                                          "CIFAR aug batched", "CIFAR aug per-sample"],
             [fashion["service_epoch_s"], fashion["torchvision_epoch_s"], augmentation["batched_epoch_s"],
              augmentation["torchvision_per_sample_epoch_s"]], "seconds per epoch")
    return result
