"""The embedded default data: backbones built from sampled dihedrals, offline.

Each backbone is a chain of secondary-structure elements (SSEs) joined by loops, with ideal
bond geometry (NeRF placement, :mod:`.geometry`) and dihedrals drawn per residue around the
centres of the Ramachandran regions:

======== ======================= ============================================
region   (phi, psi) centre, deg  used for
======== ======================= ============================================
helix    (-63, -42), sd 5         alpha helices (3.6 residues per turn)
strand   (-132, 121), sd 5        beta strands
ppII     (-70, 145), sd 12        loops (polyproline II)
alphaR   (-90, 0), sd 12          loops, turns
alphaL   (60, 35), sd 10          loops, glycine-like turns
turn     (-44, 98), (130, -36)  two-residue hairpin turns (searched: strands
                                      pair in DSSP without CA clashes)
======== ======================= ============================================

omega is trans (180 deg, sd 3). Topologies: ``bundle`` (2-4 helices), ``hairpin`` (hairpins: strand
pairs joined by two-residue turns, hairpins by loops), ``mixed`` (helices and hairpins); elements are added
while they fit the length. The chain grows one
loop + SSE at a time; for every piece ``candidates`` loop conformations are drawn and the most
compact one without CA-CA clashes (< 3.0 A between residues 3 or more apart) is kept (one of the
best three, at random), so helices pack into bundles and strands fold back into sheets instead
of flying apart. Structures are centred at the origin; a seed fixes everything.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .geometry import Backbone, add_oxygens, build_backbone, grow

REGIONS = {  # (phi, psi) centre and sd in degrees
    "helix": ((-63.0, -42.0), 5.0),
    "strand": ((-132.0, 121.0), 5.0),
    "ppII": ((-70.0, 145.0), 12.0),
    "alphaR": ((-90.0, 0.0), 12.0),
    "alphaL": ((60.0, 35.0), 10.0),
}
LOOP_REGIONS = ("ppII", "alphaR", "alphaL")
LOOP_WEIGHTS = (0.5, 0.35, 0.15)
TURN = ((-44.0, 98.0), (130.0, -36.0))
TOPOLOGIES = ("bundle", "hairpin", "mixed")
CLASH = 3.0  # A: CA-CA distance below which residues 3 or more apart clash (the metrics' threshold)


def _draw(region: str, n: int, rng: np.random.Generator, shape: tuple[int, ...] = ()) -> np.ndarray:
    (phi, psi), sd = REGIONS[region]
    return np.radians(np.stack([rng.normal(phi, sd, (*shape, n)), rng.normal(psi, sd, (*shape, n))], -1))


def _loop(n: int, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Loop dihedrals ``(*shape, n, 2)``: each residue from a random loop region."""
    regions = rng.choice(len(LOOP_REGIONS), size=(*shape, n), p=LOOP_WEIGHTS)
    draws = np.stack([_draw(r, n, rng, shape) for r in LOOP_REGIONS], 0)
    return np.take_along_axis(draws, regions[None, ..., None].repeat(2, -1), 0)[0]


