"""`local_seed`: a seeded block neither reads nor moves the caller's random stream."""

import torch

from polydiff.plugin import local_seed


def test_local_seed_is_seeded_and_gives_the_caller_its_state_back():
    torch.manual_seed(123)
    expected_next = torch.rand(4)
    torch.manual_seed(123)
    with local_seed(7):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(4), expected_next)  # the caller's stream did not move
    torch.manual_seed(999)  # another caller state: the block's draws depend on its seed only
    with local_seed(7):
        again = torch.rand(3)
    assert torch.equal(inside, again)
    with local_seed(8):
        other = torch.rand(3)
    assert not torch.equal(inside, other)


def test_local_seed_restores_after_an_error():
    torch.manual_seed(5)
    expected_next = torch.rand(2)
    torch.manual_seed(5)
    try:
        with local_seed(1):
            torch.rand(10)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.equal(torch.rand(2), expected_next)


def test_distinct_seeds_draw_distinct_noise():
    """The per-sample key was a 32-bit hash of the 64-bit seed: among 200,000 samples of one run
    about five pairs drew identical noise (birthday bound), and seed 48526's sample 41 was seed
    0's sample 672. Both halves of a seed key the stream now."""
    from polydiff.random import Noise, _bits, uniform

    seeds = 7 * 1_000_003 + torch.arange(200_000)
    words = _bits(seeds, 1, 2, 0)
    keys = words[:, 0] * 2**32 + words[:, 1]  # 64 bits per sample
    assert keys.unique().numel() == len(seeds)
    a = Noise(42, seed=48526).randn((6,))[41]
    b = Noise(673, seed=0).randn((6,))[672]
    assert not torch.equal(a, b)
    high = torch.tensor([5, 5 + 2**32, 5 - 2**33])  # equal low halves
    draws = uniform(high, 1, (4,), torch.float64)
    assert len({tuple(r.tolist()) for r in draws}) == 3


def test_float32_uniforms_stay_inside_the_open_interval(monkeypatch):
    """The top 24-bit value, 1 - 2**-25, rounded to 1.0 in float32 (the old hash drew it at seed
    231048, element 26). The extreme words are forced here, so every dtype's bounds are hit."""
    import polydiff.random as R

    for word in (0, 2**32 - 1):
        monkeypatch.setattr(R, "_bits", lambda seeds, counter, n, stream, w=word: torch.full((len(seeds), n), w))
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            u = R.uniform(torch.arange(3), 1, (2,), dtype)
            assert 0.0 < float(u.min()) and float(u.max()) < 1.0, (word, dtype, u)
