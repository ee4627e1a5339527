"""Tests of the sound evaluator: Frechet distance, classifier training, embeddings, caption agreement, mel
distances."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from polydiff_audio.evaluator import (
    AudioClassifier,
    caption_agreement,
    embeddings,
    frechet_distance,
    mel_distances,
    train_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------------

def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _frechet_eig(a: np.ndarray, b: np.ndarray) -> float:
    """Independent implementation: tr sqrt(C1^(1/2) C2 C1^(1/2)) from the eigenvalues of a symmetric matrix."""
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s1 = _psd_sqrt(c1)
    middle = np.linalg.eigvalsh(s1 @ c2 @ s1)
    d = a.mean(0) - b.mean(0)
    return float(d @ d + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


def test_frechet_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 6))
    assert abs(frechet_distance(x, x)) < 1e-8


def test_frechet_of_1d_gaussians():
    rng = np.random.default_rng(1)
    m1, s1, m2, s2 = 1.0, 2.0, -0.5, 0.5
    a = rng.normal(m1, s1, size=(200_000, 1))
    b = rng.normal(m2, s2, size=(200_000, 1))
    assert frechet_distance(a, b) == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, abs=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_matches_eigenvalue_implementation(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    b = rng.normal(size=(80, 5)) @ rng.normal(size=(5, 5))
    assert frechet_distance(a, b) == pytest.approx(_frechet_eig(a, b), rel=1e-6, abs=1e-8)


def test_frechet_errors():
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((4, 2), np.nan), np.zeros((5, 2)))


# ---------------------------------------------------------------------------------------------
# classifier
# ---------------------------------------------------------------------------------------------

def _toy(n: int, seed: int, m: int = 12, frames: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of noisy spectrograms with their energy in mel bins 0-3, 4-7 or 8-11, on a random frame span."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = -0.6 + 0.25 * torch.randn(n, m, frames, generator=g)
    start = torch.randint(0, frames // 2, (n,), generator=g)
    for i in range(n):
        k = int(labels[i])
        x[i, 4 * k:4 * k + 4, int(start[i]):int(start[i]) + frames // 2] += 0.8
    return x, labels


def test_train_classifier_learns_toy_and_is_deterministic():
    x, y = _toy(150, seed=0)
    xv, yv = _toy(90, seed=1)
    clf = train_classifier(x, y, steps=60, batch=32, width=16, dim=16)
    assert not clf.training and clf.classes == 3
    with torch.no_grad():
        acc = float((clf(xv).argmax(-1) == yv).double().mean())
    assert acc > 0.9
    again = train_classifier(x, y, steps=60, batch=32, width=16, dim=16)
    for (k, p), q in zip(clf.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    other = train_classifier(x, y, steps=5, batch=32, width=16, dim=16, seed=1)
    first = train_classifier(x, y, steps=5, batch=32, width=16, dim=16, seed=0)
    assert not torch.equal(other.proj.weight, first.proj.weight)
    assert caption_agreement(clf, xv, yv) == pytest.approx(acc)
    emb = embeddings(clf, xv, batch=32)
    assert emb.shape == (90, 16) and emb.dtype == np.float64
    with torch.no_grad():
        np.testing.assert_allclose(emb, clf.embed(xv).double().numpy(), rtol=1e-5, atol=1e-6)


def test_train_classifier_leaves_out_unlabelled_rows_with_a_warning():
    x, y = _toy(12, seed=0)
    y = y.clone()
    y[:2] = -1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_classifier(x, y, steps=2, batch=4, width=8, dim=8, augment=False)
    assert any("left out 2 of 12" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="labels"):
        train_classifier(x, torch.zeros(5, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="no labelled"):
        train_classifier(x, torch.full((12,), -1), steps=1)


class _FirstBins(AudioClassifier):
    """A hand-made classifier: the logits are the first ``classes`` mel bins of the first frame."""

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return mel[:, :self.classes, 0]


def test_caption_agreement_hand_case():
    clf = _FirstBins(n_mels=4, classes=3, dim=4, width=4)
    mels = torch.zeros(5, 4, 2)
    for i, k in enumerate([0, 1, 2, 2, 1]):  # predicted classes
        mels[i, k, 0] = 1.0
    labels = torch.tensor([0, 1, 1, 2, -1])  # 3 of the 4 labelled ones agree
    assert caption_agreement(clf, mels, labels) == pytest.approx(0.75)
    assert math.isnan(caption_agreement(clf, mels, torch.full((5,), -1)))
    with pytest.raises(ValueError, match="labels"):
        caption_agreement(clf, mels, torch.tensor([0, 1, 3, 0, 0]))


def test_classifier_shape_errors():
    clf = AudioClassifier(n_mels=6, classes=2, dim=8, width=8)
    assert clf(torch.randn(3, 6, 1)).shape == (3, 2)  # a single frame still pools
    with pytest.raises(ValueError, match="6"):
        clf(torch.randn(3, 5, 10))


# ---------------------------------------------------------------------------------------------
# mel distances
# ---------------------------------------------------------------------------------------------

def test_mel_distances_hand_case():
    # gen: two identical samples, bins (0.5, 0) -> per-sample spectra (20, 0) dB at top_db = 80 (40 dB per unit)
    gen = np.zeros((2, 2, 3))
    gen[:, 0] = 0.5
    # ref: bin 0 averages 1 (frames 0.5 / 1.5) and 0; bin 1 is 0.5 and -0.5 -> spectra (40, 20), (0, -20) dB:
    # mean (20, 0) as gen's, std over samples (20, 20) where gen's is (0, 0)
    ref = np.zeros((2, 2, 4))
    ref[0, 0] = [0.5, 1.5, 0.5, 1.5]
    ref[0, 1] = 0.5
    ref[1, 1] = -0.5
    d = mel_distances(gen, ref)
    assert d["mel_l1_db"] == pytest.approx(0.0, abs=1e-12)
    assert d["mel_std_l1_db"] == pytest.approx(20.0)
    shifted = mel_distances(gen + 0.25, ref)  # +0.25 units = +10 dB in every bin
    assert shifted["mel_l1_db"] == pytest.approx(10.0)
    assert shifted["mel_std_l1_db"] == pytest.approx(20.0)
    assert mel_distances(gen + 0.25, ref, top_db=40.0)["mel_l1_db"] == pytest.approx(5.0)
    assert mel_distances(ref, ref) == {"mel_l1_db": 0.0, "mel_std_l1_db": 0.0}
    with pytest.raises(ValueError, match="mel bins differ"):
        mel_distances(gen, np.zeros((2, 3, 4)))


def test_class_spread_by_hand():
    from polydiff_audio.evaluator import class_spread

    a = np.zeros((4, 2, 3))
    a[1] += 0.5  # class 0: values 0 and 0.5 -> std 0.25 normalised = 10 dB at top_db 80
    a[3] -= 0.25  # class 1: values 0 and -0.25 -> std 0.125 = 5 dB
    labels = np.array([0, 0, 1, 1])
    assert class_spread(a, labels) == pytest.approx(7.5)
    assert class_spread(np.repeat(a[:1], 4, 0), labels) == 0.0  # one sound per class: no spread
    assert np.isnan(class_spread(a[:2], np.array([0, 1])))  # no class with two samples
    with pytest.raises(ValueError, match="labels"):
        class_spread(a, labels[:3])
