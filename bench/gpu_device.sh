#!/bin/bash
# The GPU checks on a lent machine that has no package registry (see bench/gpu.py).
#
#   bash bench/gpu_device.sh prepare        # here: wheels the machine lacks -> .whl/, shared data -> .gpushared/
#   bash bench/gpu_device.sh run [MODS]     # there, carrying .whl and .gpushared: CUDA tests, then bench/gpu.py
#
# `run` writes pytest.log, bench.log and gpu.json to $OUT (default /tmp/gpu_out) and ends within
# about 9 minutes; render the report here with `python bench/gpu.py --report gpu.json ...`.
set -u
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
    grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
    grep -qx "/.gpushared/" .git/info/exclude || echo "/.gpushared/" >> .git/info/exclude
    # the image has torch, lightning, numpy, scipy, pandas, networkx, torch-geometric, e3nn, tokenizers, statsmodels
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection setuptools==80.9.0 rdkit==2026.9.1 \
        ase==3.29.0 gymnasium==1.4.0 farama-notifications==0.0.6 pymunk==7.3.1 shapely==2.2.0 cffi==2.1.1 pycparser \
        librosa==0.11.0 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 decorator==5.3.1 platformdirs \
        || exit 1
    # biotite (57 MB; proteins' metrics) does not fit the 64 MiB a call carries with these: proteins run for speed
    # and memory without their metrics (imported only to evaluate). CRYSTALS=1 adds what crystals import (7.5 MB;
    # not smact / matminer, so speed and memory only); with the wheels above that is near the limit: measured
    # 2026-12-05, .whl 50.0 MiB + .gpushared 3.6 MiB + the tracked tree 7.8 MiB = 61.4 MiB of 64
    if [ "${CRYSTALS:-0}" = 1 ]; then
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl pymatgen==2026.10.24 pymatgen-core==2026.10.16 \
            monty==2026.10.21 orjson==3.13.0 ruamel.yaml==0.19.1 ruamel.yaml.clib==0.2.15 spglib==2.8.0 || exit 1
    fi
    shared=${POLYDIFF_SHARED:-../shared}
    for f in data/timeseries/ETT-small/ETTh1.csv data/text/tinyshakespeare.txt data/graphs_gdss/community_small.json; do
        mkdir -p ".gpushared/$(dirname $f)" && cp "$shared/$f" ".gpushared/$f" || exit 1
    done
    du -sh .whl .gpushared
    ;;
run)
    crystals=$(ls .whl/pymatgen_core-*.whl 2>/dev/null)  # carried: prepare ran with CRYSTALS=1
    mods=${2:-audio,graphs,molecules,timeseries,policies,toy,text,proteins${crystals:+,crystals}}
    out=${OUT:-/tmp/gpu_out}
    mkdir -p "$out"
    t0=$(date +%s)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 3
    export PYTHONPATH=/tmp/site POLYDIFF_SHARED=$PWD/.gpushared PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
    pkgs=(-e .)
    for m in graphs timeseries molecules text policies audio proteins ${crystals:+crystals}; do
        pkgs+=(-e "modalities/$m")
    done
    python3 -m pip install -q --no-index --no-deps --no-build-isolation "${pkgs[@]}" > "$out/install.log" 2>&1 \
        || { tail -30 "$out/install.log"; exit 4; }
    nvidia-smi -L
    timeout 210 python3 -m pytest -q -p no:cacheprovider -rs tests/core/test_cuda.py \
        "tests/core/test_compiled_sampling.py::test_samplers_run_unchanged_on_cuda" > "$out/pytest.log" 2>&1
    echo "pytest rc=$? after $(( $(date +%s) - t0 )) s"; tail -15 "$out/pytest.log"
    left=$(( 510 - ($(date +%s) - t0) ))
    timeout $(( left + 40 )) python3 bench/gpu.py --runs /tmp/gpubench --json "$out/gpu.json" --seconds 20 \
        --repeats 3 --deadline $left --modalities "$mods" > "$out/bench.log" 2>&1
    echo "bench rc=$? after $(( $(date +%s) - t0 )) s"; grep "^\[gpu\]\|^  {" "$out/bench.log" | cut -c1-200
    ;;
*)
    echo "usage: bash bench/gpu_device.sh prepare | run [modalities]" >&2; exit 2
    ;;
esac
