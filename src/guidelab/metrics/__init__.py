"""Quality-diversity metrics of guided samples: FID (torchmetrics), accuracy, improved precision/recall."""

from .evaluator import QualityDiversityMetrics, accuracy_of
from .features import ClassifierFeatures, InceptionFeatures, make_feature_extractor
from .precision_recall import ImprovedPrecisionRecall

__all__ = [
    "ClassifierFeatures",
    "InceptionFeatures",
    "make_feature_extractor",
    "ImprovedPrecisionRecall",
    "QualityDiversityMetrics",
    "accuracy_of",
]
