"""A user's own config dir, as a user of guidelab keeps it in their own repository: a net option, a data
option that extends guidelab's digits, an experiment overlay that picks both, and a guidance method of their
own (`ScaledClassifierGuidance`, standing for a class in their package) selected by `_target_`."""

from pathlib import Path

from guidelab.diffusion import ClassifierGuidance, Guidance

USER_NET = {"base_channels": 8, "channel_mult": [1], "attention_resolutions": []}
USER_BATCH_SIZE = 16
USER_LR = 1.0e-3

FILES = {
    "net/my_unet.yaml": """\
_target_: guidelab.nets.UNet
base_channels: 8
channel_mult: [1]
num_res_blocks: 1
attention_resolutions: []
num_heads: 1
dropout: 0.0
groups: 4
""",
    "data/my_digits.yaml": """\
defaults:
  - digits     # guidelab's data/digits.yaml, extended rather than copied
batch_size: 16
""",
    "method/scaled.yaml": """\
scaled:
  _target_: user_configs.ScaledClassifierGuidance
  factor: 0.5          # the classifier, the parameter its class names, is loaded and checked by guidelab
""",
    "experiment/mine.yaml": """\
# @package _global_
defaults:
  - override /task: ddpm
  - override /net: my_unet
  - override /data: my_digits
task:
  module:
    lr: 1.0e-3
""",
}


class ScaledClassifierGuidance(ClassifierGuidance):
    """A user's own rule: classifier guidance at `factor` times the sweep's scale."""

    name = "scaled_classifier"

    def __init__(self, classifier, factor: float):
        super().__init__(classifier)
        self.factor = factor

    def __call__(self, step):
        return super().__call__(step.with_scale_factor(self.factor))

    def describe(self) -> dict:
        return {**super().describe(), "method": self.name, "factor": self.factor}


class HalfScale(Guidance):
    """A user's wrapper: any method (`inner`, a method node of its own) at half the sweep's scale."""

    name = "half_scale"

    def __init__(self, inner: Guidance):
        self.inner = inner
        self.num_classes, self.needs_labels = inner.num_classes, inner.needs_labels

    def check(self, **kwargs) -> None:
        self.inner.check(**kwargs)

    def __call__(self, step):
        return self.inner(step.with_scale_factor(0.5))

    def unguided(self, step):
        return self.inner.unguided(step)


def write_user_configs(root: Path) -> Path:
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root
