"""Feature spaces for FID and precision/recall: the evaluation classifier's (default, offline) or Inception's."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class ClassifierFeatures(nn.Module):
    """Penultimate activations of a clean classifier, for images in [-1, 1].

    `num_features` is set, so torchmetrics' FID takes the width from it instead of pushing a
    299x299 dummy image through a small net."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = int(classifier.num_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float()).float()


def _inception_path(weights_path) -> Path:
    if weights_path is not None:
        path = Path(weights_path)
        return path / INCEPTION_FILE if path.is_dir() else path
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


class InceptionFeatures(nn.Module):
    """The standard 2048-d pool3 features (torch-fidelity's Inception port), from a LOCAL weights file."""

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        path = _inception_path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception weights not found at {path}. Standard FID needs the file {INCEPTION_FILE}: download it "
                f"on a machine with internet from {INCEPTION_URL} and place it at {path} (or pass "
                "metrics.inception_weights=/path/to/it). Without it, use features=classifier (the default)."
            )
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        return self.net(pixels)[0].float()


FEATURES = ("classifier", "inception")


def make_feature_extractor(kind: str, eval_classifier: nn.Module | None = None, inception_weights=None) -> nn.Module:
    if kind == "classifier":
        if eval_classifier is None:
            raise ValueError("features=classifier needs the evaluation classifier")
        return ClassifierFeatures(eval_classifier)
    if kind == "inception":
        return InceptionFeatures(inception_weights)
    raise ValueError(f"unknown feature space {kind!r}; choose one of {list(FEATURES)}")
