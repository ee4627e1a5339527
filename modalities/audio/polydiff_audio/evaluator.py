"""The sound evaluator: an in-project classifier of normalised log-mel spectrograms, its embedding, and set-level
distances between generated and reference sounds.

These are stand-ins, trained and run inside the project, for the pretrained models the papers use: the Frechet
distance of :class:`AudioClassifier` embeddings plays the role of the Frechet Audio Distance (FAD, Kilgour et al.
2019, on VGGish embeddings), and :func:`caption_agreement` (the fraction of samples the classifier assigns to their
intended caption class) that of a CLAP-style text-audio score. Numbers are therefore comparable between runs of
this project only, not with published FAD / CLAP values.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polydiff.plugin import frechet_distance_of_sets, local_seed

__all__ = ["AudioClassifier", "caption_agreement", "class_spread", "embeddings", "frechet_distance", "mel_distances",
           "train_classifier"]


def _groups(channels: int, most: int = 8) -> int:
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


class AudioClassifier(nn.Module):
    """Small 1-D CNN over normalised log-mel spectrograms (B, n_mels, frames), the mel bins as channels: three
    conv blocks (kernel 3, GroupNorm, SiLU, max pooling by 2 over time), global mean and max pooling over time,
    a linear layer with SiLU -> :meth:`embed` (B, dim), and a linear head -> logits (B, classes). GroupNorm (not
    BatchNorm) keeps every output independent of the other samples in the batch."""

    def __init__(self, n_mels: int, classes: int, dim: int = 128, width: int = 128) -> None:
        super().__init__()
        if min(n_mels, classes, dim, width) < 1:
            raise ValueError(f"AudioClassifier needs positive n_mels, classes, dim, width; got {n_mels}, {classes}, "
                             f"{dim}, {width}")
        self.config = {"n_mels": int(n_mels), "classes": int(classes), "dim": int(dim), "width": int(width)}
        self.n_mels, self.classes = int(n_mels), int(classes)
        layers: list[nn.Module] = []
        cin = n_mels
        for _ in range(3):
            layers += [nn.Conv1d(cin, width, 3, padding=1), nn.GroupNorm(_groups(width), width), nn.SiLU(),
                       nn.MaxPool1d(2, ceil_mode=True)]
            cin = width
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * width, dim)
        self.head = nn.Linear(dim, classes)

    def embed(self, mel: Tensor) -> Tensor:
        """The (B, dim) embedding of spectrograms (B, n_mels, frames)."""
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"AudioClassifier expects log-mels (B, {self.n_mels}, frames), got {tuple(mel.shape)}")
        h = self.convs(mel.to(self.proj.weight.dtype))
        return F.silu(self.proj(torch.cat([h.mean(-1), h.amax(-1)], dim=-1)))

    def forward(self, mel: Tensor) -> Tensor:
        return self.head(self.embed(mel))


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random circular time shift of up to a quarter of the frames, a gain U(-0.15, 0.15) added in normalised
    units, and Gaussian noise of std 0.03, each drawn per sample from ``gen``."""
    b, _, n = x.shape
    most = n // 4
    shift = torch.randint(-most, most + 1, (b,), generator=gen, device=gen.device).to(x.device)
    idx = (torch.arange(n, device=x.device)[None, :] - shift[:, None]) % n
    x = torch.gather(x, 2, idx[:, None, :].expand_as(x))
    gain = (torch.rand(b, 1, 1, generator=gen, device=gen.device).to(x.device) * 2 - 1) * 0.15
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device) * 0.03
    return x + gain + noise


