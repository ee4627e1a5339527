"""E(n)-equivariant message passing on padded point sets (EGNN; Satorras, Hoogeboom & Welling 2021).

Point sets are batched densely: node features ``h`` (B, N, H), positions ``x`` (B, N, D) for any
D (3 for molecules), a node mask (B, N) marking the present nodes (bool, or float with 0 for
padding; ``None`` means all present) and optional edge attributes (B, N, N, E). All pairs are
formed at once, O(B N^2 H) memory, with no loops over the batch or the nodes.

Symmetries: features are invariant and positions equivariant under rotations and reflections
(O(D)) and translations of the positions, and both are equivariant under permutations of the
nodes (with the mask and the edge attributes permuted alike). The network sees positions only
through the invariant squared distances ``|x_i - x_j|^2`` and moves them only along the
differences ``x_i - x_j``, which is what makes the layer equivariant by construction.

Padding: only pairs ``i != j`` of present nodes exchange messages. Padded nodes are read as
zeros (so NaN or inf written into padding cannot leak into present nodes), they never influence
present nodes, and a layer returns their ``h`` and ``x`` unchanged; :class:`EGNN` returns zero
features and unchanged positions there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def node_mask(mask: Tensor | None, x: Tensor) -> Tensor:
    """The (B, N) bool mask of present nodes for positions ``x`` (B, N, D); ``None`` means all present."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask must have shape {tuple(x.shape[:2])} (B, N), got {tuple(mask.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


