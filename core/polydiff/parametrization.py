"""Exact conversions between what a network predicts and what a solver needs.

For ``x_t = alpha x0 + sigma eps`` a network may predict ``eps``, ``x0``, ``v`` (Salimans &
Ho: ``alpha eps - sigma x0``), the ``score`` (``-eps / sigma``) or the flow-matching
``velocity`` (``dalpha x0 + dsigma eps``). Every prediction is converted to the pair
``(x0, eps)``, from which the others follow; the velocity route stays finite where
``alpha = 0`` (the noise end of a rectified flow).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .processes.gaussian import Coefs

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")


def check_prediction(kind: str) -> str:
    """``kind`` if it names a known prediction, else a ValueError listing them."""
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; allowed: {', '.join(PREDICTIONS)}")
    return kind


def to_x0_eps(pred: Tensor, kind: str, x: Tensor, c: Coefs) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` from a prediction of ``kind`` at the noisy ``x``."""
    a, s = c.alpha, c.sigma
    if kind == "eps":
        return torch.addcmul(x, s, pred, value=-1) / a, pred
    if kind == "x0":
        return pred, (x - a * pred) / s
    if kind == "score":
        eps = -s * pred
        return (x - s * eps) / a, eps
    if kind == "v":
        n = a * a + s * s
        return (a * x - s * pred) / n, (s * x + a * pred) / n
    if kind == "velocity":
        det = a * c.dsigma - s * c.dalpha
        return (c.dsigma * x - s * pred) / det, (a * pred - c.dalpha * x) / det
    check_prediction(kind)
    raise AssertionError


def from_x0_eps(x0: Tensor, eps: Tensor, kind: str, c: Coefs) -> Tensor:
    """The prediction of ``kind`` that corresponds to ``(x0, eps)``."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / c.sigma
    if kind == "v":
        return c.alpha * eps - c.sigma * x0
    if kind == "velocity":
        return c.dalpha * x0 + c.dsigma * eps
    check_prediction(kind)
    raise AssertionError


def convert(pred: Tensor, source: str, target: str, x: Tensor, c: Coefs) -> Tensor:
    """Convert a prediction between two parametrisations at the noisy ``x``."""
    return from_x0_eps(*to_x0_eps(pred, source, x, c), target, c)


def x0_error_scale(kind: str, c: Coefs) -> Tensor:
    """``k`` with ``x0_error = k * prediction_error`` (used to express loss weightings)."""
    a, s = c.alpha, c.sigma
    scale = {  # only the one asked for is computed
        "x0": lambda: a * 0 + 1,
        "eps": lambda: s / a,
        "score": lambda: s * s / a,
        "v": lambda: s / (a * a + s * s),
        "velocity": lambda: s / (a * c.dsigma - s * c.dalpha),
    }[check_prediction(kind)]
    return scale()
