"""Feature spaces for FID and precision/recall: the evaluation classifier's (default, offline) or Inception's."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
# The same URL torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3 downloads from.
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
FEATURE_KINDS = ("classifier", "inception")


class _FrozenModule(nn.Module):
    """Never leaves eval mode, so a parent's .train() (e.g. a LightningModule's) cannot switch the wrapped
    net's batch norm / dropout to training behaviour in the middle of an evaluation."""

    def train(self, mode: bool = True) -> "_FrozenModule":
        return super().train(False)


class ClassifierFeatures(_FrozenModule):
    """Penultimate activations of a clean classifier, for float images in [-1, 1].

    Works as torchmetrics' `FrechetInceptionDistance(feature=ClassifierFeatures(net))`: FID hands a custom
    module the images untouched (its `normalize` flag only rescales for the built-in Inception), and because
    `num_features` is set it never pushes its 299x299 uint8 dummy image through our small net."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.requires_grad_(False)
        self.num_features = int(classifier.num_features)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float()).float()


def inception_weights_file(weights_path: str | Path | None = None) -> Path:
    """Where the Inception weights are expected: the given file, `INCEPTION_FILE` inside a given folder,
    or torch-fidelity's download location in the torch hub cache."""
    if weights_path is None:
        return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    path = Path(weights_path)
    return path / INCEPTION_FILE if path.is_dir() else path


def require_inception_weights(weights_path: str | Path | None = None) -> Path:
    """The Inception weights file, or a FileNotFoundError saying where to put it (nothing is downloaded)."""
    path = inception_weights_file(weights_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights {INCEPTION_FILE} not found at {path}. On a machine with internet download "
            f"{INCEPTION_URL} and put it at {path} (or pass inception_weights=<file or folder holding it>). "
            "Without it, use features='classifier' (the default)."
        )
    return path


class InceptionFeatures(_FrozenModule):
    """Standard 2048-d pool3 features of torch-fidelity's Inception-v3 (the TF FID port), from a LOCAL file.

    torch-fidelity would download the weights when given no path; we always give it one, so nothing is fetched."""

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        path = require_inception_weights(weights_path)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        self.num_features = 2048
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # torch-fidelity wants uint8 RGB of any size; it resizes to 299x299 itself.
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        return self.net(pixels)[0].reshape(len(images), -1).float()


def make_feature_extractor(kind: str, eval_classifier: nn.Module | None = None, inception_weights=None) -> nn.Module:
    if kind == "classifier":
        if eval_classifier is None:
            raise ValueError("features='classifier' needs the evaluation classifier")
        return ClassifierFeatures(eval_classifier)
    if kind == "inception":
        return InceptionFeatures(inception_weights)
    raise ValueError(f"unknown feature space {kind!r}; choose one of {list(FEATURE_KINDS)}")
