"""Fuzzing every reader of users' files (core, toy, graphs, time series, samples folders,
checkpoints) with :func:`polydiff.fuzz.fuzz_reader`: random, truncated and mutated inputs end
in a typed error naming the file, or in a read whose object count matches the file's records
(fewer only with a warning naming the file). Never another exception type, a hang, or a
silently wrong count.

Examples per reader are bounded so that the whole module fits in CI (``POLYDIFF_FUZZ_EXAMPLES``
overrides them for longer local runs; ``bench/reliability.py`` does); the mutations are seeded,
so runs repeat.
A new plugin adds its readers here (or in its own tests) with one function each.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from polydiff.fuzz import FuzzFailure, csv_records, fuzz_arrays, fuzz_reader, line_records

pytestmark = pytest.mark.usefixtures("one_thread")

# -- the harness itself ---------------------------------------------------------------------------

def test_harness_catches_bad_readers(tmp_path):
    """The harness fails a reader that leaks a library exception, one whose error does not name
    the file, one that drops records silently, and one that hangs."""
    valid = {"rows.csv": b"1,2\n3,4\n5,6\n"}

    def leaky(path: Path) -> list[list[float]]:
        return [[float(c) for c in line.split(",")] for line in path.read_text().splitlines()]

    def anonymous(path: Path) -> list[list[float]]:
        try:
            return leaky(path)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("bad row") from None

    def dropping(path: Path) -> list[list[float]]:
        out = []
        for line in path.read_bytes().splitlines():
            try:
                out.append([float(c) for c in line.split(b",")])
            except ValueError:
                continue
        return out

    def slow(path: Path) -> list[list[float]]:
        if len(path.read_bytes()) != len(valid["rows.csv"]):
            while True:
                pass
        return [[1.0, 2.0]] * 3

    for reader, match in ((leaky, "UnicodeDecodeError|IndexError|not name the file"),
                          (anonymous, "does not name the file"), (dropping, "no warning names the file"),
                          (slow, "no answer within")):
        # a generous budget for the readers that answer (a loaded machine must not turn them into hangs) and
        # more examples than needed, so that one unlucky draw cannot hide a bad reader
        with pytest.raises(FuzzFailure, match=match):
            fuzz_reader(reader, valid, tmp_path / reader.__name__, examples=100, records=csv_records,
                        timeout=0.5 if reader is slow else 10.0)


def test_harness_catches_bad_array_readers(tmp_path):
    """:func:`fuzz_arrays` fails a reader that leaks a numpy exception and one that silently reads
    complex values as real, and passes a careful reader."""
    base = {"x": np.arange(12.0).reshape(6, 2)}

    def naive(path: Path) -> list[np.ndarray]:  # numpy's KeyError / TypeError, naming no file
        with np.load(path) as z:
            return list(z["x"])

    def careful(path: Path) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as z:
                x = z["x"]
        except KeyError:
            raise ValueError(f"{path.name}: no array x") from None
        if x.dtype.kind not in "iuf" or x.ndim != 2 or x.shape[1] != 2 or not np.isfinite(x).all():
            raise ValueError(f"{path.name}: x must be finite real numbers of shape (n, 2), not {x.dtype} {x.shape}")
        return x.astype(np.float64)

    def complex_as_real(path: Path) -> np.ndarray:
        with np.load(path, allow_pickle=False) as z:
            x = z["x"] if "x" in z.files else None
            if x is None or x.dtype.kind not in "iufc" or x.ndim != 2 or x.shape[1] != 2:
                raise ValueError(f"{path.name}: x must be numbers of shape (n, 2)")
            x = x.astype(np.float64)  # drops imaginary parts (numpy warns, naming no file)
        if not np.isfinite(x).all():
            raise ValueError(f"{path.name}: non-finite values")
        return x

    def rows(name: str, data: bytes) -> int | None:
        try:
            with np.load(__import__("io").BytesIO(data), allow_pickle=False) as z:
                return len(z["x"])
        except Exception:
            return None

    for reader, match in ((naive, "does not name the file|raised TypeError"),
                          (complex_as_real, "raised ComplexWarning")):
        with pytest.raises(FuzzFailure, match=match):
            fuzz_arrays(reader, base, tmp_path / reader.__name__, examples=100, records=rows, timeout=10.0)
    report = fuzz_arrays(careful, base, tmp_path / "careful", examples=100, records=rows, timeout=10.0)
    assert report.examples == 100 and report.errors and report.reads

def test_line_records():
    assert line_records(b"a\n\n#c\nb\r\nc\rd") == 4
    assert line_records(b"h\n1\n2\n", header=True) == 2
    assert line_records(b"") == 0


# -- toy ------------------------------------------------------------------------------------------

def _points_file(tmp_path: Path) -> bytes:
    from polydiff.toy.data import write_points

    pts = np.random.default_rng(0).normal(size=(12, 2))
    return write_points(pts, tmp_path / "valid.csv").read_bytes()


def test_fuzz_toy_points(tmp_path):
    from polydiff.toy.data import read_points

    report = fuzz_reader(read_points, {"points.csv": _points_file(tmp_path)}, tmp_path, examples=150,
                         records=csv_records)
    print(report)


def test_fuzz_toy_csv_dataset(tmp_path):
    from polydiff.toy.data import csv_dataset

    labelled = b"x,y,label\n" + b"".join(f"{i * 0.5},{-i},{'ab'[i % 2]}\n".encode() for i in range(10))
    report = fuzz_reader(lambda p: csv_dataset(str(p), label="label"), {"mine.csv": labelled}, tmp_path,
                         examples=100, count=lambda b: len(b.train), records=csv_records,
                         name="csv_dataset")
    print(report)


def test_fuzz_toy_observation(tmp_path):
    from polydiff.toy.data import read_observation

    def check(result) -> None:
        values, mask = result
        assert values.shape == (3,) and mask.shape == (3,) and bool(mask.any())
        assert bool(np.isfinite(values.numpy()).all())

    report = fuzz_reader(lambda p: read_observation(p, 3), {"point.csv": b"x0,x1,x2\n1.5,,-2\n"}, tmp_path,
                         examples=100, count=lambda r: 1, check=check, name="read_observation")
    print(report)


def test_fuzz_toy_rotations(tmp_path):
    import torch

    from polydiff.processes.so3 import random_rotation
    from polydiff.toy.rotations import read_rotations, write_rotations

    R = random_rotation((6,), generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    valid = write_rotations(R, tmp_path / "valid.csv").read_bytes()
    report = fuzz_reader(read_rotations, {"rotations.csv": valid}, tmp_path, examples=100,
                         records=csv_records)
    print(report)


def test_fuzz_toy_modality_read(tmp_path):
    from polydiff.toy import ToyModality

    report = fuzz_reader(ToyModality().read, {"samples.csv": _points_file(tmp_path)}, tmp_path, folder=True,
                         examples=60, records=csv_records, name="toy read(folder)")
    print(report)


# -- graphs ---------------------------------------------------------------------------------------

def _graphs():
    import networkx as nx

    with_isolated = nx.path_graph(3)
    with_isolated.add_node(3)
    return [nx.cycle_graph(5), with_isolated, nx.empty_graph(1), nx.petersen_graph()]


def _molecules():
    from polydiff_graphs.chem import smiles_to_graphs

    graphs, _ = smiles_to_graphs(["CCO", "c1ccccc1O", "O=[N+]([O-])c1ccccc1", "C#N", "CC(=O)Nc1ccc(O)cc1"])
    return graphs


def _text_lines(data: bytes) -> list[bytes] | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return [s.strip() for s in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")]


def graph6_records(name: str, data: bytes) -> int | None:
    lines = [s.removeprefix(b">>graph6<<").strip() for s in data.splitlines()]
    return sum(1 for s in lines if s)


_HEADER = re.compile(rb"^#\s*graph\b", re.IGNORECASE)


def edgelist_records(name: str, data: bytes) -> int | None:
    """Graphs of an edge list: one per ``# graph`` header, plus one for edges before the first."""
    lines = _text_lines(data)
    if lines is None:
        return None
    n, loose = 0, False
    for s in lines:
        if _HEADER.match(s):
            n += 1
        elif s and not s.startswith((b"#", b"%")) and n == 0:
            loose = True
    return n + loose


