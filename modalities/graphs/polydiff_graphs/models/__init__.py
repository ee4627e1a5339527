"""Generative models of the graphs plugin: GDSS (continuous score SDEs on node features and
adjacency) and PARD (block-wise autoregressive discrete diffusion over a structural partial order)."""

from .gdss import GDSSNet, ScoreNetworkA, ScoreNetworkX, ScoreNetworkXGMH, UnitPriorVP, gdss_network, s4

__all__ = ["GDSSNet", "ScoreNetworkA", "ScoreNetworkX", "ScoreNetworkXGMH", "UnitPriorVP", "gdss_network", "s4"]
