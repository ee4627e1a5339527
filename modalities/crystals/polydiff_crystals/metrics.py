"""Crystal-generation metrics with the CDVAE / DiffCSP / MatterGen definitions.

Validity (SMACT charge neutrality + Pauling test; all periodic interatomic distances >= 0.5 Å), coverage
(COV-R / COV-P, AMSD / AMCD on CrystalNN and Magpie fingerprints), Wasserstein distances of density and number of
elements, fingerprint diversity, uniqueness and novelty with ``StructureMatcher`` and space-group statistics.

The conventions are CDVAE's (txie-93/cdvae ``scripts/compute_metrics.py`` and ``scripts/eval_utils.py``, commit
f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea) so that numbers compare with published tables; the shared fixture
``fixtures/crystal_metrics/README.md`` documents each of them. The ones that are easy to get wrong:

* distances use true minimum images (pymatgen ``distance_matrix``), never ``d - round(d)`` nor plain Cartesian ones;
* COV thresholds the structure and composition minima separately (they may come from different crystals);
* COV uses every generated crystal; fingerprint failures leave the distance matrices but stay in the COV-P
  denominator, while the reference side is not filtered;
* a crystal whose fingerprint fails is not valid, even when its composition and structure are.
* a cell under 0.1 Å^3 is neither constructed nor valid, yet CDVAE fingerprints it, so it counts in COV's
  distances; so it does here, unless CrystalNN would take minutes on it (``CRYSTALNN_BUDGET``, a warning; the
  same bound keeps cells with a very long axis from running for hours, in CDVAE as well).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import math
import os
import pickle
import subprocess
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure
from scipy.spatial.distance import cdist, pdist
from scipy.stats import wasserstein_distance

from polydiff.plugin import Progress

__all__ = [
    "COV_CUTOFFS",
    "CRYSTALNN_BUDGET",
    "MIN_VOLUME",
    "comp_diversity",
    "composition_validity",
    "coverage",
    "crystal_from_arrays",
    "density_wdist",
    "evaluate_crystals",
    "fingerprints",
    "hit_rate",
    "min_periodic_distance",
    "novelty",
    "num_elements_wdist",
    "per_crystal_flags",
    "reduced_composition",
    "scale_composition",
    "spacegroup_distribution",
    "spacegroup_number",
    "spacegroup_tv",
    "struct_diversity",
    "structure_validity",
    "symmetric_share",
    "uniqueness",
]

# (structure fingerprint cutoff, scaled composition fingerprint cutoff), CDVAE's COV_Cutoffs
COV_CUTOFFS: dict[str, tuple[float, float]] = {
    "mp20": (0.4, 10.0),
    "carbon": (0.2, 4.0),
    "perovskite": (0.2, 4.0),
    "mp_20": (0.4, 10.0),
    "carbon_24": (0.2, 4.0),
    "perov_5": (0.2, 4.0),
}
MIN_VOLUME = 0.1  # Å^3; smaller cells are not built (CDVAE Crystal.get_structure) and are not valid
# CrystalNN's work on a structure, in site pairs its Voronoi step takes in (``_crystalnn_cost``). It grows
# as 1 / volume for cells under MIN_VOLUME (which CDVAE still fingerprints) and with the cube of a very long axis
# (a site its neighbours do not enclose makes pymatgen double its search radius up to the cell's diagonal).
# Structures beyond this budget (about two minutes of CrystalNN here) are not fingerprinted, with a warning.
CRYSTALNN_BUDGET = 1.5e6
MATCHER_TOLERANCES = {"stol": 0.5, "angle_tol": 10, "ltol": 0.3}
# a progress bar for more new fingerprints than this: CrystalNN takes about 0.4 s per crystal here, so an
# evaluation against the default data's 150 reference crystals (a minute) shows one
_PROGRESS_THRESHOLD = 30
_FP_CACHE_MAX = 200_000

# Means and standard deviations of the 132 Magpie ElementProperty features that CDVAE scales composition
# fingerprints with (CompScalerMeans / CompScalerStds in cdvae/common/constants.py, txie-93/cdvae commit
# f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea); the values are copied verbatim, in feature order.
_MAGPIE_MEANS = """
21.194441759304013 58.20212663122281 37.0076848719188 36.52738520455582 13.350626389725019 29.468922184630255
28.71735137747704 78.8868535524408 50.16950217496375 59.56764743604155 19.020429484306277 61.335572740454325
47.14515893344343 141.75135923307818 94.60620029962553 85.95794070476977 34.07300576173523 68.06189371516912
637.9862061297893 1817.2394155466848 1179.2532094169414 1127.2743149568837 431.51034284549826 909.1060025135899
3.7744320927984534 13.673707104881585 9.899275012083132 9.620186927095652 3.8426065581251856 9.96950217496375
3.305461575640406 5.483035282745288 2.1775737071048815 4.215114560306594 0.8206087101824266 3.732092798453359
109.16732721121315 179.5570323827936 70.38970517158047 136.0978305229613 27.027545809538527 119.16713388110198
1.2721433060967857 2.4614001837260617 1.1892568776289631 1.9844483610247092 0.4691462290494881 2.100143582306204
1.4829869502174964 1.9899951667472209 0.5070082165297245 1.7956250375970633 0.2056251946617602 1.745867568873852
0.05650072498791687 2.3618656355727405 2.3053649105848235 1.2829636137262992 0.9995555685850794
1.5150314161430642 0.7731271145480909 7.4648139197680035 6.691686805219913 4.010677272036105 2.612307566507693
3.303528274528758 0.2739487675205413 5.889753504108265 5.615804736587724 2.3244356612494683 2.1426251769710905
1.4464475592073465 4.739246012566457 14.578395360077332 9.839149347510874 9.413701584608935 3.537059747455868
8.550410826486225 0.008119864668922184 0.43286611889801835 0.4247462542290962 0.16687837041055423
0.17139889490813626 0.10898985016916385 0.06283228612856452 2.6573707104881583 2.594538424359594
1.219602938224228 1.0596390454742999 1.1120831319478008 0.14842919284678588 3.8473658772353794
3.6989366843885936 1.4541605082183982 1.3862277372859781 0.8018849685838569 0.03542774287095215
2.4474625422909617 2.4120347994200095 0.7745217539010397 0.9145812330586208 0.3198646689221846 1.552730787820203
6.910681488641856 5.357950700821653 3.615163570754227 1.9072256165179793 2.6702271628806185 14.608536589568727
34.83222477045747 20.223688180890715 22.47901710732293 7.17674504190757 18.641837024143584 0.009066988883518605
0.9185191396809959 0.9094521507974755 0.4368550481994018 0.38905942883427047 0.48375558240695804
0.0012985909686158003 0.21708593995837092 0.21578734898975546 0.08167977375391729 0.08155386250705281
0.06036340747305611 116.32010633156113 217.5905751570807 101.27046882551957 162.87154200548844
41.920624308665566 136.4664572257129
"""
_MAGPIE_STDS = """
16.35781741152948 20.189540126474725 20.516298414514758 16.816765336550194 7.966591328222124 22.270791076753067
21.802116630115243 12.804546460581966 24.756629388687983 13.930306216047477 10.214535652334533
27.801612936980938 39.74031558353379 54.269739685575814 53.70466607591569 42.852342044453444 20.78341194242935
56.28783510219931 563.8004405882157 732.0722574247563 736.2122907972664 606.351603075103 272.62646060896407
810.6156779688841 3.0362262146833428 3.2075174256751606 4.0633818989245665 2.9738244769894764 1.7805586029644034
5.643243225066782 1.1994336274579853 0.8939013979423364 1.2297581799896975 1.0066021334519983
0.49129747526397105 1.4159553146070951 31.754756468836774 28.054241463256226 38.16336054795611 25.83485338379922
15.388376641904662 39.67137484594156 0.31988340032011076 0.6833658037760536 0.7464197945553585
0.4881349085029781 0.3176591553643101 0.8601748146737138 0.5864801661863596 0.10048913710210677
0.5836289120986499 0.2811748167435902 0.2468696279341553 0.5007375747433073 0.37237566669029587
1.7235989187720187 1.7058836077743305 1.1558859351244697 0.7677842566598179 1.9203550253462733
2.1289400248865182 3.5326064169848332 3.708508303762512 2.8709941136664567 1.6110681295257014 4.310192504023775
1.6644182118209292 6.228287671164213 6.1200848808512305 3.1986202996110302 2.4492978142248867 4.030497343977163
3.662028270049814 6.8192125550358345 6.614243783887738 4.334987449618594 2.568319610320196 5.9494890200106925
0.08974370432893491 0.4954725441517777 0.494304434278516 0.2309340434963803 0.2072873961103969
0.31162647950590266 0.39805702757060923 1.8111691089355726 1.7973395144505941 0.9486995373104102
0.7538753151875139 1.5233177017753785 0.7952606701778913 3.711190225170556 3.638721437232604 1.7171165424006831
1.4307904413917036 2.1047820817622904 0.49193748323158065 4.064840532426175 4.035286619587313 1.4858577214526643
1.5799117659864677 1.6130080156145745 1.555249156140194 4.776932951077492 4.569790780459629 2.224617778217326
1.7217507416156546 2.5969733650703763 7.215001918238936 19.252513469778584 18.775394044177858 9.447222764774764
6.7467931836261235 11.106825644766616 0.27206794253092115 1.6449321034573106 1.6236282792648686
0.8506917026741503 0.7020945355184042 1.2281895279350408 0.04134438177238229 0.5508855867341717
0.5486095551438679 0.24239297524046477 0.2127779137935831 0.3036750942874694 80.06063945615361
21.345794811194104 80.16475677581042 52.58533928558554 35.40836791039412 85.980205895116
"""


@cache
def _scaler() -> tuple[np.ndarray, np.ndarray]:
    means = np.array(_MAGPIE_MEANS.split(), dtype=float)
    stds = np.array(_MAGPIE_STDS.split(), dtype=float)
    assert means.shape == stds.shape == (132,)
    return means, stds


# ----------------------------------------------------------------------------------------------- building crystals


@dataclass(frozen=True)
class _Crystal:
    """One generated or reference crystal: its structure (None when it cannot be built) and atomic numbers."""

    structure: Structure | None
    atom_types: tuple[int, ...] | None
    reason: str | None = None
    tiny: Structure | None = None  # a cell under MIN_VOLUME: not constructed, yet CDVAE still fingerprints it

    @property
    def constructed(self) -> bool:
        return self.structure is not None

    @property
    def featurizable(self) -> Structure | None:
        """What CDVAE's ``get_fingerprints`` featurises: the built structure, or the too-small one."""
        return self.structure if self.structure is not None else self.tiny


