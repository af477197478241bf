"""Vision models: a registry with pinned weights, loaders and the small supervisor CNN.

Every model is wrapped to expose `features(x) -> (B, d)` (strong: the probe's input) and/or
`logits(x) -> (B, C)` (weak: its soft labels are softmax(logits)). torchvision and torch.hub are imported
only when AlexNet or DINO is loaded (the paper tier, on a GPU machine): torchvision does not import next
to the CPU torch of the offline tier (ENVIRONMENT.md §8).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.store import sha256_file

WEIGHTS_ENV = "W2S_VISION_WEIGHTS"
DINO_REPO = "facebookresearch/dino"
# A commit of facebookresearch/dino whose hubconf.py defines dino_resnet50/dino_vitb8 exactly as the reference
# loaded them from :main (Q22: never a moving branch). Its checkpoints carry no hash in their names, so their
# sha256 is recorded at run time (metrics.weights_sha256) and verified when the manifest pins one.
DINO_COMMIT = "144f70567a6ff853b9ea44503ba37fdcf8ca41fb"


@dataclass(frozen=True)
class Spec:
    kind: str                 # pretrained (fixed weights) | trained (weak, trained here) | random (tests)
    role: str                 # weak | strong | both
    transform: str            # imagenet_crop | effnet_resize | raw (vision.data.to_tensor)
    image_size: int
    weights: str | None = None
    sha256: str | None = None
    hub_commit: str | None = None
    n_classes: int | None = None
    epochs: int | None = None
    lr: float | None = None
    width: int | None = None


REGISTRY: dict[str, Spec] = {
    # torchvision's file alexnet-owt-7be5be79.pth: torch.hub checks the sha256 prefix in the name (check_hash)
    "alexnet": Spec("pretrained", "weak", "imagenet_crop", 224, weights="IMAGENET1K_V1", n_classes=1000),
    "dino_resnet50": Spec("pretrained", "strong", "imagenet_crop", 224, weights="dino_resnet50_pretrain.pth",
                          hub_commit=DINO_COMMIT),
    "dino_vitb8": Spec("pretrained", "strong", "imagenet_crop", 224, weights="dino_vitbase8_pretrain.pth",
                       hub_commit=DINO_COMMIT),
    # ../shared/assets/seed-hf-cache.sh --with-vision; sha256 as recorded in efficientnet-lite.json
    "efficientnet-lite0": Spec("pretrained", "both", "effnet_resize", 224, weights="efficientnet-lite0-57934424.pth",
                               sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", n_classes=1000),
    "efficientnet-lite2": Spec("pretrained", "both", "effnet_resize", 260, weights="efficientnet-lite2-9656183e.pth",
                               sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", n_classes=1000),
    # A small CNN trained from scratch on the weak-train part: a supervisor with its own (model-like) errors.
    "small_cnn": Spec("trained", "weak", "raw", 32, epochs=20, lr=2e-3, width=16),
    # Random-init feature extractor for the fast tests (seeded, so its features are reproducible).
    "tiny_cnn": Spec("random", "strong", "raw", 16, width=8),
}


def weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV) or "~/.cache/w2s/vision").expanduser()



def missing(r: dict) -> str | None:
    """Why this machine cannot load the model (checked before any compute), or None."""
    if r["id"].startswith("efficientnet"):
        path = weights_dir() / r["weights"]
        if not path.exists():
            return (f"{r['id']}: weights file {path} not found: run ../shared/assets/seed-hf-cache.sh --with-vision "
                    f"(or set ${WEIGHTS_ENV} to the folder holding it)")
        try:
            import efficientnet_lite_pytorch  # noqa: F401
        except ImportError:
            return f"{r['id']}: pip install efficientnet-lite-pytorch==0.1.0"
    if r["id"] in ("alexnet", "dino_resnet50", "dino_vitb8"):
        try:
            import torchvision  # noqa: F401
        except Exception as e:  # noqa: BLE001 - an import failure beside a mismatched torch is not an ImportError
            return (f"{r['id']}: needs torchvision, which does not import here ({type(e).__name__}: {str(e)[:120]}); "
                    f"the paper tier runs on a GPU image with a matching torch/torchvision pair")
    return None


class Wrapped(nn.Module):
    def __init__(self, net: nn.Module, feat, logit, sha: str | None):
        super().__init__()
        self.net, self._feat, self._logit, self.weights_sha256 = net, feat, logit, sha

    def features(self, x):
        return self._feat(self.net, x)

    def logits(self, x):
        return self._logit(self.net, x)


def load(r: dict, n_classes: int | None = None) -> Wrapped:
    """Build a model from its resolved config (VisionModel.resolved()), weights checked, in eval mode."""
    mid = r["id"]
    if mid.startswith("efficientnet"):
        from efficientnet_lite_pytorch import EfficientNet

        path = weights_dir() / r["weights"]
        sha = verify(path, r["sha256"], mid)
        # image_size sets the static "same" padding of every conv: it must match the input size
        net = EfficientNet.from_pretrained(mid, weights_path=str(path), num_classes=1000, image_size=r["image_size"])
        m = Wrapped(net, lambda n, x: n.extract_features(x).mean((2, 3)), lambda n, x: n(x), sha)
    elif mid == "alexnet":
        from torchvision.models import AlexNet_Weights, alexnet

        net = alexnet(weights=AlexNet_Weights[r["weights"]])     # downloads with check_hash via the enum's URL
        m = Wrapped(net, None, lambda n, x: n(x), None)
    elif mid.startswith("dino_"):
        net = torch.hub.load(f"{DINO_REPO}:{r['hub_commit']}", mid, trust_repo=True)
        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / r["weights"]
        sha = verify(ckpt, r["sha256"], mid) if ckpt.exists() else None
        m = Wrapped(net, lambda n, x: n(x), None, sha)
    elif mid == "tiny_cnn":
        torch.manual_seed(0)                 # random weights, but the same ones every time: features are cacheable
        m = Wrapped(conv_net(r["width"], None), lambda n, x: n(x), None, None)
    elif mid == "small_cnn":
        m = Wrapped(conv_net(r["width"], n_classes), None, lambda n, x: n(x), None)
    else:
        raise ValueError(f"unknown vision model {mid!r}")
    return m.eval()


def verify(path: Path, expected: str | None, mid: str) -> str:
    sha = sha256_file(path)
    if expected and sha != expected:
        raise RuntimeError(f"{mid}: {path} has sha256 {sha}, but the manifest/registry pins {expected}; "
                           f"refusing to compute with other weights")
    return sha


def conv_net(width: int, n_classes: int | None) -> nn.Sequential:
    """3 conv blocks (w, 2w, 4w) with batch norm and pooling, then global average pooling: about 25k
    parameters at w=16, i.e. far weaker than an ImageNet-pretrained network (the AlexNet role)."""
    layers, c_in = [], 3
    for c in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if n_classes:
        layers.append(nn.Linear(c_in, n_classes))
    return nn.Sequential(*layers)


def train_small_cnn(model: Wrapped, x: torch.Tensor, y: torch.Tensor, r: dict, seed: int, sink=None) -> None:
    """Supervised training of the weak CNN on the weak-train part: Adam, cosine per step, batch 64, random
    horizontal flips; seeded (init, order, flips) so the supervisor is a function of the seed."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for mod in model.net.modules():          # re-initialise with the seeded RNG
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    bs, n = 64, len(x)
    steps = max(1, (n // bs)) * r["epochs"]
    opt = torch.optim.Adam(model.net.parameters(), lr=r["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for epoch in range(r["epochs"]):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(max(1, n // bs)):
            idx = perm[i * bs:(i + 1) * bs]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            # hard-label supervised training of the supervisor, not a weak-to-strong loss: the registry's xent
            # on one-hot targets equals it only to the last bit (docs/footguns.md), which would move results
            loss = nn.functional.cross_entropy(model.logits(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        if sink:
            sink({"loss": total / max(1, n // bs), "epoch": epoch + 1, "step": (epoch + 1) * max(1, n // bs),
                  "learning_rate": sched.get_last_lr()[0]})
    model.eval()
