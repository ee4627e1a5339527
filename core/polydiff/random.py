"""Counter-based random numbers: per-sample seeding without host synchronisation.

A draw is a pure function of ``(seed of the sample, draw counter, element index)``, so a
sample depends on its own seed only, never on the batch it was drawn in, and the same code
runs on CPU and GPU with no ``torch.Generator`` per sample and no ``.item()``.

The mixing function is a 32-bit integer hash (multiply / xor-shift rounds) evaluated in
int64 arithmetic with every product kept below 2**63, so no overflow occurs on any device.
A seed is a 64-bit integer and both of its halves key the stream (hashed separately, then
chained), so distinct seeds give distinct streams: a 32-bit key would make two seeds (or two
samples of one large run, by the birthday bound past about 65,000) draw identical noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

_M32 = 0xFFFFFFFF
# odd multipliers below 2**31 so that (32-bit value) * constant < 2**63
_K1, _K2, _K3 = 0x7FEB352D, 0x2C1B3C6D, 0x297A2D39
_GOLDEN = 0x1E3779B9


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit avalanche hash of int64 tensors holding values in [0, 2**32)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * _K1) & _M32
    x = x ^ (x >> 15)
    x = (x * _K2) & _M32
    x = x ^ (x >> 16)
    x = (x * _K3) & _M32
    x = x ^ (x >> 15)
    return x


def _mix_int(x: int) -> int:
    """The same hash on a Python int (no device tensor, so no host-to-device copy)."""
    for shift, k in ((16, _K1), (15, _K2), (16, _K3)):
        x &= _M32
        x = ((x ^ (x >> shift)) * k) & _M32
    return x ^ (x >> 15)


def _bits(seeds: torch.Tensor, counter: int, n: int, stream: int) -> torch.Tensor:
    """32 random bits for each (sample, element): shape (B, n), int64 in [0, 2**32). The low and
    high halves of a seed are hashed apart (bijectively) and enter in turn, so for any element
    two distinct 64-bit seeds reach the last hash with different inputs unless a 2**-32 chance
    coincidence happens for that element alone: their streams differ."""
    s = seeds.long().reshape(-1, 1)
    low, high = _mix(s), _mix((s >> 32) ^ 0x5BD1E995)  # _mix masks to the low 32 bits first
    c = _mix_int(counter * 0x9E3779B1 + stream * 0x85EBCA77)
    idx = torch.arange(n, device=seeds.device, dtype=torch.long)
    return _mix(_mix(_mix(low ^ c) + _mix(idx * _GOLDEN + stream)) ^ high)


def uniform(seeds: torch.Tensor, counter: int, shape: Sequence[int], dtype: torch.dtype = torch.float32,
            stream: int = 0) -> torch.Tensor:
    """Uniform draws in the open interval (0, 1), shape ``(B, *shape)``.

    float64 draws combine two 32-bit words (53 significant bits), so the smallest value is
    about 1e-16 and no tail of an exponential or categorical draw is truncated.
    """
    n = math.prod(shape)
    hi = _bits(seeds, counter, n, 2 * stream)
    if dtype == torch.float64:
        lo = _bits(seeds, counter, n, 2 * stream + 1)
        v = ((hi >> 6) * 2**27 + (lo >> 5)).double()  # 53 bits
        u = (v + 0.5) / 2.0**53
    else:
        u = (((hi >> 8).to(torch.float64) + 0.5) / 2.0**24).to(dtype)  # 24 bits
    # the top value, 1 - 2**-25 (float32) or 1 - 2**-54 (float64), rounds to 1.0: kept below 1
    info = torch.finfo(dtype)
    return u.clamp_(min=info.tiny, max=1 - info.eps / 2).reshape(len(seeds), *shape)


def randn(seeds: torch.Tensor, counter: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws, shape ``(B, *shape)``, by the Box-Muller transform.

    Each pair of uniforms gives two normals (``r cos`` and ``r sin``), so one hash evaluation is
    spent per normal. float32 draws use 32-bit uniforms (largest |z| about 6.7); float64 draws
    use 53-bit radii.
    """
    n = math.prod(shape)
    half = (n + 1) // 2
    if dtype == torch.float64:
        u1 = uniform(seeds, counter, (half,), torch.float64, stream=11)
        work = torch.float64
    else:
        work = torch.float32
        u1 = ((_bits(seeds, counter, half, 22) + 0.5) * 2.0**-32).to(work)
    theta = (2.0 * math.pi * 2.0**-32) * _bits(seeds, counter, half, 24).to(work)
    r = torch.sqrt(-2.0 * torch.log(u1))
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=1)[:, :n]
    return z.to(dtype).reshape(len(seeds), *shape)


