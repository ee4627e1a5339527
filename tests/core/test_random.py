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
