"""Networks: the ADM-style UNet eps-model and the classifiers used for guidance and evaluation."""

from .classifier import EncoderClassifier, SmallCNNClassifier
from .layers import timestep_embedding
from .unet import UNet

__all__ = ["UNet", "EncoderClassifier", "SmallCNNClassifier", "timestep_embedding"]