def _plan(topology: str, length: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """A list of (kind, length) pieces: SSEs ("helix", "strand") with "loop" / "turn" between,
    summing to ``length``. Elements are added while they fit; the rest lengthens SSEs (up to
    their maximum) and then the terminal loops."""
    lo, hi = {"helix": 10, "strand": 5}, {"helix": 26, "strand": 9}
    sse: list[str] = []
    sizes: list[int] = []
    links: list[int] = []
    used = 4  # at least two loop residues at each end
    while True:
        if topology == "bundle":
            kind = "helix"
        elif topology == "hairpin":
            kind = "strand"
        else:  # mixed: a helix, or a strand that pairs with the one before it
            kind = "strand" if sse and sse[-1] == "strand" and sse.count("strand") % 2 else str(
                rng.choice(["helix", "strand"]))
        size = int(rng.integers(lo[kind], hi[kind] - 2))
        pairs = kind == "strand" and sse.count("strand") % 2 == 1  # the second strand of a hairpin
        link = 0 if not sse else 2 if pairs else int(rng.integers(3, 7))
        if used + link + size > length:
            break
        sse.append(kind)
        sizes.append(size)
        if link:
            links.append(link)
        used += link + size
    if topology == "mixed" and sse and sse[-1] == "strand" and sse.count("strand") % 2:
        used -= sizes.pop() + (links.pop() if links else 0)  # an unpaired last strand: drop it
        sse.pop()
    if not sse:
        return [("loop", length)]  # too short for this topology
    for _ in range(length - used):  # grow SSEs with room, the rest goes to the ends
        room = [i for i, k in enumerate(sse) if sizes[i] < hi[k]]
        if not room:
            break
        sizes[int(rng.choice(room))] += 1
        used += 1
    plan: list[tuple[str, int]] = []
    for i, k in enumerate(sse):
        plan.append((k, sizes[i]))
        if i < len(links):
            plan.append(("turn" if links[i] == 2 else "loop", links[i]))
    rest = length - sum(n for _, n in plan)
    head = rest // 2
    return [("loop", head), *plan, ("loop", rest - head)]


def _piece(kind: str, n: int, rng: np.random.Generator, c: int) -> np.ndarray:
    """Dihedrals ``(c, n, 2)`` for ``c`` candidates of one piece."""
    if kind in ("helix", "strand"):
        return _draw(kind, n, rng, (c,))
    if kind == "turn":
        t = np.radians(np.array(TURN))
        return t + rng.normal(0, math.radians(3), (c, 2, 2))
    return _loop(n, rng, (c,))


def _clash_free(ca_old: np.ndarray, ca_new: np.ndarray) -> np.ndarray:
    """(c,) whether candidates' new CAs ``(c, k, 3)``, appended after the old CAs ``(m, 3)``,
    keep >= CLASH from every residue 3 or more positions away (old and new)."""
    m, k = len(ca_old), ca_new.shape[1]
    allca = np.concatenate([np.broadcast_to(ca_old, (len(ca_new), m, 3)), ca_new], axis=1)
    d = np.linalg.norm(ca_new[:, :, None] - allca[:, None], axis=-1)  # (c, k, m + k)
    far = (np.arange(m, m + k)[:, None] - np.arange(m + k)[None]) >= 3
    return np.where(far, d, np.inf).min(axis=(1, 2)) >= CLASH


def _build(plan: list[tuple[str, int]], omega: np.ndarray, rng: np.random.Generator,
           candidates: int) -> tuple[np.ndarray, np.ndarray] | None:
    """N, CA, C ``(L, 3, 3)`` and dihedrals of one plan, or None when a piece finds no clash-free
    candidate in a few rounds (the caller starts over)."""
    length = len(omega)
    dih = np.zeros((length, 2))
    # units placed together: a loop with everything up to the next loop (a whole hairpin moves
    # with the loop before it, so loop candidates decide where it goes)
    units: list[list[tuple[str, int]]] = []
    for kind, n in plan:
        if kind == "loop" or not units:
            units.append([])
        units[-1].append((kind, n))

    def draw(unit: list[tuple[str, int]], c: int) -> np.ndarray:
        return np.concatenate([_piece(kind, n, rng, c) for kind, n in unit], axis=1)

    first = draw(units[0], 1)[0]
    first_n = len(first)
    dih[:first_n] = first
    x = build_backbone(dih[:first_n, 0], dih[:first_n, 1], omega[:first_n])[:, :3]
    if not _clash_free(np.zeros((0, 3)), x[None, :, 1])[0]:
        return None
    pos = first_n
    for unit in units[1:]:
        n = sum(k for _, k in unit)
        for _ in range(4):  # rounds of fresh candidates
            cand = draw(unit, candidates)
            new = grow(np.broadcast_to(x[-1], (candidates, 3, 3)), np.full(candidates, dih[pos - 1, 1]),
                       omega[pos - 1], cand[..., 0], cand[..., 1],
                       np.broadcast_to(omega[pos:pos + n], (candidates, n)))
            ok = _clash_free(x[:, 1], new[:, :, 1])
            if ok.any():
                break
        else:
            return None
        allca = np.concatenate([np.broadcast_to(x[None, :, 1], (candidates, pos, 3)), new[:, :, 1]], 1)
        rg = np.sqrt(((allca - allca.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))
        best = np.flatnonzero(ok)[np.argsort(rg[ok])[:3]]
        pick = int(rng.choice(best))
        dih[pos:pos + n] = cand[pick]
        x = np.concatenate([x, new[pick]], 0)
        pos += n
    return x, dih


def synthetic_backbone(length: int, rng: np.random.Generator, topology: str | None = None,
                       candidates: int = 24, attempts: int = 50) -> tuple[Backbone, str]:
    """One clash-free backbone of ``length`` residues and its secondary-structure string (H / E
    / L per residue, as built)."""
    topology = topology or str(rng.choice(TOPOLOGIES))
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    for _ in range(attempts):
        plan = [(k, n) for k, n in _plan(topology, length, rng) if n > 0]
        omega = np.radians(rng.normal(180.0, 3.0, length))
        built = _build(plan, omega, rng, candidates)
        if built is not None:
            break
    else:
        raise RuntimeError(f"no clash-free {topology} backbone of {length} residues in {attempts} attempts")
    x, dih = built
    ss = "".join({"helix": "H", "strand": "E"}.get(k, "L") * n for k, n in plan)
    atoms = add_oxygens(x, dih[:, 1])
    atoms -= atoms[:, 1].mean(0)
    return Backbone(atoms, name=f"synthetic_{topology}"), ss


def synthetic_backbones(n: int, min_length: int = 40, max_length: int = 100, seed: int = 0,
                        topologies: tuple[str, ...] = TOPOLOGIES) -> Iterator[tuple[Backbone, str]]:
    """``n`` backbones (lengths uniform in ``[min_length, max_length]``, topologies in turn),
    each with its built secondary-structure string."""
    if not 20 <= min_length <= max_length:
        raise ValueError(f"need 20 <= min_length <= max_length, got {min_length} and {max_length}")
    rng = np.random.default_rng(seed)
    for i in range(n):
        bb, ss = synthetic_backbone(int(rng.integers(min_length, max_length + 1)), rng, topologies[i % len(topologies)])
        bb.name = f"{bb.name}_{i:05d}"
        yield bb, ss


def cached_backbones(n: int, min_length: int = 40, max_length: int = 100, seed: int = 0,
                     topologies: tuple[str, ...] = TOPOLOGIES, cache: bool = True) -> list[Backbone]:
    """:func:`synthetic_backbones` without their strings, built once (about a minute for the
    default 1000, with a progress line) and then read from ``cache_dir()/"proteins"``: an npz
    keyed by the options, numpy's version and this module's source, so a change to the builder
    rebuilds it; an unreadable cache is rebuilt."""
    import hashlib
    import io
    import warnings
    import zipfile

    from polydiff.plugin import Progress, atomic_write, cache_dir

    key = f"{n} {min_length} {max_length} {seed} {','.join(topologies)} numpy {np.__version__} " + \
        hashlib.sha1(Path(__file__).read_bytes()).hexdigest()
    file = cache_dir() / "proteins" / f"synthetic-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if cache and file.is_file():
        try:
            with np.load(file, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    bounds = np.cumsum([0, *z["lengths"].tolist()])
                    return [Backbone(z["atoms"][a:b], name=str(name))
                            for a, b, name in zip(bounds[:-1], bounds[1:], z["names"], strict=True)]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(f"{file}: unreadable synthetic-backbone cache ({err}); building them again", stacklevel=2)
    out = []
    with Progress(n, "building synthetic backbones (once; cached)", "backbone") as bar:
        for i, (bb, _) in enumerate(synthetic_backbones(n, min_length, max_length, seed, topologies)):
            out.append(bb)
            bar.update_to(i + 1)
    if cache:
        buf = io.BytesIO()
        np.savez(buf, key=np.array(key), atoms=np.concatenate([b.atoms for b in out]),
                 lengths=np.array([len(b.atoms) for b in out]), names=np.array([b.name for b in out]))
        try:
            atomic_write(file, buf.getvalue())
        except OSError:  # a cache that cannot be written costs only the time
            pass
    return out
