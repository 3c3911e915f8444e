"""A user's own config dir, as a user of guidelab keeps it in their own repository: a net option, a data
option that extends guidelab's digits, and an experiment overlay that picks both."""

from pathlib import Path

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


def write_user_configs(root: Path) -> Path:
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root
