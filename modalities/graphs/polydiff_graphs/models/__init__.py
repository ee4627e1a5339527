"""Generative models of the graphs plugin: GDSS (continuous score SDEs on node features and
adjacency) and PARD (block-wise autoregressive discrete diffusion over a structural partial order)."""

from .gdss import GDSSNet, ScoreNetworkA, ScoreNetworkX, ScoreNetworkXGMH, UnitPriorVP, gdss_network, s4
from .order import block_order
from .pard import PardNet, block_bundle, generate_states, pard_fields, pard_network

__all__ = ["GDSSNet", "PardNet", "ScoreNetworkA", "ScoreNetworkX", "ScoreNetworkXGMH", "UnitPriorVP", "block_bundle",
           "block_order", "gdss_network", "generate_states", "pard_fields", "pard_network", "s4"]