def train_classifier(mels: Tensor, labels: Tensor, *, steps: int = 600, batch: int = 64, lr: float = 2e-3,
                     seed: int = 0, augment: bool = True, progress: bool = False, **options: int) -> AudioClassifier:
    """Train an :class:`AudioClassifier` on spectrograms ``mels`` (N, n_mels, frames) with integer ``labels`` (N,)
    in ``0 .. classes - 1`` (classes = max label + 1): AdamW with a cosine learning-rate decay, ``steps`` batches
    of ``batch`` drawn with replacement, optional augmentation (random circular time shift of up to 1/4 of the
    frames, a gain, light noise). Rows labelled -1 are left out (with a warning giving the count). Deterministic:
    the weights and the draws come from ``seed`` (a ``torch.Generator``), so the same inputs give the same
    weights. ``options``: ``dim`` / ``width`` of the classifier. Returned in eval mode, on the device of ``mels``."""
    if mels.dim() != 3:
        raise ValueError(f"train_classifier: mels must be (N, n_mels, frames), got shape {tuple(mels.shape)}")
    labels = torch.as_tensor(labels).reshape(-1).long().to(mels.device)
    if labels.shape[0] != mels.shape[0]:
        raise ValueError(f"train_classifier: {mels.shape[0]} spectrograms but {labels.shape[0]} labels")
    keep = labels >= 0
    if labels.numel() and int(labels.min()) < -1:
        raise ValueError(f"train_classifier: labels must be >= 0 (or -1 = unlabelled), got {int(labels.min())}")
    if not bool(keep.any()):
        raise ValueError(f"train_classifier: no labelled spectrograms (all {len(labels)} labels are -1)")
    if not bool(keep.all()):
        warnings.warn(f"train_classifier: left out {int((~keep).sum())} of {len(labels)} spectrograms labelled -1 "
                      f"(unlabelled)", stacklevel=2)
        mels, labels = mels[keep], labels[keep]
    if len(labels) == 0:
        raise ValueError("train_classifier: no spectrograms")
    if not bool(torch.isfinite(mels).all()):
        raise ValueError("train_classifier: mels contain NaN or infinite values")
    if steps < 1 or batch < 1:
        raise ValueError(f"train_classifier: steps and batch must be positive, got {steps}, {batch}")
    classes = int(labels.max()) + 1
    with local_seed(seed):
        model = AudioClassifier(mels.shape[1], classes, **options)
    model = model.to(mels.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x_all = mels.float()
    model.train()
    start = time.monotonic()
    for step in range(steps):
        idx = torch.randint(0, len(labels), (batch,), generator=gen).to(mels.device)
        x = x_all[idx]
        if augment:
            x = _augment(x, gen)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step == steps - 1 or step % max(1, steps // 10) == 0):
            print(f"train_classifier: step {step + 1}/{steps}, loss {float(loss):.4f} "
                  f"({time.monotonic() - start:.1f} s)", file=sys.stderr)
    return model.eval()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` between Gaussians fitted
    (mean, unbiased covariance) to two embedding sets (N, D) and (M, D), in float64: the shared
    :func:`polydiff.metrics.frechet_distance` (``scipy.linalg.sqrtm`` with its imaginary part dropped, and an
    offset of 1e-6 on the diagonals where the product is singular, as pytorch-fid does). Each set needs at least
    2 rows."""
    return frechet_distance_of_sets(a, b)


def embeddings(clf: AudioClassifier, mels: Tensor, batch: int = 256) -> np.ndarray:
    """The classifier's embeddings (N, dim) of spectrograms (N, n_mels, frames), float64, in batches."""
    device = next(clf.parameters()).device
    was = clf.training
    clf.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(mels), batch):
            out.append(clf.embed(torch.as_tensor(mels[s:s + batch]).to(device)).double().cpu().numpy())
    clf.train(was)
    return np.concatenate(out) if out else np.zeros((0, clf.config["dim"]))


def caption_agreement(clf: AudioClassifier, mels: Tensor, labels: Tensor) -> float:
    """The fraction of spectrograms that ``clf`` classifies as their intended label (labels -1 are ignored);
    NaN when no label is given."""
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.shape[0] != len(mels):
        raise ValueError(f"caption_agreement: {len(mels)} spectrograms but {labels.shape[0]} labels")
    if labels.numel() and (int(labels.max()) >= clf.classes or int(labels.min()) < -1):
        raise ValueError(f"caption_agreement: labels must be in -1 .. {clf.classes - 1}, got "
                         f"{int(labels.min())} .. {int(labels.max())}")
    keep = labels >= 0
    if not bool(keep.any()):
        return float("nan")
    device = next(clf.parameters()).device
    was = clf.training
    clf.eval()
    sel = torch.as_tensor(mels)[keep.to(torch.as_tensor(mels).device)]
    preds = []
    with torch.no_grad():
        for s in range(0, len(sel), 256):
            preds.append(clf(sel[s:s + 256].to(device)).argmax(-1).cpu())
    clf.train(was)
    return float((torch.cat(preds) == labels[keep]).double().mean())


def mel_distances(gen: np.ndarray, ref: np.ndarray, top_db: float = 80.0) -> dict[str, float]:
    """Set-level spectral distances in dB between generated and reference normalised log-mels (N, n_mels, frames)
    (one normalised unit = ``top_db / 2`` dB; frame counts may differ):

    - ``mel_l1_db``: mean over mel bins of |mean spectrum(gen) - mean spectrum(ref)|, each spectrum averaged over
      samples and frames;
    - ``mel_std_l1_db``: the same for the per-bin standard deviation over samples of the per-sample spectra
      (averaged over frames): it catches a collapse of the generated set onto few sounds.
    """
    g, r = np.asarray(gen, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    for name, x in (("gen", g), ("ref", r)):
        if x.ndim != 3 or x.shape[0] < 1:
            raise ValueError(f"mel_distances: {name} must be (N, n_mels, frames) with N >= 1, got shape {x.shape}")
    if g.shape[1] != r.shape[1]:
        raise ValueError(f"mel_distances: mel bins differ ({g.shape[1]} vs {r.shape[1]})")
    unit = top_db / 2.0
    sg, sr = g.mean(-1) * unit, r.mean(-1) * unit  # (N, M) per-sample spectra in dB
    return {"mel_l1_db": float(np.abs(sg.mean(0) - sr.mean(0)).mean()),
            "mel_std_l1_db": float(np.abs(sg.std(0) - sr.std(0)).mean())}


def class_spread(mels: np.ndarray, labels: np.ndarray, top_db: float = 80.0) -> float:
    """Within-class variety in dB: for each class with at least two samples, the standard deviation
    over its samples of every (band, frame) entry, averaged over entries; then averaged over those
    classes (NaN if none). A model that returns one average sound per caption scores near 0 however
    good that average looks to a classifier; compare with the data's value."""
    x = np.asarray(mels, dtype=np.float64) * (top_db / 2)
    y = np.asarray(labels).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"class_spread: {len(x)} spectrograms but {len(y)} labels")
    per = [x[y == c].std(axis=0).mean() for c in np.unique(y[y >= 0]) if int((y == c).sum()) >= 2]
    return float(np.mean(per)) if per else float("nan")

