"""Wall time per sample of classifier guidance vs classifier-free guidance at w=1, alternated three times.

    python experiments/cg_vs_cfg/time_per_sample.py /tmp/cg_vs_cfg_run     # the run dir of run.py
"""

import sys
import time

import torch

from guidelab.diffusion import sample
from guidelab.modules import load_module

run_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/cg_vs_cfg_run"
ddpm, classifier, cfg_ddpm = (load_module(f"{run_dir}/{name}/checkpoints/last.ckpt") for name in ("ddpm", "classifier", "cfg_ddpm"))
n = 500
noise = torch.randn(n, *ddpm.hparams.image_shape, generator=torch.Generator().manual_seed(0))
common = dict(y=torch.arange(n) % 10, scale=1.0, steps=40, sampler="ddim", clip_denoised=True, noise=noise)
methods = {
    "cg": lambda: sample(ddpm, ddpm.schedule, noise.shape, classifier=classifier, **common),
    "cfg": lambda: sample(cfg_ddpm, cfg_ddpm.schedule, noise.shape, guidance="cfg", null_class=cfg_ddpm.num_classes, **common),
}
ms_per_sample = {name: [] for name in methods}
for _ in range(3):
    for name, run in methods.items():
        tic = time.perf_counter()
        run()
        ms_per_sample[name].append(1000 * (time.perf_counter() - tic) / n)
print({name: [round(v, 2) for v in values] for name, values in ms_per_sample.items()}, "threads", torch.get_num_threads())