class EGNNLayer(nn.Module):
    """One masked E(n)-equivariant message-passing step on (B, N) padded point sets.

    Messages ``m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, e_ij)`` (two SiLU layers; with
    ``attention`` scaled by a learned gate ``sigmoid(w . m_ij)``) are summed over the present
    neighbours ``j != i``; features update residually, ``h_i' = h_i + phi_h(h_i, sum_j m_ij)``.
    With ``update_coords``, ``x_i' = x_i + mean_j (x_i - x_j) c_ij`` over the present
    neighbours, where ``c_ij = phi_x(m_ij)`` is an invariant scalar, clamped to
    ``[-coord_clamp, coord_clamp]`` (``None``: no clamp); clamping the scalar rather than the
    vector keeps the update exactly equivariant. With ``normalize`` the difference is divided
    by ``|x_i - x_j| + 1`` (the stable variant of Hoogeboom et al. 2022), so a single layer
    moves a node by at most ``coord_clamp`` whatever the scale of the input; without it the
    step grows with the distances. Padded nodes keep ``h`` and ``x`` unchanged.

    The MLPs run in the parameters' dtype (inputs are cast to it); the geometry (differences,
    distances, the coordinate update) is done in the dtype of ``x``, and ``h'`` has the dtype
    of ``h``. The last layer of ``phi_x`` starts small (gain 1e-3) so that an untrained stack
    barely moves the points.
    """

    def __init__(
        self,
        hidden: int,
        edge_dim: int = 0,
        *,
        update_coords: bool = True,
        attention: bool = False,
        coord_clamp: float | None = 10.0,
        normalize: bool = True,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if hidden < 1 or edge_dim < 0:
            raise ValueError(f"need hidden >= 1 and edge_dim >= 0, got hidden={hidden}, edge_dim={edge_dim}")
        if coord_clamp is not None and coord_clamp <= 0:
            raise ValueError(f"coord_clamp must be positive or None, got {coord_clamp}")
        self.hidden, self.edge_dim = hidden, edge_dim
        self.update_coords, self.normalize = update_coords, normalize
        self.coord_clamp, self.eps = coord_clamp, eps
        # The first edge layer acts on the concatenation [h_i, h_j, d_ij^2, e_ij]; it is split into
        # per-part linear maps so that the (B, N, N, 2H + 1 + E) concatenation is never built.
        self.edge_src = nn.Linear(hidden, hidden)
        self.edge_dst = nn.Linear(hidden, hidden, bias=False)
        self.edge_dist = nn.Linear(1, hidden, bias=False)
        self.edge_attr = nn.Linear(edge_dim, hidden, bias=False) if edge_dim else None
        self.edge_out = nn.Linear(hidden, hidden)
        self.gate = nn.Linear(hidden, 1) if attention else None
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        if update_coords:
            last = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=1e-3)
            self.coord_mlp: nn.Module | None = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        else:
            self.coord_mlp = None

    def forward(
        self, h: Tensor, x: Tensor, mask: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(h (B, N, H), x (B, N, D), mask (B, N), edge_attr (B, N, N, E)) -> (h', x')``."""
        if h.ndim != 3 or x.ndim != 3 or h.shape[:2] != x.shape[:2] or h.shape[-1] != self.hidden:
            raise ValueError(
                f"expected h (B, N, {self.hidden}) and x (B, N, D), got {tuple(h.shape)} and {tuple(x.shape)}"
            )
        node = node_mask(mask, x)
        b, n = node.shape
        pair = node[:, :, None] & node[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=x.device)
        pair_f = pair[..., None]
        wdt = self.edge_src.weight.dtype

        # Padded nodes are read as zeros: whatever is stored there cannot reach present nodes.
        x0 = torch.where(node[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        h0 = torch.where(node[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device)).to(wdt)
        diff = x0[:, :, None, :] - x0[:, None, :, :]  # (B, N, N, D): x_i - x_j
        d2 = diff.square().sum(-1, keepdim=True)  # (B, N, N, 1), invariant

        pre = self.edge_src(h0)[:, :, None, :] + self.edge_dst(h0)[:, None, :, :] + self.edge_dist(d2.to(wdt))
        if self.edge_attr is not None:
            if edge_attr is None or tuple(edge_attr.shape) != (b, n, n, self.edge_dim):
                got = None if edge_attr is None else tuple(edge_attr.shape)
                raise ValueError(f"layer built with edge_dim={self.edge_dim} needs edge_attr {(b, n, n, self.edge_dim)}"
                                 f", got {got}")
            e = torch.where(pair_f, edge_attr.to(wdt), torch.zeros((), dtype=wdt, device=x.device))
            pre = pre + self.edge_attr(e)
        elif edge_attr is not None:
            raise ValueError("edge_attr given to a layer built with edge_dim=0")
        m = nn.functional.silu(self.edge_out(nn.functional.silu(pre)))  # (B, N, N, H)
        if self.gate is not None:
            m = m * torch.sigmoid(self.gate(m))
        m = torch.where(pair_f, m, torch.zeros((), dtype=m.dtype, device=m.device))

        upd = self.node_mlp(torch.cat([h0, m.sum(2)], dim=-1)).to(h.dtype)
        h_out = torch.where(node[..., None], h + upd, h)

        if self.coord_mlp is None:
            return h_out, x
        coef = self.coord_mlp(m).to(x.dtype)  # (B, N, N, 1), invariant
        if self.coord_clamp is not None:
            coef = coef.clamp(-self.coord_clamp, self.coord_clamp)
        if self.normalize:
            diff = diff / (torch.sqrt(d2 + self.eps) + 1)
        shift = torch.where(pair_f, diff * coef, torch.zeros((), dtype=x.dtype, device=x.device)).sum(2)
        count = pair.sum(2, keepdim=True).clamp_min(1).to(x.dtype)
        x_out = torch.where(node[..., None], x + shift / count, x)
        return h_out, x_out


class EGNN(nn.Module):
    """An E(n)-equivariant network for padded point sets: a linear embedding ``in_dim -> hidden``,
    ``layers`` :class:`EGNNLayer` steps and a two-layer SiLU head ``hidden -> out_dim``.

    ``forward(h (B, N, in_dim), x (B, N, D), mask (B, N) or None, edge_attr (B, N, N, E) or
    None) -> (h_out (B, N, out_dim), x_out (B, N, D))``: ``h_out`` is invariant (zero at padded
    nodes), ``x_out`` equivariant (unchanged at padded nodes). Time or condition inputs are
    passed as extra columns of ``h``. Keyword options are handed to every layer.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        layers: int,
        edge_dim: int = 0,
        *,
        update_coords: bool = True,
        attention: bool = False,
        coord_clamp: float | None = 10.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, edge_dim, update_coords=update_coords, attention=attention,
                      coord_clamp=coord_clamp, normalize=normalize)
            for _ in range(layers)
        )
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))

    def forward(
        self, h: Tensor, x: Tensor, mask: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Features and positions of a padded batch -> (invariant features, equivariant positions)."""
        if h.ndim != 3 or x.ndim != 3 or h.shape[:2] != x.shape[:2]:
            raise ValueError(f"expected h (B, N, F) and x (B, N, D), got {tuple(h.shape)} and {tuple(x.shape)}")
        node = node_mask(mask, x)
        wdt = self.embed.weight.dtype
        z = self.embed(torch.where(node[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device)).to(wdt))
        for layer in self.layers:
            z, x = layer(z, x, node, edge_attr)
        out = self.head(z)
        if h.is_floating_point():
            out = out.to(h.dtype)
        return torch.where(node[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device)), x
