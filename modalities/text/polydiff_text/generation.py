"""Conditional generation with a masked-diffusion text model: prompts, infilling, and sequences
longer than the model's length.

All three fix some tokens and let the first-hitting sampler reveal the masked ones, which is
exact for a masked diffusion model (the unmasked tokens are what ``x`` holds at the time the
sampler starts, and SUBS carries them over):

- :func:`complete`: each prompt's tokens are fixed at the start, the rest of the sequence is
  generated (the model's length, or ``length`` tokens);
- :func:`infill`: templates with holes (``hole``, one masked token each) are filled;
- :func:`generate_long`: semi-autoregressive generation (MDLM's): a first block of the model's
  length, then each new block keeps the last ``overlap`` tokens generated so far as its fixed
  prefix and generates the rest, until ``length`` tokens.

Every sample has its own seed (``seed * 1_000_003 + i`` like the core's generation), so results
do not depend on how many are generated at once. The ``polydiff text complete`` command wraps
:func:`complete`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.plugin import (
    Command,
    add_output,
    atomic_write,
    draw_sizes,
    first_hitting,
    load,
    non_negative_int,
    output_file,
    positive_int,
    whole_number,
)

from .modality import sampling_net

__all__ = ["COMMANDS", "complete", "fill", "generate_long", "infill"]

_STRIDE = 1_000_003


def fill(generator: Any, tokens: Tensor, valid: Tensor, *, seed: int = 0, precision: str = "float64") -> Tensor:
    """Reveal the masked positions (id ``vocab_size``) of ``tokens`` (B, L) inside ``valid`` with the
    first-hitting sampler; the other tokens stay. Returns the filled tokens."""
    net = generator.net
    if getattr(getattr(net, "module", net), "autoregressive", False):
        raise ValueError("prompting and infilling need a masked-diffusion model (network 'mdlm'), not the "
                         "autoregressive baseline")
    field = generator.fields["tokens"]
    seeds = whole_number("seed", seed, None) * _STRIDE + torch.arange(len(tokens))
    valid = valid.to(torch.bool)
    # sequences with fewer holes finish first; the cache stops passing them to the network
    denoiser = sampling_net(net)

    def model(tk: Tensor, t: Tensor) -> Tensor:
        return denoiser({"tokens": tk, "valid": valid}, t)["tokens"]

    with torch.no_grad():
        return first_hitting(model, field.process, tuple(tokens.shape), seed=seeds, x=tokens, valid=valid,
                             precision=precision)


def _tokenizer(generator: Any) -> Any:
    return generator.modality.tokenizer(generator.info)


def _decode(generator: Any, tokens: Tensor, valid: Tensor) -> list[str]:
    return generator.modality.to_native({"tokens": tokens, "valid": valid}, generator.info)


def complete(generator: Any, prompts: Sequence[str], *, length: int | None = None, seed: int = 0,
             precision: str = "float64") -> list[str]:
    """Continue every prompt (a list of strings: ``["CCO"]`` for one) up to ``length`` tokens
    (default: the model's length), prompt included; ``precision``: the first-hitting sampler's
    draws (``float64``, or ``float32`` as the released samplers draw)."""
    return _decode(generator, *_complete_tokens(generator, _texts(prompts, "prompts"), length, seed, precision))


def _texts(values: Any, what: str) -> list[str]:
    """A user's list of strings (prompts, templates). One str would be read as one entry per
    character, so it is an error, as are an empty list and an entry that is not a str."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        one = f" (for one: [{values!r}])" if isinstance(values, str) else ""
        raise TypeError(f"{what} must be a list of strings{one}, got {type(values).__name__}")
    out = list(values)
    if not out:
        raise ValueError(f"{what}: an empty list, nothing to generate")
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise TypeError(f"{what}[{i}]: expected a str, got {type(v).__name__}")
    return out


def _complete_tokens(generator: Any, prompts: Sequence[str], length: int | None, seed: int,
                     precision: str) -> tuple[Tensor, Tensor]:
    """The tokens (B, L) of :func:`complete` and the positions generated."""
    tok = _tokenizer(generator)
    size = int(generator.info["length"]) if length is None else whole_number("length", length)
    if not 1 <= size <= int(generator.info["length"]):
        raise ValueError(f"length must lie in 1..{generator.info['length']} (the model's length), got {length}; "
                         "use generate_long for longer texts")
    mask = tok.vocab_size
    tokens = torch.full((len(prompts), size), mask, dtype=torch.long)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    # documents (SMILES, lines): lengths drawn from the training lengths as in unconditional sampling
    hist = generator.info.get("size_hist") if length is None else None
    sizes = draw_sizes(len(prompts), generator.info, torch.Generator().manual_seed(whole_number("seed", seed, None))) \
        if hist else None
    for i, p in enumerate(prompts):
        ids = _known(tok, p, f"prompt {i}")
        if len(ids) >= size:
            raise ValueError(f"prompt {i} has {len(ids)} tokens, no room left in {size}")
        tokens[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        if sizes is not None:
            valid[i, max(int(sizes[i]), len(ids) + 1):] = False
    tokens = torch.where(valid, tokens, torch.full_like(tokens, tok.pad_id))
    return fill(generator, tokens, valid, seed=seed, precision=precision), valid


def _known(tok: Any, text: str, what: str) -> list[int]:
    """Token ids of a user's text; a piece the tokenizer only knows as its unknown token is an
    error (the model would continue ``<unk>``, not the text)."""
    ids = tok.encode(text)
    if tok.unk_id is not None and tok.unk_id in ids:
        raise ValueError(f"{what}: {ids.count(tok.unk_id)} token(s) of {text!r} are not in the model's vocabulary "
                         f"(the model would read {tok.token_names()[tok.unk_id]!r} in their place)")
    return ids


def infill(generator: Any, templates: Sequence[str], *, hole: str = "<mask>", seed: int = 0,
           precision: str = "float64") -> list[str]:
    """Fill the holes of every template (a list of strings): each ``hole`` marker is one token to
    generate, the text between markers is kept (e.g. ``["C<mask><mask>O"]`` with a SMILES model)."""
    templates = _texts(templates, "templates")
    if not isinstance(hole, str) or not hole:
        raise ValueError(f"hole must be a non-empty string (the marker of one token to fill), got {hole!r}")
    tok = _tokenizer(generator)
    size, mask = int(generator.info["length"]), tok.vocab_size
    rows = []
    for i, template in enumerate(templates):
        parts = template.split(hole)
        ids: list[int] = []
        for k, part in enumerate(parts):
            ids += _known(tok, part, f"template {i}") if part else []
            if k < len(parts) - 1:
                ids.append(mask)
        if mask not in ids:
            raise ValueError(f"template {i} has no hole {hole!r} to fill")
        if len(ids) > size:
            raise ValueError(f"template {i} is {len(ids)} tokens long, more than the model's length {size}")
        rows.append(ids)
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    valid = torch.zeros_like(tokens, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        valid[i, :len(r)] = True
    return _decode(generator, fill(generator, tokens, valid, seed=seed, precision=precision), valid)


def generate_long(generator: Any, n: int, length: int, *, overlap: int | None = None, seed: int = 0,
                  precision: str = "float64") -> list[str]:
    """``n`` texts of ``length`` tokens from a model of shorter length, block after block, each
    block conditioned on the last ``overlap`` tokens so far (default half the model's length)."""
    n, length = whole_number("n", n), whole_number("length", length)
    size = int(generator.info["length"])
    mask = _tokenizer(generator).vocab_size
    first = fill(generator, torch.full((n, size), mask, dtype=torch.long), torch.ones(n, size, dtype=torch.bool),
                 seed=seed, precision=precision)
    out = _extend(generator, first, length, overlap, seed, precision)
    return _decode(generator, out, torch.ones_like(out, dtype=torch.bool))


def _extend(generator: Any, tokens: Tensor, length: int, overlap: int | None, seed: int, precision: str) -> Tensor:
    """``tokens`` (B, L0) extended to ``length`` tokens by blocks of the model's length, each
    starting from the last ``overlap`` tokens so far (default half the model's length)."""
    size = int(generator.info["length"])
    overlap = size // 2 if overlap is None else whole_number("overlap", overlap, None)
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must lie in 0..{size - 1}, got {overlap}")
    mask = _tokenizer(generator).vocab_size
    n, out, block = len(tokens), tokens, 1
    valid = torch.ones(n, size, dtype=torch.bool)
    while out.shape[1] < length:
        start = torch.full((n, size), mask, dtype=torch.long)
        if overlap:
            start[:, :overlap] = out[:, out.shape[1] - overlap:]
        new = fill(generator, start, valid, seed=seed + block * 7919, precision=precision)
        out = torch.cat([out, new[:, overlap:]], dim=1)
        block += 1
    return out[:, :length]


# -- polydiff text complete -----------------------------------------------------------------------

def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a masked-diffusion text model (network 'mdlm')")
    p.add_argument("--prompt", action="append", required=True, help="text to continue (repeatable)")
    p.add_argument("--num", type=positive_int, default=1, help="continuations per prompt (default 1)")
    p.add_argument("--length", type=positive_int, help="tokens per text, prompt included (default: the model's "
                                                       "length; longer: block by block)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    add_output(p, "also write the texts as JSONL ({'prompt': ..., 'text': ...})")


def _run(args: argparse.Namespace) -> int:
    if args.out is not None:
        output_file(args.out, args.overwrite, {"checkpoint": args.checkpoint})
    gen = load(args.checkpoint, modality="text")
    prompts = [p for p in args.prompt for _ in range(args.num)]
    size = int(gen.info["length"])
    if args.length is not None and args.length > size:
        texts = [_continue_long(gen, p, args.length, args.seed + i) for i, p in enumerate(prompts)]
    else:
        texts = complete(gen, prompts, length=args.length, seed=args.seed)
    for p, t in zip(prompts, texts):
        print(json.dumps({"prompt": p, "text": t}, ensure_ascii=False))
    if args.out is not None:
        atomic_write(args.out, "".join(json.dumps({"prompt": p, "text": t}) + "\n" for p, t in zip(prompts, texts)))
    return 0


def _continue_long(generator: Any, prompt: str, length: int, seed: int) -> str:
    """A prompt continued past the model's length: the first block completes it, the next ones
    are conditioned on the last half block (:func:`generate_long`'s blocks)."""
    first, _ = _complete_tokens(generator, [prompt], int(generator.info["length"]), seed, "float64")
    out = _extend(generator, first, length, None, seed, "float64")
    return _decode(generator, out, torch.ones_like(out, dtype=torch.bool))[0]


COMMANDS = {"complete": Command("continue prompts with a masked-diffusion text model (first-hitting sampling)",
                                _configure, _run)}