class Noise:
    """A stream of noise for a batch: per-sample counter-based seeds (``seed=``), a
    ``torch.Generator`` (``generator=``), or torch's global generator (neither).

    Each call advances a Python counter, so successive draws are independent and the whole
    sequence is reproducible; nothing is read back from the device.
    """

    def __init__(self, batch: int, *, seed: int | Sequence[int] | torch.Tensor | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> None:
        if seed is not None and generator is not None:
            raise ValueError("give either seed= (per-sample, batch independent) or generator=, not both")
        self.batch, self.device, self.generator, self.counter = batch, torch.device(device), generator, 0
        if seed is None:  # nothing asked for: torch's global generator, as torch.randn would use
            self.seeds = None
        else:
            given = torch.as_tensor(seed)
            if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
                raise TypeError(f"seed must be an integer or integer per-sample seeds, got {seed!r}")
            seeds = given.long()
            if seeds.dim() == 0:  # sample b of a run seeded s gets seed (s, b)
                seeds = seeds * 1_000_003 + torch.arange(batch, dtype=torch.long)
            if seeds.shape != (batch,):
                raise ValueError(f"seed must be an int or {batch} per-sample seeds, got shape {tuple(seeds.shape)}")
            self.seeds = seeds.to(self.device)

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Normal draws of shape ``(B, *shape)``."""
        c = self._next()
        if self.seeds is None:
            return torch.randn((self.batch, *shape), generator=self.generator, dtype=dtype,
                               device=self.device)
        return randn(self.seeds, c, shape, dtype)

    def rand(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniform draws in (0, 1) of shape ``(B, *shape)``; float64 by default."""
        c = self._next()
        if self.seeds is None:
            u = torch.rand((self.batch, *shape), generator=self.generator, dtype=dtype, device=self.device)
            return u.clamp_min(torch.finfo(dtype).tiny)
        return uniform(self.seeds, c, shape, dtype)

    def select(self, index: torch.Tensor) -> Noise:
        """A stream for a subset of the batch (same seeds, same counter position)."""
        if self.seeds is None:
            raise ValueError("select() needs per-sample seeds, not a generator")
        out = Noise.__new__(Noise)
        out.batch, out.device, out.generator = len(index), self.device, None
        out.counter, out.seeds = self.counter, self.seeds[index]
        return out


def sample_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one index per row of ``probs`` (..., V) by inverting the float64 CDF at ``u`` (...).

    Done in float64 with one uniform per draw: the float32 Gumbel trick used by MDLM / SEDD
    truncates the tail (fp32 uniforms bottom out at 2**-24) and lowers the effective
    temperature; float64 keeps the distribution's entropy. Rows need not be normalised; a
    1-D ``probs`` is shared by all draws.
    """
    cdf = torch.cumsum(probs.to(torch.float64), dim=-1)
    if cdf.dim() == 1:  # one distribution shared by every draw in u
        return torch.searchsorted(cdf, u.to(torch.float64) * cdf[-1], right=True).clamp_max(len(cdf) - 1)
    target = (u.to(torch.float64) * cdf[..., -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_max(probs.shape[-1] - 1)


@contextmanager
def local_seed(seed: int) -> Iterator[None]:
    """Seed torch's global generators for a block and give the caller's state back after it.

    For seeded helpers that build and train a small network (a metric's classifier, an
    evaluator's regressor): their result depends on ``seed`` only, and the caller's own random
    stream is neither read nor moved by the call.
    """
    with kept_rng():
        torch.manual_seed(seed)
        yield


@contextmanager
def kept_rng() -> Iterator[None]:
    """Give the caller back the state of torch's global generators (CPU and initialised CUDA
    devices) after a block that seeds or draws from them (training, :func:`local_seed`)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield
