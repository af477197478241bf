"""Image sets, their seeded cut, and the model transforms (PIL + numpy, no torchvision).

An image set is a list of (id, label, image bytes or pixels) with a content fingerprint: the sha256 of
every image's hash and label, so the feature cache is keyed by what the images are, not where they lie.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_ENV, DATA_ENV = "W2S_IMAGENET_DIR", "W2S_DATA_DIR"
CIFAR_TAR = "cifar10/cifar10-test-jpeg.tar"
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


class DataMissing(RuntimeError):
    """The data is not on this machine; raised before any compute."""


@dataclass
class ImageSet:
    name: str
    ids: list[str]
    labels: np.ndarray
    hashes: list[str]
    n_classes: int
    _load: callable            # index -> PIL image (RGB)

    def image(self, i: int) -> Image.Image:
        return self._load(i)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for x, y in zip(self.hashes, self.labels):
            h.update(f"{x}:{int(y)};".encode())
        return h.hexdigest()

    def subset(self, idx: np.ndarray) -> "ImageSet":
        idx = [int(i) for i in idx]
        return ImageSet(self.name, [self.ids[i] for i in idx], self.labels[idx], [self.hashes[i] for i in idx],
                        self.n_classes, lambda j, _l=self._load: _l(idx[j]))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:32]


def data_root(dataset: str, data_dir: str | None) -> Path:
    env = IMAGENET_ENV if dataset == "imagenet_val" else DATA_ENV
    root = data_dir or os.environ.get(env)
    if not root:
        raise DataMissing(f"{dataset}: no data folder: set vision.data_dir in the manifest or ${env}"
                          + (" (the folder holding ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz)"
                             if dataset == "imagenet_val" else " (the shared data folder, e.g. ../shared/data)"))
    return Path(root).expanduser()


def check(dataset: str, data_dir: str | None) -> str | None:
    """Why the data cannot be read here (before compute), or None."""
    if dataset == "synthetic":
        return None
    try:
        root = data_root(dataset, data_dir)
    except DataMissing as e:
        return str(e)
    if dataset == "cifar10":
        if not ((root / CIFAR_TAR).exists() or (root / "cifar10" / "test").is_dir()):
            return f"cifar10: neither {root / CIFAR_TAR} nor {root / 'cifar10/test/'} exists (vision.data_dir / ${DATA_ENV})"
    elif dataset == "imagenet_val":
        need = ["ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_val.tar"]
        if not root.is_dir() or not all((root / f).exists() or (root / "val").is_dir() for f in need):
            return (f"imagenet_val: {root} lacks {' and '.join(need)} (vision.data_dir / ${IMAGENET_ENV}); "
                    f"ImageNet cannot be downloaded by the harness")
    return None


def open_set(dataset: str, data_dir: str | None, n_classes: int | None = None, n_synthetic: int = 600) -> ImageSet:
    if dataset == "synthetic":
        return synthetic(n_synthetic, n_classes or 10)
    problem = check(dataset, data_dir)
    if problem:
        raise DataMissing(problem)
    root = data_root(dataset, data_dir)
    return cifar10(root) if dataset == "cifar10" else imagenet_val(root)


def cifar10(root: Path) -> ImageSet:
    """test/<class>/<nnnn>.jpg, from the shared tar (read into memory: 15 MB) or an unpacked folder.
    Classes in sorted order, which is CIFAR-10's own label order."""
    files: dict[str, bytes] = {}
    if (root / CIFAR_TAR).exists():
        with tarfile.open(root / CIFAR_TAR) as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                    files[m.name.lstrip("./")] = tar.extractfile(m).read()
    else:
        base = root / "cifar10"
        for p in sorted((base / "test").rglob("*")):
            if p.is_file():
                files[p.relative_to(base).as_posix()] = p.read_bytes()
    ids = sorted(files)
    classes = sorted({i.split("/")[-2] for i in ids})
    labels = np.array([classes.index(i.split("/")[-2]) for i in ids])
    blobs = [files[i] for i in ids]
    return ImageSet("cifar10", ids, labels, [_sha(b) for b in blobs], len(classes),
                    lambda j: Image.open(io.BytesIO(blobs[j])).convert("RGB"))