def crystal_from_arrays(
    frac_coords: np.ndarray | Sequence,
    atom_types: np.ndarray | Sequence,
    lengths: np.ndarray | Sequence,
    angles: np.ndarray | Sequence,
) -> tuple[Structure | None, str | None]:
    """Build a Structure from CDVAE-style arrays (fractional coordinates, atomic numbers, Å, degrees).

    Returns ``(structure, None)``, or ``(None, reason)`` when the crystal cannot be built, as CDVAE's
    ``Crystal.get_structure`` decides: a negative length (``non_positive_lattice``), a failing constructor
    (``construction_raises_exception``) or a volume below 0.1 Å^3 (``unrealistically_small_lattice``). We also
    refuse non-finite numbers (``non_finite_values``), empty crystals (``no_atoms``) and atomic numbers outside
    1..118 (``invalid_atom_types``), which would crash CDVAE. ``atom_types`` may also be element symbols.
    Wrong array shapes, unknown symbols and boolean types raise ValueError.
    """
    structure, reason = _build(frac_coords, atom_types, lengths, angles)
    return (None, reason) if reason is not None else (structure, None)


def _build(
    frac_coords: np.ndarray | Sequence,
    atom_types: np.ndarray | Sequence,
    lengths: np.ndarray | Sequence,
    angles: np.ndarray | Sequence,
) -> tuple[Structure | None, str | None]:
    """:func:`crystal_from_arrays`, except that a cell under MIN_VOLUME comes back with its reason and its
    structure: CDVAE builds it before the volume check, calls it not constructed and still fingerprints it."""
    frac = np.asarray(frac_coords, dtype=float)
    types = _symbols_to_numbers(np.asarray(atom_types))
    abc = np.asarray(lengths, dtype=float).reshape(-1)
    ang = np.asarray(angles, dtype=float).reshape(-1)
    if abc.shape != (3,) or ang.shape != (3,):
        raise ValueError(f"lengths and angles need 3 values each, got shapes {abc.shape} and {ang.shape}")
    if types.ndim != 1 or (types.size and frac.shape != (types.size, 3)):
        raise ValueError(f"frac_coords must be (n_atoms, 3) for {types.size} atom types, got {frac.shape}")
    if types.size == 0:
        return None, "no_atoms"
    if not (np.isfinite(frac).all() and np.isfinite(abc).all() and np.isfinite(ang).all()):
        return None, "non_finite_values"
    if _atom_types(types) is None:
        return None, "invalid_atom_types"
    if abc.min() < 0:
        return None, "non_positive_lattice"
    try:
        structure = Structure(
            lattice=Lattice.from_parameters(*abc.tolist(), *ang.tolist()),
            species=types.astype(np.int64),
            coords=frac,
            coords_are_cartesian=False,
        )
        volume = structure.volume
    except Exception:
        return None, "construction_raises_exception"
    if not volume >= MIN_VOLUME:  # also catches NaN
        return (structure if math.isfinite(volume) else None), "unrealistically_small_lattice"
    return structure, None


