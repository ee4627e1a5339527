"""Gaussian mixtures with exact marginals, scores and denoisers at every noise level.

Under ``x_t = alpha x0 + sigma eps`` a mixture with diagonal covariances stays a mixture:
component k becomes ``N(alpha mu_k, alpha^2 S_k + sigma^2)``. So ``E[x0 | x_t]``, the score and
the log-density are closed-form; samplers, guidance, steering and likelihoods are tested
against these exact values instead of a trained network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..parametrization import from_x0_eps
from ..processes.gaussian import GaussianProcess


class GaussianMixture:
    """``sum_k w_k N(mu_k, diag(std_k^2))`` in ``dim`` dimensions (float64 internally)."""

    def __init__(self, weights: Tensor, means: Tensor, stds: Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand_as(self.means).clone()
        self.k, self.dim = self.means.shape

    @classmethod
    def random(cls, k: int = 4, dim: int = 2, *, spread: float = 2.0, std: float = 0.3,
               seed: int = 0) -> GaussianMixture:
        """A reproducible mixture: means uniform in a box, uneven weights, varied scales."""
        g = torch.Generator().manual_seed(seed)
        means = (torch.rand(k, dim, generator=g, dtype=torch.float64) * 2 - 1) * spread
        stds = std * (0.5 + torch.rand(k, dim, generator=g, dtype=torch.float64))
        weights = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
        return cls(weights, means, stds)

    def to_dict(self) -> dict[str, list]:
        """Plain JSON lists (stored in the dataset's ``info`` and in checkpoints)."""
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "stds": self.stds.tolist()}

    def sample(self, n: int, generator: torch.Generator | None = None, *, alpha: float = 1.0,
               sigma: float = 0.0) -> Tensor:
        """Exact draws of ``alpha x0 + sigma eps`` (the data itself by default)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        var = alpha**2 * self.stds[comp] ** 2 + sigma**2
        return alpha * self.means[comp] + var.sqrt() * z

    def moments(self, alpha: float = 1.0, sigma: float = 0.0) -> tuple[Tensor, Tensor]:
        """Exact mean and covariance of ``alpha x0 + sigma eps``."""
        w = self.weights[:, None]
        mean = alpha * (w * self.means).sum(0)
        second = (w[:, :, None] * (torch.diag_embed(alpha**2 * self.stds**2 + sigma**2)
                                   + alpha**2 * self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return mean, second - mean[:, None] * mean[None, :]

    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log w_k N(x; alpha mu_k, var_k) per component, the means and variances (B, K, D)."""
        x = x.to(torch.float64)[:, None, :]
        a = alpha.to(torch.float64).reshape(-1, 1, 1) if alpha.dim() else alpha.double()
        s = sigma.to(torch.float64).reshape(-1, 1, 1) if sigma.dim() else sigma.double()
        m = a * self.means.to(x.device)[None]
        var = a**2 * self.stds.to(x.device)[None] ** 2 + s**2
        logp = -0.5 * (((x - m) ** 2) / var + torch.log(2 * math.pi * var)).sum(-1)
        return logp + torch.log(self.weights.to(x.device))[None], m, var

    def log_prob(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """Exact log-density of the noisy marginal at ``x`` (B, D)."""
        lp, _, _ = self._components(x, torch.as_tensor(alpha), torch.as_tensor(sigma))
        return torch.logsumexp(lp, dim=1)

    def responsibilities(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """Posterior component probabilities (N, K) of ``x`` under the mixture noised to (alpha, sigma)."""
        lp, _, _ = self._components(x, torch.as_tensor(alpha), torch.as_tensor(sigma))
        return torch.softmax(lp, dim=1)

    def denoise(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """``E[x0 | x_t = x]`` (B, D) in float64."""
        lp, m, var = self._components(x, alpha, sigma)
        r = torch.softmax(lp, dim=1)[..., None]
        a = alpha.to(torch.float64).reshape(-1, 1, 1) if alpha.dim() else alpha.double()
        post = self.means.to(x.device)[None] + a * self.stds.to(x.device)[None] ** 2 / var * \
            (x.to(torch.float64)[:, None, :] - m)
        return (r * post).sum(1)

    def score(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """``grad_x log p_t(x)`` (B, D) in float64."""
        lp, m, var = self._components(x, alpha, sigma)
        r = torch.softmax(lp, dim=1)[..., None]
        return (r * (m - x.to(torch.float64)[:, None, :]) / var).sum(1)

    def condition(self, observed: Tensor, idx: Tensor) -> GaussianMixture:
        """The exact conditional of the other coordinates given ``x[idx] = observed`` (one point)."""
        keep = torch.ones(self.dim, dtype=torch.bool)
        keep[idx] = False
        sub = GaussianMixture(self.weights, self.means[:, idx], self.stds[:, idx])
        w = sub.responsibilities(observed.reshape(1, -1).double())[0]
        return GaussianMixture(w, self.means[:, keep], self.stds[:, keep])


class ExactDenoiser(torch.nn.Module):
    """A 'network' that returns the exact prediction of a mixture for a Gaussian process.

    ``model(x, t) -> prediction`` with ``prediction`` one of eps / x0 / v / score / velocity,
    so samplers can be tested with no training error at all.
    """

    def __init__(self, gmm: GaussianMixture, process: GaussianProcess, prediction: str = "eps") -> None:
        super().__init__()
        self.gmm, self.process, self.prediction = gmm, process, prediction
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        shape = x.shape
        xf = x.reshape(shape[0], -1)
        tt = t.to(torch.float64).reshape(-1) if t.dim() else t.double().expand(shape[0])
        c = self.process.coefs(tt)
        x0 = self.gmm.denoise(xf, c.alpha, c.sigma)
        col = type(c)(*(v.reshape(-1, 1) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))
        eps = (xf.double() - col.alpha * x0) / col.sigma
        return from_x0_eps(x0, eps, self.prediction, col).to(x.dtype).reshape(shape)