def imagenet_val(root: Path) -> ImageSet:
    """The reference's torchvision.datasets.ImageNet(split="val"): same file order and labels."""
    from torchvision.datasets import ImageNet

    ds = ImageNet(str(root), split="val")
    paths = [p for p, _ in ds.samples]
    return ImageSet("imagenet_val", [Path(p).name for p in paths], np.array(ds.targets),
                    [_sha(Path(p).read_bytes()) for p in paths], 1000, lambda j: Image.open(paths[j]).convert("RGB"))


def synthetic(n: int, n_classes: int, size: int = 32, seed: int = 1234) -> ImageSet:
    """Class = a colour and a stripe frequency, plus noise: learnable, not trivial. In memory, for tests."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    colours = rng.uniform(40, 215, (n_classes, 3))
    yy = np.arange(size)[:, None] * np.ones((1, size))
    imgs = []
    for y in labels:
        stripes = 40 * np.sin(yy * (0.3 + 0.25 * y) + rng.uniform(0, 6))
        img = colours[y] + stripes[..., None] + rng.normal(0, 35, (size, size, 3))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return ImageSet(f"synthetic-{n}-{n_classes}-{seed}", [f"syn/{i:05d}" for i in range(n)], labels,
                    [_sha(a.tobytes()) for a in imgs], n_classes, lambda j: Image.fromarray(imgs[j]))


def cut(n: int, seed: int, n_weak_train: int, n_train: int, n_test: int | None) -> dict[str, np.ndarray]:
    """The reference's cut: numpy default_rng(seed).permutation; first n_train = probe-train, rest = test.
    A trained supervisor's weak-train part comes first, disjoint from both."""
    perm = np.random.default_rng(seed).permutation(n)
    a, b = n_weak_train, n_weak_train + n_train
    if b >= n:
        raise ValueError(f"n_weak_train + n_train = {b} leaves no test images out of {n}")
    return {"weak_train": perm[:a], "train": perm[a:b], "test": perm[b:b + n_test] if n_test else perm[b:]}


def transform_id(transform: str, size: int) -> dict:
    return {"name": transform, "size": size, "resample": "bilinear",
            **({"resize": round(size * 256 / 224), "norm": "imagenet_mean_std"} if transform == "imagenet_crop" else
               {"norm": "(p-127)/128"} if transform == "effnet_resize" else {"norm": "(p/255-0.5)/0.5"})}


def to_tensor(img: Image.Image, transform: str, size: int) -> torch.Tensor:
    if transform == "imagenet_crop":
        # = torchvision Resize(256) + CenterCrop(224) on PIL images (both call PIL's bilinear resize)
        w, h = img.size
        short = round(size * 256 / 224)
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        img = img.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        a = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        a = (a - IMAGENET_MEAN) / IMAGENET_STD
    else:
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        a = np.asarray(img, dtype=np.float32)
        a = (a - 127.0) / 128.0 if transform == "effnet_resize" else (a / 255.0 - 0.5) / 0.5
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))


class _Torch(torch.utils.data.Dataset):
    def __init__(self, ds: ImageSet, transform: str, size: int):
        self.ds, self.transform, self.size = ds, transform, size

    def __len__(self):
        return len(self.ds.ids)

    def __getitem__(self, i):
        return to_tensor(self.ds.image(i), self.transform, self.size)


def batches(ds: ImageSet, transform: str, size: int, batch: int, workers: int = 0):
    """Unshuffled batches of transformed images (decoding in `workers` processes on GPU machines)."""
    return torch.utils.data.DataLoader(_Torch(ds, transform, size), batch_size=batch, shuffle=False,
                                       num_workers=workers)


def tensor_of(ds: ImageSet, transform: str, size: int) -> torch.Tensor:
    return torch.stack([to_tensor(ds.image(i), transform, size) for i in range(len(ds.ids))])