def _symbols_to_numbers(types: np.ndarray) -> np.ndarray:
    """Element symbols (``"Na"``) as atomic numbers; numbers pass through. An unknown symbol or a
    boolean array is an error, not an invalid crystal: it is the caller's input, not a sample."""
    if types.dtype.kind == "b":
        raise ValueError("atom_types are atomic numbers or element symbols, got booleans")
    if types.dtype.kind not in "US":
        return types
    numbers = []
    for sym in types.reshape(-1).tolist():
        try:
            numbers.append(_atomic_number(sym.strip()))
        except ValueError:
            raise ValueError(f"atom_types: {sym!r} is not an element symbol") from None
    return np.asarray(numbers, dtype=np.int64).reshape(types.shape)


def _atom_types(types: np.ndarray | Sequence) -> tuple[int, ...] | None:
    """Atomic numbers as Python ints, or None if some value is not an integer in 1..118."""
    arr = np.asarray(types)
    if arr.ndim != 1 or arr.size == 0:
        return None
    try:
        ints = arr.astype(np.int64)
    except (TypeError, ValueError):
        return None
    if not np.array_equal(ints, arr) or ints.min() < 1 or ints.max() > 118:
        return None
    return tuple(int(z) for z in ints)


def _as_crystal(item: Structure | Mapping | None, where: str) -> _Crystal:
    """Accept a Structure, a mapping of CDVAE arrays, or None (a sample that could not be decoded)."""
    if item is None:
        return _Crystal(None, None, "missing")
    if isinstance(item, Structure):
        if not item.is_ordered:
            raise ValueError(f"{where}: disordered structures are not supported (partial occupancies)")
        if len(item) == 0:
            return _Crystal(None, None, "no_atoms")
        types = _atom_types([getattr(site.specie, "Z", 0) for site in item])
        if types is None:
            raise ValueError(f"{where}: every site needs a real element (atomic number 1..118)")
        if not item.volume >= MIN_VOLUME:
            tiny = item if math.isfinite(item.volume) else None
            return _Crystal(None, types, "unrealistically_small_lattice", tiny=tiny)
        return _Crystal(item, types, None)
    if isinstance(item, Mapping):
        missing = {"frac_coords", "atom_types", "lengths", "angles"} - set(item)
        if missing:
            raise ValueError(f"{where}: crystal arrays lack the field(s) {sorted(missing)}")
        try:
            structure, reason = _build(item["frac_coords"], item["atom_types"], item["lengths"], item["angles"])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        if reason is not None:
            return _Crystal(None, _atom_types(item["atom_types"]), reason, tiny=structure)
        return _Crystal(structure, _atom_types(item["atom_types"]), None)
    raise TypeError(f"{where}: expected a pymatgen Structure, a mapping of crystal arrays or None, got {type(item)}")


def _as_crystals(items: Iterable, name: str) -> list[_Crystal]:
    return [_as_crystal(item, f"{name}[{i}]") for i, item in enumerate(items)]


# ----------------------------------------------------------------------------------------------- validity