def graphml_records(name: str, data: bytes) -> int | None:
    return len(re.findall(rb"<graph[\s>]", data))


def smiles_records(name: str, data: bytes) -> int | None:
    """SMILES lines of a .smi file: non-blank, not comments, less a ``smiles`` header on line 1."""
    lines = _text_lines(data)
    if lines is None:
        return None
    n = sum(1 for s in lines if s and not s.startswith(b"#"))
    return n - bool(lines and lines[0].split() and lines[0].split()[0].lower() == b"smiles")


def sdf_records(name: str, data: bytes) -> int | None:
    """Records of an SDF file: one per ``$$$$`` line, plus a trailing record without one."""
    lines = _text_lines(data)
    if lines is None:
        return None
    n, tail = 0, False
    for s in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if s.startswith(b"$$$$"):
            n, tail = n + 1, False
        elif s.strip():
            tail = True
    return n + tail


def test_fuzz_graph6(tmp_path):
    from polydiff_graphs.io import read_graph6, write_graph6

    valid = write_graph6(_graphs(), tmp_path / "valid.g6").read_bytes()
    print(fuzz_reader(read_graph6, {"graphs.g6": valid}, tmp_path, examples=100, records=graph6_records))


def test_fuzz_graphml(tmp_path):
    from polydiff_graphs.io import read_graphml, write_graphml

    valid = write_graphml(_graphs()[:2] + _molecules()[:1], tmp_path / "valid.graphml").read_bytes()
    print(fuzz_reader(read_graphml, {"graphs.graphml": valid}, tmp_path, examples=100,
                      records=graphml_records))


