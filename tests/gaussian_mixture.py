"""An exact oracle for guided diffusion: a Gaussian mixture, whose noised marginals are closed-form.

Component k is N(mu_k, s_k^2 I). Under q(x_t | x_0) it becomes N(sqrt(abar) mu_k, (abar s_k^2 + 1 - abar) I),
so the exact eps-prediction and the exact noisy-class posterior p_t(k | x_t) follow in closed form.
"""

import math

import torch

# the three-cluster mixture the guidance tests use; TARGET is the class they guide towards
MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]
STDS = [0.3, 0.3, 0.3]
WEIGHTS = [0.5, 0.3, 0.2]
TARGET = 1


class GaussianMixture:
    def __init__(self, schedule, means, stds, weights):
        self.schedule = schedule
        self.means = torch.as_tensor(means, dtype=torch.float32)
        self.stds = torch.as_tensor(stds, dtype=torch.float32)
        self.log_weights = torch.as_tensor(weights, dtype=torch.float32).log()
        self.num_classes = len(weights)
        self.dim = self.means.shape[1]

    def _noised(self, t):
        abar = self.schedule.alphas_cumprod[t].float()[:, None]  # [B, 1], t is ORIGINAL timestep
        centers = abar.sqrt()[:, :, None] * self.means.T[None]  # [B, D, K]
        variances = abar * self.stds[None] ** 2 + 1 - abar  # [B, K]
        return abar, centers, variances

    def log_joint(self, x, t):
        """log pi_k + log N(x_t; component k noised to t), [B, K]: logits of the exact p_t(k | x_t)."""
        _, centers, variances = self._noised(t)
        sq = ((x[:, :, None] - centers) ** 2).sum(1)
        return self.log_weights - 0.5 * sq / variances - 0.5 * self.dim * torch.log(2 * math.pi * variances)

    def eps(self, x, t):
        abar, centers, variances = self._noised(t)
        resp = torch.softmax(self.log_joint(x, t), dim=1)  # [B, K]
        score = (resp[:, None, :] * -(x[:, :, None] - centers) / variances[:, None, :]).sum(2)
        return -(1 - abar).sqrt() * score

    def classify(self, x, t):
        return self.log_joint(x, t)

    def label(self, x):
        """Component each clean sample most likely came from."""
        return self.log_joint(x, torch.zeros(len(x), dtype=torch.long)).argmax(1)