def reduced_composition(atom_types: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Elements (sorted atomic numbers) and gcd-reduced counts: the composition SMACT validity works on."""
    counter = Counter(int(z) for z in atom_types)
    if not counter:
        raise ValueError("an empty crystal has no composition")
    elems = tuple(sorted(counter))
    counts = [counter[z] for z in elems]
    divisor = math.gcd(*counts)
    return elems, tuple(c // divisor for c in counts)


def _atomic_number(element: int | str | Element) -> int:
    if isinstance(element, Element):
        return element.Z
    if isinstance(element, str):
        return Element(element).Z
    return int(element)


@lru_cache(maxsize=256)
def _smact_data(symbol: str) -> tuple[tuple[int, ...], float | None] | None:
    """Oxidation states and Pauling electronegativity from smact's tables, or None if smact lacks the element."""
    import smact

    try:
        element = smact.Element(symbol)
    except NameError:
        return None
    return tuple(element.oxidation_states), element.pauling_eneg


def composition_validity(elements: Sequence[int | str], counts: Sequence[int]) -> bool:
    """SMACT validity as CDVAE's ``smact_validity`` (Pauling test on, alloys allowed).

    True for one element or all metals; otherwise some combination of one oxidation state per element must make the
    gcd-reduced counts exactly neutral and pass smact's Pauling electronegativity test (a TypeError there, from
    missing electronegativities, counts as a pass, as in CDVAE). Elements smact has no data for make it False.
    """
    import smact

    if len(elements) != len(counts) or not len(elements):
        raise ValueError(f"need one count per element, got {len(elements)} elements and {len(counts)} counts")
    merged: Counter[int] = Counter()
    for element, count in zip(elements, counts):
        if int(count) != count or count <= 0:
            raise ValueError(f"counts must be positive integers, got {count!r} for {element!r}")
        merged[_atomic_number(element)] += int(count)
    elems = sorted(merged)
    divisor = math.gcd(*(merged[z] for z in elems))
    reduced = [merged[z] // divisor for z in elems]
    symbols = [Element.from_Z(z).symbol for z in elems]
    if len(symbols) == 1:
        return True
    if all(symbol in smact.metals for symbol in symbols):
        return True
    data = [_smact_data(symbol) for symbol in symbols]
    if any(d is None for d in data):
        return False
    enegs = [d[1] for d in data]
    if any(e is None for e in enegs):  # smact's test is order-dependent here: run it as CDVAE does
        return _exhaustive_validity([d[0] for d in data], enegs, reduced)
    return _split_validity([d[0] for d in data], enegs, reduced)


def _exhaustive_validity(states: Sequence[Sequence[int]], enegs: Sequence[float | None], reduced: Sequence[int]
                         ) -> bool:
    """CDVAE's loop: every combination of one oxidation state per element, neutral ones tested
    with smact's Pauling test (a TypeError there counts as a pass). Exponential in the number of
    elements: used only where an electronegativity is missing."""
    from smact.screening import pauling_test

    for ox_states in itertools.product(*states):
        if sum(o * c for o, c in zip(ox_states, reduced)) != 0:
            continue
        try:
            if pauling_test(ox_states, enegs):
                return True
        except TypeError:
            return True
    return False


def _split_validity(states: Sequence[Sequence[int]], enegs: Sequence[float], reduced: Sequence[int]) -> bool:
    """The same answer as :func:`_exhaustive_validity` when every electronegativity is known, in
    polynomial time. smact's Pauling test passes iff every cation is less electronegative than
    every anion, i.e. iff some cut between distinct electronegativities has only cations or
    neutral states below it and only anions or neutral states above it; for each cut, whether a
    neutral combination exists is a subset-sum over the reachable total charges."""
    levels = sorted(set(enegs))
    for cut in range(len(levels) + 1):
        low = set(levels[:cut])
        sums = {0}
        for ox, e, c in zip(states, enegs, reduced):
            allowed = [o for o in ox if (o >= 0 if e in low else o <= 0)]
            sums = {s + o * c for s in sums for o in allowed}
            if not sums:
                break
        if 0 in sums:
            return True
    return False


def min_periodic_distance(structure: Structure) -> float:
    """Smallest distance between two different sites over all periodic images (inf for a single site).

    pymatgen's ``distance_matrix`` finds true minimum images (it searches neighbouring images of the LLL-reduced
    cell), so close pairs across a boundary or in skewed cells are seen; a site's distance to its own images is not.
    """
    if len(structure) < 2:
        return math.inf
    dist = np.array(structure.distance_matrix, dtype=float)
    np.fill_diagonal(dist, np.inf)
    return float(dist.min())


def structure_validity(structure: Structure | None, cutoff: float = 0.5) -> bool:
    """CDVAE structural validity: every interatomic periodic distance >= cutoff and volume >= 0.1 Å^3.

    A single-atom cell passes (only self-images exist, which CDVAE does not check); NaN fails.
    """
    if structure is None or len(structure) == 0 or not structure.volume >= MIN_VOLUME:
        return False
    return min_periodic_distance(structure) >= cutoff


# ----------------------------------------------------------------------------------------------- fingerprints
#
# CrystalNN order parameters branch on angle thresholds, so the fingerprint is discontinuous in the geometry: the
# last-bit differences between OpenBLAS kernels (SkylakeX vs Haswell) moved one component of the fixture's broken_04
# by 5e-3. The reference values were computed with OpenBLAS' Haswell kernels, so unless this process already runs
# them, fingerprints are computed in one long-lived worker process started with OPENBLAS_CORETYPE=Haswell (a plain
# subprocess speaking pickle over pipes: no multiprocessing, so scripts need no __main__ guard). Set
# POLYDIFF_CRYSTALNN_BLAS=native to compute in-process, or to another OpenBLAS core name to pin that one.

_BLAS_ENV = "POLYDIFF_CRYSTALNN_BLAS"
_DEFAULT_BLAS_CORE = "Haswell"
_WORKER_CHUNK = 16
_FP_CACHE: dict[bytes, tuple[np.ndarray | None, np.ndarray | None]] = {}
_worker_lock = threading.Lock()
_worker_state: dict = {"proc": None, "disabled": False, "cores": None}


@cache
def _featurizers():
    from matminer.featurizers.composition.composite import ElementProperty
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops"), ElementProperty.from_preset("magpie")


def _featurize(structure: Structure, atom_types: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(site-mean CrystalNN "ops" fingerprint, raw Magpie fingerprint), or (None, None) if featurising raises."""
    site_fp, comp_fp = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CrystalNN and Magpie warn per site; a raised warning must not fail a fp
        try:
            comp = np.asarray(comp_fp.featurize(Composition(Counter(atom_types))), dtype=float)
            sites = [site_fp.featurize(structure, i) for i in range(len(structure))]
            return np.asarray(sites, dtype=float).mean(axis=0), comp
        except Exception:
            return None, None


@cache
def _openblas_cores() -> frozenset[str]:
    """Kernel names of the OpenBLAS libraries loaded in this process (empty if none or threadpoolctl is missing)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return frozenset()
    return frozenset(str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas")


def _worker_main() -> None:
    """Worker loop: read pickled lists of (structure, atom_types), answer with their fingerprints."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of the libraries go to stderr, never into the pickle stream
    sys.stdout = sys.stderr
    pickle.dump(sorted(_openblas_cores()), out)
    out.flush()
    while True:
        try:
            batch = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        pickle.dump([_featurize(s, t) for s, t in batch], out)
        out.flush()


def _pinned_core() -> str | None:
    wanted = os.environ.get(_BLAS_ENV, _DEFAULT_BLAS_CORE)
    if not wanted or wanted.lower() == "native" or _worker_state["disabled"]:
        return None
    cores = {c.lower() for c in _openblas_cores()}
    return None if not cores or cores == {wanted.lower()} else wanted


def _stop_worker() -> None:
    proc = _worker_state["proc"]
    _worker_state["proc"] = None
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _start_worker(core: str) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_CORETYPE": core, "OPENBLAS_NUM_THREADS": "1", _BLAS_ENV: "native"}
    # load this file under a private name: no package __init__ (which may pull in torch), no sys.path changes
    code = (
        "import importlib.util as u, sys; s = u.spec_from_file_location('_polydiff_crystal_fp_worker', sys.argv[1]); "
        "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); m._worker_main()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, os.path.abspath(__file__)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    cores = pickle.load(proc.stdout)
    if {c.lower() for c in cores} != {core.lower()}:
        warnings.warn(f"the fingerprint worker runs OpenBLAS {cores}, not {core}: CrystalNN values may differ by "
                      "~1e-3 on borderline geometries from the reference", stacklevel=4)  # fmt: skip
    _worker_state.update(proc=proc, cores=cores)
    atexit.register(_stop_worker)
    return proc


def _compute_batch(batch: list[tuple[Structure, tuple[int, ...]]]) -> list[tuple]:
    core = _pinned_core()
    if core is not None:
        with _worker_lock:
            try:
                proc = _worker_state["proc"] or _start_worker(core)
                pickle.dump(batch, proc.stdin)
                proc.stdin.flush()
                return pickle.load(proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as err:
                _stop_worker()
                _worker_state["disabled"] = True
                warnings.warn(
                    f"fingerprint worker failed ({err!r}); computing in-process from now on, with this process' "
                    "BLAS kernels",
                    stacklevel=4,
                )
    return [_featurize(s, t) for s, t in batch]


def _content_key(structure: Structure, atom_types: tuple[int, ...]) -> bytes:
    digest = hashlib.sha1(np.ascontiguousarray(structure.lattice.matrix, dtype=float).tobytes())
    digest.update(np.ascontiguousarray(structure.frac_coords, dtype=float).tobytes())
    digest.update(np.asarray(atom_types, dtype=np.int64).tobytes())
    return digest.digest()


def _fingerprints_of(
    crystals: list[_Crystal], progress: bool | None = None, name: str = "structures"
) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """Fingerprints of built crystals, from the in-process cache (keyed by content) or computed in chunks."""
    targets = [c.featurizable for c in crystals]
    too_costly = [i for i, s in enumerate(targets) if s is not None and _crystalnn_cost(s) > CRYSTALNN_BUDGET]
    for i in too_costly:
        targets[i] = None
    if too_costly:
        first = crystals[too_costly[0]].featurizable
        warnings.warn(
            f"{len(too_costly)} of {len(crystals)} {name} have cells far under {MIN_VOLUME} A^3 or a very long axis "
            f"(first: index {too_costly[0]}, volume {first.volume:.3g} A^3, lengths "
            f"{', '.join(f'{x:.4g}' for x in first.lattice.abc)} A); CrystalNN would take minutes or hours on each, "
            "so they get no fingerprint (CDVAE would try) and are left out of the COV distances",
            stacklevel=3,
        )
    keys = [None if s is None else _content_key(s, c.atom_types) for s, c in zip(targets, crystals)]
    todo: dict[bytes, tuple[Structure, tuple[int, ...]]] = {}
    for key, s, crystal in zip(keys, targets, crystals):
        if key is not None and key not in _FP_CACHE:
            todo[key] = (s, crystal.atom_types)
    pending = list(todo.items())
    chunks = [pending[i : i + _WORKER_CHUNK] for i in range(0, len(pending), _WORKER_CHUNK)]
    show = len(pending) > _PROGRESS_THRESHOLD if progress is None else progress
    bar = _progress_bar(len(pending), f"fingerprints of {name}") if show else None
    for chunk in chunks:
        if len(_FP_CACHE) >= _FP_CACHE_MAX:
            _FP_CACHE.clear()
        _FP_CACHE.update(zip((k for k, _ in chunk), _compute_batch([v for _, v in chunk])))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    pairs = [(None, None) if key is None else _FP_CACHE[key] for key in keys]
    failed = sum(1 for t, (s, _) in zip(targets, pairs) if t is not None and s is None)
    if failed:
        none = sum(t is None for t in targets)  # undecodable: no fingerprint either (n_fingerprint_failed counts both)
        also = f" (and {none} undecodable have none: {failed + none} without a fingerprint)" if none else ""
        warnings.warn(
            f"fingerprints failed for {failed} of {len(crystals)} {name}{also}; they count as not valid", stacklevel=3
        )
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _crystalnn_cost(structure: Structure) -> float:
    """Site pairs CrystalNN's Voronoi step takes in, summed over sites: the periodic images within its search
    radius around each site. pymatgen's ``VoronoiNN`` starts at 7 Å and, while a site's Voronoi cell is unbounded
    (the site is not enclosed by its neighbours within the radius), doubles the radius up to the cell's longest
    diagonal. A site not enclosed at 7 Å is counted at that diagonal and ``_OPEN_SITE_WEIGHT`` times over (its
    layered neighbourhood tessellates slowly), an upper bound. Infinite for a flat or non-finite cell."""
    volume = structure.volume
    if not (math.isfinite(volume) and volume > 0 and np.isfinite(structure.lattice.matrix).all()):
        return math.inf
    n = len(structure)

    def pairs(radius: float) -> float:  # images of the n sites within ``radius`` of one site
        return n * 4.0 / 3.0 * math.pi * radius**3 / volume

    corners = np.array([[1, 1, 1], [-1, 1, 1], [1, -1, 1], [1, 1, -1]]) @ structure.lattice.matrix
    longest = float(np.linalg.norm(corners, axis=1).max()) + 0.01
    base = n * pairs(_CRYSTALNN_RADIUS)
    if longest <= _CRYSTALNN_RADIUS or base > CRYSTALNN_BUDGET:  # no doubling possible, or too costly already
        return base
    open_pair = _OPEN_SITE_WEIGHT * pairs(longest) - pairs(_CRYSTALNN_RADIUS)
    if base + n * open_pair <= CRYSTALNN_BUDGET:  # affordable even if every site were open: no need to look
        return base + n * open_pair
    return base + (n - _enclosed_sites(structure, _CRYSTALNN_RADIUS)) * open_pair


_CRYSTALNN_RADIUS = 7.0  # CrystalNN's default search_cutoff
# CrystalNN's time per site pair is larger for open (layered) neighbourhoods: measured on this machine, 2-site
# slabs of 150, 200 and 250 Å took 4, 48 and 136 s (4.2e4, 7.5e4 and 1.2e5 pairs at the cell's diagonal), a
# 5-site 0.097 Å^3 cell 26 s (3.7e5 pairs at 7 Å); with this weight both reach the budget in about two minutes
_OPEN_SITE_WEIGHT = 15.0


def _enclosed_sites(structure: Structure, radius: float) -> int:
    """Sites strictly inside the convex hull of their neighbours within ``radius``: those whose Voronoi cell is
    bounded, so that pymatgen's ``VoronoiNN`` needs no larger radius."""
    from scipy.spatial import ConvexHull, QhullError

    centre, other, images, _ = structure.get_neighbor_list(radius)
    offsets = structure.lattice.get_cartesian_coords(structure.frac_coords[other] + images)
    offsets -= structure.cart_coords[centre]
    count = 0
    for i in range(len(structure)):
        around = offsets[centre == i]
        if len(around) < 4:
            continue
        try:
            hull = ConvexHull(around)
        except QhullError:  # all on one plane or line
            continue
        count += bool((hull.equations[:, 3] < -1e-8 * radius).all())  # the origin is inside every facet
    return count


def _progress_bar(total: int, desc: str) -> Progress:
    """polydiff's progress: a bar on a terminal, sparse plain lines in logs (a raw tqdm bar
    filled logs with carriage returns)."""
    return Progress(total, desc, "crystal")


def fingerprints(
    structures: Sequence[Structure | Mapping | None], *, progress: bool | None = None
) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """Structure (61-d CrystalNN "ops", mean over sites) and raw composition (132-d Magpie) fingerprints.

    Both are None for a crystal that cannot be built or whose featurisation raises (CDVAE drops both then). A cell
    under ``MIN_VOLUME`` is built for this, as CDVAE does, unless it is too small to featurise in bounded time.
    Results are cached in-process by structure content, so repeated references are fingerprinted once; they are
    computed with pinned OpenBLAS kernels (see the comment above). A progress bar shows for more than 30 new
    structures unless ``progress`` says otherwise.
    """
    return _fingerprints_of(_as_crystals(structures, "structures"), progress)


def scale_composition(fp: np.ndarray | Sequence) -> np.ndarray:
    """CDVAE's CompScaler: standardise raw Magpie fingerprints (one or a stack) with fixed statistics, NaN -> 0."""
    means, stds = _scaler()
    scaled = (np.asarray(fp, dtype=float) - means) / stds
    return np.where(np.isnan(scaled), 0.0, scaled)


# ----------------------------------------------------------------------------------------------- coverage


def _resolve_cutoffs(cutoffs: str | tuple[float, float]) -> tuple[float, float]:
    if isinstance(cutoffs, str):
        key = cutoffs.lower()
        if key not in COV_CUTOFFS:
            raise ValueError(f"unknown COV cutoffs {cutoffs!r}; choose from {sorted(COV_CUTOFFS)} or a (struct, comp)")
        return COV_CUTOFFS[key]
    struct_cutoff, comp_cutoff = cutoffs
    return float(struct_cutoff), float(comp_cutoff)


def coverage(
    pred_struct_fps: Sequence[np.ndarray | None],
    pred_comp_fps: Sequence[np.ndarray | None],
    gt_struct_fps: Sequence[np.ndarray],
    gt_comp_fps: Sequence[np.ndarray],
    struct_cutoff: float,
    comp_cutoff: float,
    n_pred_total: int | None = None,
    *,
    with_distances: bool = False,
) -> dict:
    """COV-R, COV-P, AMSD and AMCD as CDVAE's ``compute_cov`` (composition fingerprints are raw, scaled here).

    Generated crystals missing a fingerprint leave the distance matrices but stay in the COV-P denominator
    ``n_pred_total`` (default: all generated). Recall and precision threshold the nearest structure and the nearest
    composition distance separately. ``with_distances`` adds the four nearest-distance vectors
    (``struc_recall_dist``, ``struc_precision_dist``, ``comp_recall_dist``, ``comp_precision_dist``).
    """
    if len(pred_struct_fps) != len(pred_comp_fps) or len(gt_struct_fps) != len(gt_comp_fps):
        raise ValueError("structure and composition fingerprint lists must have the same length on each side")
    if not len(gt_struct_fps):
        raise ValueError("coverage needs at least one reference crystal")
    if any(s is None or c is None for s, c in zip(gt_struct_fps, gt_comp_fps)):
        raise ValueError("reference fingerprints must not be None (CDVAE does not filter the reference side)")
    n_pred_total = len(pred_struct_fps) if n_pred_total is None else n_pred_total
    kept = [(s, c) for s, c in zip(pred_struct_fps, pred_comp_fps) if s is not None and c is not None]
    gt_struct = np.asarray(gt_struct_fps, dtype=float)
    gt_comp = scale_composition(np.asarray(gt_comp_fps, dtype=float))
    if kept:
        struct_dist = cdist(np.asarray([k[0] for k in kept], dtype=float), gt_struct)
        comp_dist = cdist(scale_composition(np.asarray([k[1] for k in kept], dtype=float)), gt_comp)
        struc_recall, struc_precision = struct_dist.min(axis=0), struct_dist.min(axis=1)
        comp_recall, comp_precision = comp_dist.min(axis=0), comp_dist.min(axis=1)
    else:
        struc_recall = comp_recall = np.full(len(gt_struct), np.inf)
        struc_precision = comp_precision = np.zeros(0)
    recalled = (struc_recall <= struct_cutoff) & (comp_recall <= comp_cutoff)
    precise = (struc_precision <= struct_cutoff) & (comp_precision <= comp_cutoff)
    result: dict = {
        "cov_recall": float(np.mean(recalled)),
        "cov_precision": float(np.sum(precise) / n_pred_total) if n_pred_total else math.nan,
        "amsd_recall": float(np.mean(struc_recall)) if kept else math.nan,
        "amsd_precision": float(np.mean(struc_precision)) if kept else math.nan,
        "amcd_recall": float(np.mean(comp_recall)) if kept else math.nan,
        "amcd_precision": float(np.mean(comp_precision)) if kept else math.nan,
    }
    if with_distances:
        result.update(
            struc_recall_dist=struc_recall,
            struc_precision_dist=struc_precision,
            comp_recall_dist=comp_recall,
            comp_precision_dist=comp_precision,
        )
    return result


# ----------------------------------------------------------------------------------------------- distributions


def _wdist(pred: list[float], ref: list[float]) -> float:
    if not pred or not ref:
        return math.nan
    return float(wasserstein_distance(pred, ref))


def density_wdist(pred: Sequence[Structure], reference: Sequence[Structure]) -> float:
    """Wasserstein-1 distance between the densities (g/cm^3) of generated and reference structures."""
    return _wdist([s.density for s in pred], [s.density for s in reference])


def _n_elements(structure: Structure) -> int:
    """Distinct elements (Fe2+ and Fe3+ are one element, as CDVAE's atom types count them)."""
    return len(structure.composition.element_composition)


def num_elements_wdist(pred: Sequence[Structure], reference: Sequence[Structure]) -> float:
    """Wasserstein-1 distance between the numbers of distinct elements of generated and reference structures."""
    return _wdist([_n_elements(s) for s in pred], [_n_elements(s) for s in reference])


def comp_diversity(comp_fps: Sequence[np.ndarray]) -> float:
    """Mean pairwise Euclidean distance of the scaled composition fingerprints (raw fingerprints in; NaN if < 2)."""
    if len(comp_fps) < 2:
        return math.nan
    return float(pdist(scale_composition(np.asarray(comp_fps, dtype=float))).mean())


def struct_diversity(struct_fps: Sequence[np.ndarray]) -> float:
    """Mean pairwise Euclidean distance of the structure fingerprints (NaN if fewer than 2)."""
    if len(struct_fps) < 2:
        return math.nan
    return float(pdist(np.asarray(struct_fps, dtype=float)).mean())


def hit_rate(values: Sequence[float | None], low: float, high: float) -> float:
    """Share of values inside [low, high]; None and NaN count as misses (NaN for no values)."""
    if not len(values):
        return math.nan
    hits = sum(1 for v in values if v is not None and low <= v <= high)
    return hits / len(values)


# ----------------------------------------------------------------------------------------------- matching


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHER_TOLERANCES)


def _fits(matcher, a: Structure, b: Structure, failures: list[int]) -> bool:
    try:
        return bool(matcher.fit(a, b))
    except Exception:
        failures.append(1)
        return False


def _warn_failures(failures: list[int], what: str) -> None:
    if failures:
        warnings.warn(
            f"StructureMatcher raised on {len(failures)} comparisons in {what}; counted as no match", stacklevel=3
        )


def _valid_mask(structures: Sequence[Structure | Mapping | None], valid: Sequence[bool] | None) -> list[_Crystal]:
    """The valid crystals, by the given flags or by composition and structure validity."""
    crystals = _as_crystals(structures, "structures")
    if valid is None:
        valid = [_comp_valid(c) and structure_validity(c.structure) for c in crystals]
    elif len(valid) != len(crystals):
        raise ValueError(f"got {len(valid)} validity flags for {len(crystals)} structures")
    return [c for c, v in zip(crystals, valid) if v and c.constructed]


def uniqueness(structures: Sequence[Structure | Mapping | None], valid: Sequence[bool] | None = None) -> float:
    """Share of valid structures that match no earlier valid one (StructureMatcher stol 0.5, angle 10, ltol 0.3).

    ``valid`` defaults to composition and structure validity; structures are compared within their reduced formula.
    """
    kept = _valid_mask(structures, valid)
    if not kept:
        return math.nan
    matcher, failures = _matcher(), []
    seen: dict[str, list[tuple[Structure, bool]]] = {}
    n_unique = 0
    for crystal in kept:
        earlier = seen.setdefault(crystal.structure.composition.reduced_formula, [])
        # first-seen unique structures are the likeliest matches; the rest only matter if those all miss
        ordered = [s for s, u in earlier if u] + [s for s, u in earlier if not u]
        duplicate = any(_fits(matcher, crystal.structure, other, failures) for other in ordered)
        earlier.append((crystal.structure, not duplicate))
        n_unique += not duplicate
    _warn_failures(failures, "uniqueness")
    return n_unique / len(kept)


def novelty(
    structures: Sequence[Structure | Mapping | None],
    train: Sequence[Structure],
    valid: Sequence[bool] | None = None,
) -> float:
    """Share of valid structures that match no training structure (same StructureMatcher as ``uniqueness``)."""
    kept = _valid_mask(structures, valid)
    if not kept:
        return math.nan
    by_formula: dict[str, list[Structure]] = {}
    for i, item in enumerate(train):
        if not isinstance(item, Structure):
            raise TypeError(f"train[{i}]: expected a pymatgen Structure, got {type(item)}")
        by_formula.setdefault(item.composition.reduced_formula, []).append(item)
    matcher, failures = _matcher(), []
    n_novel = 0
    for crystal in kept:
        candidates = by_formula.get(crystal.structure.composition.reduced_formula, [])
        n_novel += not any(_fits(matcher, crystal.structure, other, failures) for other in candidates)
    _warn_failures(failures, "novelty")
    return n_novel / len(kept)


# ----------------------------------------------------------------------------------------------- space groups


def spacegroup_number(structure: Structure | None, symprec: float = 0.1) -> int | None:
    """International space-group number from spglib (via pymatgen), or None if it cannot be determined."""
    if structure is None:
        return None
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib's notice about its error handling, per call
        try:
            return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
        except Exception:
            return None


def spacegroup_distribution(structures: Sequence[Structure | None], symprec: float = 0.1) -> Counter:
    """Histogram of space-group numbers; structures whose group cannot be found are left out with a warning."""
    numbers = [spacegroup_number(s, symprec) for s in structures]
    missing = sum(n is None for n in numbers)
    if missing:
        warnings.warn(
            f"no space group for {missing} of {len(numbers)} structures; left out of the histogram", stacklevel=2
        )
    return Counter(n for n in numbers if n is not None)


def _histogram(items: Mapping[int, float] | Sequence[Structure | None], symprec: float) -> Mapping[int, float]:
    if not isinstance(items, Mapping):
        return spacegroup_distribution(items, symprec)
    bad = next(((k, v) for k, v in items.items() if not (v >= 0 and math.isfinite(v))), None)
    if bad is not None:
        raise ValueError(f"space-group histogram: space group {bad[0]} has count {bad[1]!r} (counts are finite "
                         "and >= 0)")
    return items


def spacegroup_tv(
    samples: Mapping[int, float] | Sequence[Structure | None],
    reference: Mapping[int, float] | Sequence[Structure | None],
    symprec: float = 0.1,
) -> float:
    """Total variation distance (0..1) between two space-group histograms (Counters or structure lists)."""
    p, q = _histogram(samples, symprec), _histogram(reference, symprec)
    p_total, q_total = sum(p.values()), sum(q.values())
    if not p_total or not q_total:
        return math.nan
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / p_total - q.get(k, 0) / q_total) for k in keys)


def symmetric_share(samples: Mapping[int, float] | Sequence[Structure | None], symprec: float = 0.1) -> float:
    """Share of structures (with a determined space group) whose space group is above P1."""
    hist = _histogram(samples, symprec)
    total = sum(hist.values())
    return sum(v for k, v in hist.items() if k > 1) / total if total else math.nan


# ----------------------------------------------------------------------------------------------- per crystal and all


def _comp_valid(crystal: _Crystal) -> bool:
    if crystal.atom_types is None:
        return False
    return composition_validity(*reduced_composition(crystal.atom_types))


def per_crystal_flags(
    structures: Sequence[Structure | Mapping | None],
    *,
    fingerprints: tuple[Sequence, Sequence] | None = None,
    symprec: float = 0.1,
) -> dict[str, list]:
    """Per-crystal flags and numbers: constructed, reason, comp_valid, struct_valid, valid, min_distance, volume,
    density, n_elements, spacegroup (None where not built).

    ``valid`` is comp_valid and struct_valid; given ``fingerprints`` (as returned by :func:`fingerprints`) it also
    needs a fingerprint, as in CDVAE, and a ``fingerprint_ok`` list is added.
    """
    crystals = _as_crystals(structures, "structures")
    flags: dict[str, list] = {
        k: []
        for k in (
            "constructed", "reason", "comp_valid", "struct_valid", "valid",
            "min_distance", "volume", "density", "n_elements", "spacegroup",
        )
    }  # fmt: skip
    if fingerprints is not None:
        if len(fingerprints[0]) != len(crystals):
            raise ValueError(f"got {len(fingerprints[0])} fingerprints for {len(crystals)} structures")
        flags["fingerprint_ok"] = [s is not None and c is not None for s, c in zip(*fingerprints)]
    for i, crystal in enumerate(crystals):
        s = crystal.structure
        comp_ok, struct_ok = _comp_valid(crystal), structure_validity(s)
        valid = comp_ok and struct_ok and (fingerprints is None or flags["fingerprint_ok"][i])
        flags["constructed"].append(crystal.constructed)
        flags["reason"].append(crystal.reason)
        flags["comp_valid"].append(comp_ok)
        flags["struct_valid"].append(struct_ok)
        flags["valid"].append(valid)
        flags["min_distance"].append(None if s is None else min_periodic_distance(s))
        flags["volume"].append(None if s is None else float(s.volume))
        flags["density"].append(None if s is None else float(s.density))
        flags["n_elements"].append(None if s is None else _n_elements(s))
        flags["spacegroup"].append(spacegroup_number(s, symprec))
    return flags


def _given_or_computed(
    given: tuple[Sequence, Sequence] | None, crystals: list[_Crystal], progress: bool | None, name: str
) -> tuple[list, list]:
    if given is None:
        return _fingerprints_of(crystals, progress, f"{name} crystals")
    struct_fps, comp_fps = (list(x) for x in given)
    if len(struct_fps) != len(crystals) or len(comp_fps) != len(crystals):
        raise ValueError(f"{name}_fingerprints must hold {len(crystals)} structure and composition fingerprints")
    return struct_fps, comp_fps


def evaluate_crystals(
    generated: Sequence[Structure | Mapping | None],
    reference: Sequence[Structure | Mapping],
    *,
    cutoffs: str | tuple[float, float] = "mp20",
    train: Sequence[Structure] | None = None,
    n_wasserstein: int | None = None,
    seed: int = 0,
    reference_fingerprints: tuple[Sequence, Sequence] | None = None,
    generated_fingerprints: tuple[Sequence, Sequence] | None = None,
    symprec: float = 0.1,
    progress: bool | None = None,
) -> dict[str, float]:
    """All generation metrics in one dict.

    ``generated`` holds Structures, mappings of CDVAE arrays (frac_coords, atom_types, lengths, angles) or None for
    samples that could not be decoded; all of them count in every denominator. Validity and COV follow CDVAE (see
    the module docstring). The distribution metrics (wdist_density, wdist_num_elems, comp_div, struct_div) use the
    valid samples in order, or ``n_wasserstein`` of them drawn without replacement with ``seed`` when there are more
    (CDVAE draws 1000), against all references. unique (and novel, with ``train``) are shares of valid samples;
    spacegroup_tv and symmetric_share compare the valid samples' space groups (``symprec``) with the references'.
    ``reference_fingerprints`` / ``generated_fingerprints`` (structure and raw composition lists, as returned by
    :func:`fingerprints`) skip fingerprinting; computed ones are cached in-process anyway.
    """
    struct_cutoff, comp_cutoff = _resolve_cutoffs(cutoffs)
    gen = _as_crystals(generated, "generated")
    ref = _as_crystals(reference, "reference")
    if not gen:
        raise ValueError("evaluate_crystals needs at least one generated crystal")
    broken = [i for i, c in enumerate(ref) if not c.constructed]
    if broken:
        raise ValueError(f"reference crystals {broken[:10]} cannot be built ({ref[broken[0]].reason})")
    gen_struct_fps, gen_comp_fps = _given_or_computed(generated_fingerprints, gen, progress, "generated")
    ref_struct_fps, ref_comp_fps = _given_or_computed(reference_fingerprints, ref, progress, "reference")
    ref_ok = [s is not None and c is not None for s, c in zip(ref_struct_fps, ref_comp_fps)]
    if not all(ref_ok):
        warnings.warn(f"{ref_ok.count(False)} reference crystals have no fingerprint; left out of COV", stacklevel=2)

    comp_ok = [_comp_valid(c) for c in gen]
    struct_ok = [structure_validity(c.structure) for c in gen]
    fp_ok = [s is not None and c is not None for s, c in zip(gen_struct_fps, gen_comp_fps)]
    valid = [a and b and f for a, b, f in zip(comp_ok, struct_ok, fp_ok)]
    n = len(gen)
    metrics: dict[str, float] = {
        "n": float(n),
        "n_valid": float(sum(valid)),
        "n_fingerprint_failed": float(n - sum(fp_ok)),
        "comp_valid": sum(comp_ok) / n,
        "struct_valid": sum(struct_ok) / n,
        "valid": sum(valid) / n,
    }
    cov = coverage(
        gen_struct_fps,
        gen_comp_fps,
        [s for s, ok in zip(ref_struct_fps, ref_ok) if ok],
        [c for c, ok in zip(ref_comp_fps, ref_ok) if ok],
        struct_cutoff,
        comp_cutoff,
        n_pred_total=n,
    )
    metrics.update(cov)

    chosen = [i for i, v in enumerate(valid) if v]
    if n_wasserstein is not None and len(chosen) > n_wasserstein:
        picks = np.random.default_rng(seed).choice(len(chosen), n_wasserstein, replace=False)
        chosen = [chosen[int(k)] for k in picks]
    samples = [gen[i].structure for i in chosen]
    references = [c.structure for c in ref]
    metrics["wdist_density"] = density_wdist(samples, references)
    metrics["wdist_num_elems"] = num_elements_wdist(samples, references)
    metrics["comp_div"] = comp_diversity([gen_comp_fps[i] for i in chosen])
    metrics["struct_div"] = struct_diversity([gen_struct_fps[i] for i in chosen])

    valid_structures = [c.structure for c, v in zip(gen, valid) if v]
    metrics["unique"] = uniqueness(valid_structures, [True] * len(valid_structures))
    if train is not None:
        metrics["novel"] = novelty(valid_structures, train, [True] * len(valid_structures))
    sample_hist = spacegroup_distribution(valid_structures, symprec)
    metrics["spacegroup_tv"] = spacegroup_tv(sample_hist, spacegroup_distribution(references, symprec))
    metrics["symmetric_share"] = symmetric_share(sample_hist)
    return metrics
