"""Networks of the policies modality and the behaviour-cloning objective.

- :class:`ActionTransformer`: BESO's denoiser, a transformer over one token for the noise
  level, one for the goal (a learned null token when the goal is dropped: classifier-free
  guidance and goal-free policies), one per observation of the window and one per action of
  the chunk; EDM preconditioning turns its output into the field's parametrisation, so the
  same network serves the EDM process (BESO) and the discrete DDPM one (the Diffusion-Policy
  baseline).
- :class:`MLPPolicy`: the unimodal behaviour-cloning baseline, observation window and goal
  to the action chunk, trained with the MSE objective ``behaviour_cloning``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.plugin import (
    OBJECTIVES,
    ConditionEmbedding,
    FieldSpec,
    TimeEmbedding,
    from_x0_eps,
    input_scale,
    precondition,
    time_input,
)


def _dims(info: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    """(obs_steps, obs feature dim, horizon, action dim, goal dim) of a dataset's info."""
    return (int(info["obs_steps"]), int(info["obs_feature_dim"]), int(info["horizon"]), int(info["action_dim"]),
            int(info["goal_dim"]))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` with GELU: the
    layer ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu")`` computes, with the
    same parameters and dropout sites, written out. Its packed in-projection is split into q, k
    and v by a view, where ``nn.MultiheadAttention`` selects them, and the backward pass of those
    selections (a zero-filled gradient per projection, then a copy) took a fifth of a training
    step. Checkpoints of the ``nn.TransformerEncoderLayer`` version load unchanged."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        for old, new in (("self_attn.in_proj_weight", "qkv.weight"), ("self_attn.in_proj_bias", "qkv.bias"),
                         ("self_attn.out_proj.weight", "proj.weight"), ("self_attn.out_proj.bias", "proj.bias")):
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(b, n, d)
        x = x + F.dropout(self.proj(a), p, self.training)
        h = F.dropout(F.gelu(self.linear1(self.norm2(x))), p, self.training)
        return x + F.dropout(self.linear2(h), p, self.training)


class _Encoder(nn.Module):
    """``depth`` :class:`EncoderBlock` in ``.layers`` (the parameter names of ``nn.TransformerEncoder``)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderBlock(dim, heads, hidden, dropout) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ActionTransformer(nn.Module):
    """Denoiser of action chunks ``forward(state, t) -> {"actions": prediction}`` given
    ``state["obs"]`` (B, obs_steps, F) and ``state["goal"]`` (B, G; NaN rows = no goal).

    All tokens attend to each other (the chunk is denoised jointly); positions are learned.
    ``sigma_data`` is the scale EDM's skip connection assumes (actions are normalised to
    [-1, 1], so 0.5 as in BESO)."""

    def __init__(self, info: Mapping[str, Any], fields: Mapping[str, FieldSpec], dim: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0, sigma_data: float = 0.5) -> None:
        super().__init__()
        to, f, h, a, g = _dims(info)
        self.process, self.prediction = fields["actions"].process, fields["actions"].prediction
        self.sigma_data = sigma_data
        self.time = TimeEmbedding(dim)
        self.goal = ConditionEmbedding({"goal": {"kind": "vector", "dim": g}}, dim)
        self.obs_in, self.act_in = nn.Linear(f, dim), nn.Linear(a, dim)
        self.pos = nn.Parameter(torch.zeros(2 + to + h, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = _Encoder(dim, heads, mlp_ratio * dim, dropout, depth)
        self.norm, self.out = nn.LayerNorm(dim), nn.Linear(dim, a)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.horizon = h

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state["actions"]
        b = x.shape[0]
        tt = t.reshape(-1).expand(b).to(torch.float64)
        c = self.process.coefs(tt[:, None, None])
        tokens = torch.cat([
            self.time(time_input(self.process.schedule, tt))[:, None],
            self.goal(state, b)[:, None],
            self.obs_in(state["obs"].to(x.dtype)),
            self.act_in(x * input_scale(c.alpha, c.sigma, self.sigma_data).to(x.dtype)),
        ], 1) + self.pos
        raw = self.out(self.norm(self.blocks(tokens)[:, -self.horizon:]))
        x0, eps = precondition(raw.double(), x.double(), c.alpha, c.sigma, self.sigma_data)
        return {"actions": from_x0_eps(x0, eps, self.prediction, c).to(x.dtype)}


class MLPPolicy(nn.Module):
    """Behaviour cloning: an MLP from the flattened observation window and goal to the action
    chunk. Deterministic (``deterministic = True``): rollouts call :meth:`predict`, and
    ``forward`` returns the same chunk whatever the noisy actions and time are."""

    deterministic = True

    def __init__(self, info: Mapping[str, Any], fields: Mapping[str, FieldSpec] | None = None, hidden: int = 256,
                 depth: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        to, f, h, a, g = _dims(info)
        self.horizon, self.action_dim = h, a
        layers: list[nn.Module] = []
        width = to * f + g
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, h * a))

    def predict(self, obs: Tensor, goal: Tensor) -> Tensor:
        """The action chunk (B, horizon, A) for normalised ``obs`` (B, obs_steps, F) and ``goal`` (B, G)."""
        inp = torch.cat([obs.flatten(1), torch.nan_to_num(goal)], 1)
        return self.mlp(inp).reshape(-1, self.horizon, self.action_dim)

    def forward(self, state: Mapping[str, Tensor], t: Tensor | None = None, cond: Any = None) -> dict[str, Tensor]:
        return {"actions": self.predict(state["obs"], state["goal"])}


@dataclass
class BehaviourCloning:
    """``objective(net, batch, noise) -> (loss, logs)``: the MSE between the network's action
    chunk and the demonstrated one (normalised units)."""

    def __call__(self, net: Any, batch: Mapping[str, Tensor], noise: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        pred = net(batch)["actions"]
        loss = (pred - batch["actions"]).pow(2).mean()
        return loss, {"actions": loss.detach()}


@OBJECTIVES.register("behaviour_cloning", "MSE regression of the policies modality's MLP policy onto the "
                                          "demonstrated action chunks (the unimodal baseline)")
def behaviour_cloning(fields: Mapping[str, FieldSpec] | None = None, info: Mapping[str, Any] | None = None
                      ) -> BehaviourCloning:
    """Build the ``behaviour_cloning`` objective (no options)."""
    return BehaviourCloning()