def test_fuzz_edge_list(tmp_path):
    from polydiff_graphs.io import read_edge_list, write_edge_list

    valid = write_edge_list(_graphs(), tmp_path / "valid.edgelist").read_bytes()
    print(fuzz_reader(read_edge_list, {"graphs.edgelist": valid}, tmp_path, examples=100,
                      records=edgelist_records, tokens=(b"# graph 9 nodes=2\n", b" 1.5", b"0 0\n")))


def test_fuzz_edge_list_without_headers(tmp_path):
    from polydiff_graphs.io import read_graphs

    valid = b"# a comment\na b\nb c\nc a 2.5\nd a\n"
    print(fuzz_reader(read_graphs, {"net.txt": valid}, tmp_path, examples=60, records=edgelist_records,
                      name="read_graphs(edge list)"))


def test_fuzz_smiles(tmp_path):
    from polydiff_graphs.io import read_graphs, write_smiles

    path, _ = write_smiles(_molecules(), tmp_path / "valid.smi")
    print(fuzz_reader(read_graphs, {"mols.smi": path.read_bytes()}, tmp_path, examples=100,
                      records=smiles_records, tokens=(b"[", b"]", b"(", b")", b"=", b"#", b"1", b"%10", b"@"),
                      name="read_graphs(.smi)"))


def test_fuzz_smiles_csv(tmp_path):
    from polydiff_graphs.io import read_graphs

    valid = b"name,smiles\nethanol,CCO\nphenol,c1ccccc1O\ncyanide,C#N\n"
    print(fuzz_reader(read_graphs, {"mols.csv": valid}, tmp_path, examples=60, records=csv_text_records,
                      name="read_graphs(.csv)"))


def csv_text_records(name: str, data: bytes) -> int | None:
    lines = _text_lines(data)
    if lines is None:
        return None
    return max(sum(1 for s in lines if s.strip(b", \t")) - 1, 0)


def test_fuzz_sdf(tmp_path):
    from polydiff_graphs.io import read_graphs, write_sdf

    path, _ = write_sdf(_molecules()[:3], tmp_path / "valid.sdf")
    print(fuzz_reader(read_graphs, {"mols.sdf": path.read_bytes()}, tmp_path, examples=100,
                      records=sdf_records, name="read_graphs(.sdf)"))


@pytest.mark.parametrize("suffix", [".smi", ".sdf"])
def test_fuzz_graphs_modality_read_keeps_invalid_molecules(tmp_path, suffix):
    """``GraphsModality.read`` of generated SMILES / SDF (invalid records kept as placeholders):
    mutated files end in an error naming the file or in a read that drops no record silently."""
    from polydiff_graphs.io import write_sdf, write_smiles
    from polydiff_graphs.modality import GraphsModality

    writer, records = (write_smiles, smiles_records) if suffix == ".smi" else (write_sdf, sdf_records)
    path, _ = writer(_molecules()[:3], tmp_path / f"valid{suffix}")
    print(fuzz_reader(GraphsModality().read, {f"gen{suffix}": path.read_bytes()}, tmp_path, examples=60,
                      records=lambda name, data: records(name, data) if suffix == ".smi" or data.rstrip().endswith(
                          b"$$$$") else None,
                      name=f"graphs read({suffix}, invalid kept)"))


@pytest.mark.parametrize("kind", ["graphs", "molecules"])
def test_fuzz_graphs_modality_read(tmp_path, kind):
    """``GraphsModality.read`` of a samples folder (every file it wrote mutated in turn)."""
    from polydiff_graphs.modality import GraphsModality

    m = GraphsModality()
    objects = _graphs() if kind == "graphs" else _molecules()
    written = m.write(objects, tmp_path / "valid")
    valid = {p.name: p.read_bytes() for p in written}
    graphml = next(n for n in valid if n.endswith(".graphml"))

    def records(name: str, data: bytes) -> int | None:
        return graphml_records(name, data) if name == graphml else len(objects)

    print(fuzz_reader(m.read, valid, tmp_path, folder=True, examples=60, records=records,
                      name=f"graphs read(folder of {kind})"))


