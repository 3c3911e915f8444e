"""Distance to the exact ODE solution on the Gaussian-mixture oracle: DDIM vs DPM-Solver++(2M) at equal steps.

    PYTHONPATH=src:tests python experiments/dpm_solver/oracle_accuracy.py

The reference is DDIM on all 1000 steps from the same x_T (2,000 samples); both solvers see the exact eps and
the exact classifier gradient, so the distance is the solvers' own discretisation error.
"""

import torch
from gaussian_mixture import GaussianMixture

from guidelab.diffusion import NoiseSchedule, sample
from guidelab.diffusion.solvers import logsnr_respace

oracle = GaussianMixture(NoiseSchedule.linear(1000), [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], [0.3] * 3, [0.5, 0.3, 0.2])
n = 2000
x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
print(f"{'w':>4s} {'steps':>5s} {'DDIM':>8s} {'DDIM logSNR grid':>17s} {'DPM-Solver++(2M)':>17s}")
for w in (0.0, 1.0, 4.0):
    kw = dict(classifier=oracle.classify, y=torch.full((n,), 1), scale=w, noise=x_T)
    reference = sample(oracle.eps, oracle.schedule, (n, 2), sampler="ddim", **kw)
    for steps in (5, 10, 20, 50):
        runs = [sample(oracle.eps, oracle.schedule, (n, 2), sampler="ddim", steps=steps, **kw),
                sample(oracle.eps, logsnr_respace(oracle.schedule, steps), (n, 2), sampler="ddim", **kw),
                sample(oracle.eps, oracle.schedule, (n, 2), sampler="dpm++2m", steps=steps, **kw)]
        errors = [(x - reference).norm(dim=1).mean().item() for x in runs]
        print(f"{w:4.1f} {steps:5d} " + " ".join(f"{e:>{width}.4f}" for e, width in zip(errors, (8, 17, 17))))
