"""A tiny categorical plugin used by the core's tests (registered by monkeypatching the entry
points): variable-length token strings from a Markov chain, one absorbing field with a length
mask. Written against polydiff.plugin only, as a real plugin would be."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.plugin import (
    Absorbing,
    DataBundle,
    FieldSpec,
    Masked,
    Modality,
    TensorStates,
    TimeEmbedding,
    atomic_write,
    draw_sizes,
    size_histogram,
)

ALPHABET = "abc"
MAX_LEN = 6
# transition matrix of the chain: a -> b mostly, b -> c, c -> a
TRANSITIONS = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])


def markov(n: int = 200, seed: int = 0, min_len: int = 3) -> DataBundle:
    """Strings of length min_len..6 from the chain above, padded to 6 with a mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, MAX_LEN + 1, (n,), generator=g)
    tokens = torch.zeros(n, MAX_LEN, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, 3, (n,), generator=g)
    for j in range(1, MAX_LEN):
        tokens[:, j] = torch.multinomial(TRANSITIONS[tokens[:, j - 1]], 1, generator=g)[:, 0]
    mask = torch.arange(MAX_LEN)[None] < lengths[:, None]
    tokens = tokens * mask
    cut = int(0.8 * n)
    info = {"dataset": "markov", "size_hist": size_histogram(lengths.tolist()),
            "vocabularies": {"tokens": list(ALPHABET)}}
    return DataBundle(TensorStates(tokens=tokens[:cut], mask=mask[:cut].float()),
                      test=TensorStates(tokens=tokens[cut:], mask=mask[cut:].float()), info=info)


class TokenNet(nn.Module):
    """Logits over the 3 letters at every position from the (partially masked) string and t."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(ALPHABET) + 1, hidden)
        self.time = TimeEmbedding(hidden)
        self.mix = nn.Sequential(nn.Linear(MAX_LEN * hidden, hidden), nn.SiLU(), nn.Linear(hidden, MAX_LEN * 3))
        self.calls = 0

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        self.calls += 1
        x = state["tokens"]
        h = self.embed(x) + self.time(t.reshape(-1).expand(x.shape[0]).float())[:, None]
        return {"tokens": self.mix(h.flatten(1)).reshape(x.shape[0], MAX_LEN, len(ALPHABET))}


class TokensModality(Modality):
    name = "tokens"
    description = "test plugin: token strings"

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"markov": markov}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"mlp": lambda info, fields, hidden=32: TokenNet(hidden)}

    def fields(self, info: Mapping[str, Any]) -> dict[str, FieldSpec]:
        return {"tokens": FieldSpec(Absorbing(len(ALPHABET)), Masked("mask"))}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        lengths = draw_sizes(n, info, generator)
        return {"tokens": (n, MAX_LEN), "mask": (torch.arange(MAX_LEN)[None] < lengths[:, None]).float()}

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[str]:
        out = []
        for row, m in zip(state["tokens"].tolist(), state["mask"].tolist(), strict=True):
            out.append("".join(ALPHABET[v] if v < len(ALPHABET) else "?" for v, keep in zip(row, m, strict=True)
                               if keep))
        return out

    def from_native(self, objects: Sequence[str], info: Mapping[str, Any]) -> dict[str, Tensor]:
        tokens = torch.zeros(len(objects), MAX_LEN, dtype=torch.long)
        mask = torch.zeros(len(objects), MAX_LEN)
        for i, s in enumerate(objects):
            tokens[i, : len(s)] = torch.tensor([ALPHABET.index(c) for c in s], dtype=torch.long)
            mask[i, : len(s)] = 1
        return {"tokens": tokens, "mask": mask}

    def write(self, objects: Sequence[str], out_dir: Path) -> list[Path]:
        return [atomic_write(Path(out_dir) / "samples.txt", "".join(f"{s}\n" for s in objects))]

    def read(self, path: Path) -> list[str]:
        path = Path(path)
        file = path / "samples.txt" if path.is_dir() else path
        out = []
        for i, line in enumerate(file.read_text(errors="replace").splitlines(), start=1):
            if set(line) - set(ALPHABET) or len(line) > MAX_LEN:
                raise ValueError(f"{file}:{i}: expected up to {MAX_LEN} letters of {ALPHABET!r}, got {line!r}")
            out.append(line)
        return out

    def evaluate(self, objects: Sequence[str], reference: Sequence[str], info: Mapping[str, Any]) -> dict[str, float]:
        def mean_len(xs: Sequence[str]) -> float:
            return sum(map(len, xs)) / max(len(xs), 1)

        return {"mean_length": mean_len(objects), "mean_length_ref": mean_len(reference)}

    def flags(self, objects: Sequence[str], info: Mapping[str, Any]) -> dict[str, list[Any]]:
        return {"length": [len(s) for s in objects]}
