"""The shipped crystals recipes load, and the periodic twins of the transfer recipes stay what
they claim: the matrix recipe's conditions, data and schedule with perov_periodic's network,
process, loss and sampler."""

from __future__ import annotations

import yaml

from polydiff.config import load_config
from polydiff_crystals import CrystalsModality


def _raw(name: str) -> dict:
    return yaml.safe_load(CrystalsModality().recipes()[name].read_text())


def test_every_crystals_recipe_loads():
    names = sorted(CrystalsModality().recipes())
    assert {"perov_formation_periodic", "perov_gap_transfer_periodic"} <= set(names)
    for name in names:
        assert load_config(f"crystals:{name}").modality == "crystals"


def test_periodic_transfer_recipes_are_twins():
    base = _raw("perov_periodic")
    for name in ("perov_formation", "perov_gap_transfer"):
        matrix, periodic = _raw(name), _raw(f"{name}_periodic")
        assert periodic["data"] == {**matrix["data"], "representation": "periodic"}
        assert periodic["model"] == {**base["model"], **({"freeze": 0.5} if "freeze" in matrix["model"] else {})}
        assert periodic["process"] == base["process"]
        loss = {k: v for k, v in periodic["loss"].items() if k != "cond_drop"}
        assert {k: loss.get(k, v) for k, v in base["loss"].items()} == base["loss"]
        assert periodic["loss"]["cond_drop"] == matrix["loss"]["cond_drop"]
        assert {k: v for k, v in periodic["train"].items() if k != "init"} == \
            {k: v for k, v in matrix["train"].items() if k != "init"}
        assert periodic["sample"]["sampler"] == base["sample"]["sampler"]
        assert periodic["sample"]["guidance_scale"] == 1.0