# -- time series ----------------------------------------------------------------------------------

def table_records(name: str, data: bytes) -> int | None:
    """Data rows of a delimited text file: non-blank lines less the header; None when not UTF-8."""
    lines = _text_lines(data)
    if lines is None:
        return None
    return max(sum(1 for s in lines if s) - 1, 0)


def _wide_csv(rows: int = 24, integer_time: bool = False) -> bytes:
    import pandas as pd

    t = np.arange(rows) if integer_time else pd.date_range("2024-01-01", periods=rows, freq="h")
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"timestamp": t, "load": rng.normal(size=rows).round(4), "temp": rng.normal(size=rows).round(4)})
    return df.to_csv(index=False).encode()


TS_TOKENS = (b"2024-01-01 05:00:00", b"2024-13-01", b"NaN", b"1.5", b",,", b"item_id", b"timestamp")


@pytest.mark.parametrize("integer_time", [False, True], ids=["datetime", "integer"])
def test_fuzz_timeseries_wide_csv(tmp_path, integer_time):
    from polydiff_timeseries.data import DataError, read_series

    print(fuzz_reader(lambda p: read_series(p, multivariate=True), {"series.csv": _wide_csv(integer_time=integer_time)},
                      tmp_path, examples=100, expected=(DataError, OSError),
                      count=lambda ss: sum(len(v) for v in ss.values), records=table_records, tokens=TS_TOKENS,
                      name="read_series(wide)"))


def test_fuzz_timeseries_long_csv(tmp_path):
    import pandas as pd

    from polydiff_timeseries.data import DataError, read_series

    t = pd.date_range("2024-01-01", periods=12, freq="D")
    df = pd.concat([pd.DataFrame({"item_id": i, "timestamp": t, "target": np.arange(12.0) * (k + 1)})
                    for k, i in enumerate(["a", "b"])])
    valid = {"long.csv": df.to_csv(index=False).encode()}
    print(fuzz_reader(lambda p: read_series(p, "target", id_col="item_id"), valid, tmp_path,
                      examples=100, expected=(DataError, OSError),
                      count=lambda ss: sum(len(v) for v in ss.values), records=table_records, tokens=TS_TOKENS,
                      name="read_series(long)"))


def parquet_records(name: str, data: bytes) -> int | None:
    """Rows of a parquet file as its footer states them; None when pyarrow cannot read the footer,
    or when the footer's row count and its row groups' disagree (no one count the file holds)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        groups = sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    except Exception:
        return None
    return meta.num_rows if meta.num_rows == groups else None


def test_fuzz_timeseries_parquet(tmp_path):
    pytest.importorskip("pyarrow", reason="parquet needs pyarrow (in polydiff-timeseries[dev] and [parquet])")
    import pandas as pd

    from polydiff_timeseries.data import DataError, read_series

    df = pd.read_csv(io.BytesIO(_wide_csv()), parse_dates=["timestamp"])
    df.to_parquet(tmp_path / "valid.parquet")
    valid = (tmp_path / "valid.parquet").read_bytes()
    assert parquet_records("series.parquet", valid) == len(df) == 24
    assert parquet_records("series.parquet", valid[: len(valid) // 2]) is None
    print(fuzz_reader(lambda p: read_series(p, multivariate=True), {"series.parquet": valid},
                      tmp_path, examples=60, expected=(DataError, OSError),
                      count=lambda ss: sum(len(v) for v in ss.values), records=parquet_records,
                      name="read_series(parquet)"))


def _windows_file(tmp_path: Path) -> bytes:
    from polydiff_timeseries.modality import write_windows

    w = np.random.default_rng(0).normal(size=(3, 5, 2))
    return write_windows(w, tmp_path / "valid.csv").read_bytes()


def test_fuzz_timeseries_samples_file(tmp_path):
    from polydiff_timeseries.data import DataError
    from polydiff_timeseries.modality import read_windows

    print(fuzz_reader(read_windows, {"samples.csv": _windows_file(tmp_path)}, tmp_path, examples=150,
                      expected=(DataError, OSError), count=lambda w: w.shape[0] * w.shape[1], records=table_records,
                      tokens=(b"0,", b"1,4,", b"9,9,9,9\n")))


def test_fuzz_timeseries_modality_read(tmp_path):
    from polydiff_timeseries.data import DataError
    from polydiff_timeseries.modality import TimeSeriesModality

    print(fuzz_reader(TimeSeriesModality().read, {"samples.csv": _windows_file(tmp_path)}, tmp_path, folder=True,
                      examples=40, expected=(DataError, OSError), count=lambda w: w.shape[0] * w.shape[1],
                      records=table_records, name="timeseries read(folder)"))
