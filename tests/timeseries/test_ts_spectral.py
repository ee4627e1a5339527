"""PaCoDi's spectral representation: exact DC / Nyquist handling, noise variances, the
heteroscedastic loss, the network and the attention FLOPs over the half-length sequence."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from polydiff import FieldSpec, GaussianProcess, Noise, sample
from polydiff.losses import diffusion_loss
from polydiff_timeseries.modality import TimeSeriesModality
from polydiff_timeseries.nets import PaCoDiNet, TimeTransformer, TSDiffNet, num_parameters
from polydiff_timeseries.spectral import (
    HalfSpectrum,
    attention_flops,
    component_variance,
    from_spectrum,
    num_bins,
    to_spectrum,
)


@pytest.mark.parametrize("length", [24, 25])
def test_roundtrip_and_exact_real_bins(length):
    x = torch.randn(3, length, 2, dtype=torch.float64)
    s = to_spectrum(x)
    assert s.shape == (3, num_bins(length), 2, 2)
    torch.testing.assert_close(from_spectrum(s, length), x)
    assert (s[:, 0, :, 1] == 0).all()  # DC imaginary part exactly zero
    if length % 2 == 0:
        assert (s[:, -1, :, 1] == 0).all()  # Nyquist too
    # Parseval with the Hermitian weights: sum w |S|^2 = sum x^2, w = 1 at DC / Nyquist, 2 inside
    var = component_variance(length, torch.float64)[:, None, :]
    full = torch.where(var == 0.5, 2.0, 1.0)
    torch.testing.assert_close((full * s**2).sum((1, 2, 3)), (x**2).sum((1, 2)))


@pytest.mark.parametrize("length", [16, 17])
def test_structured_noise_is_the_spectrum_of_white_noise(length):
    st = HalfSpectrum(length)
    z = st.noise(torch.randn(40_000, num_bins(length), 1, 2, generator=torch.Generator().manual_seed(0)), {})
    ref = to_spectrum(torch.randn(40_000, length, 1, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(z.var(0), ref.var(0), atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), component_variance(length)[:, None, :].expand_as(z[0]), atol=0.03, rtol=0)
    assert (z[:, 0, :, 1] == 0).all()
    # heteroscedastic loss weights are the inverse variances (0 where there is no noise)
    w = st.weights(z[:1], {})[0, :, 0]
    assert w[0].tolist() == [1.0, 0.0] and w[1].tolist() == [2.0, 2.0]


def test_pacodi_sampling_keeps_real_bins_real_and_loss_is_weighted():
    m = TimeSeriesModality()
    data = m.dataset("sine", length=400, channels=3)
    fields = m.fields(data.info, representation="spectral")
    net = m.network("pacodi", data.info, fields, hidden=16, depth=1, heads=2)
    spec = m.prior_state(5, data.info)
    with torch.no_grad():
        out = sample(net, fields, spec, sampler="ddpm", steps=8, seed=0)
    assert "x" not in out and (out["spec"][:, 0, :, 1] == 0).all() and (out["spec"][:, -1, :, 1] == 0).all()
    win = m.to_native(out, data.info)
    assert win.shape == (5, 24, 3)
    # the loss of a perfect eps prediction is zero; a constant offset on DC imaginary costs nothing
    proc = fields["spec"]
    batch = {"spec": to_spectrum(data.train.tensors["x"][:4])}

    def oracle(state, t, offset=0.0):
        return {"spec": eps_of(state["spec"], t) + offset}

    noise = Noise(4, seed=3)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    from polydiff.losses import corrupt

    _, aux = corrupt(fields, batch, t, Noise(4, seed=3))
    eps = aux["spec"][0]

    def eps_of(xs, tt):
        return eps

    loss, _ = diffusion_loss(oracle, fields, batch, noise, t=t)
    assert float(loss) < 1e-10
    dc_imag = torch.zeros_like(eps)
    dc_imag[:, 0, :, 1] = 5.0
    loss2, _ = diffusion_loss(lambda s, tt: {"spec": eps + dc_imag}, fields, batch, Noise(4, seed=3), t=t)
    assert float(loss2) < 1e-10
    assert proc.prediction == "eps"


def test_pacodi_network_outputs_and_interaction():
    length, c = 24, 3
    fields = {"spec": FieldSpec(GaussianProcess("vp_linear"), HalfSpectrum(length), "eps")}
    net = PaCoDiNet(length, c, fields, hidden=16, depth=2, heads=2)
    x = HalfSpectrum(length).noise(torch.randn(2, num_bins(length), c, 2), {})
    out = net({"spec": x}, torch.tensor([0.3, 0.7]))["spec"]
    assert out.shape == x.shape and (out[:, 0, :, 1] == 0).all() and (out[:, -1, :, 1] == 0).all()
    mean_field = PaCoDiNet(length, c, fields, hidden=16, depth=2, heads=2, interaction=False)
    assert num_parameters(net) - num_parameters(mean_field) == 4 * (16 * 16 + 16)
    with pytest.raises(ValueError, match="representation"):
        PaCoDiNet(length, c, {"x": fields["spec"]})


@pytest.mark.parametrize("kind", ["pacodi", "dit", "tsdiff"])
def test_a_shared_time_gives_the_outputs_of_per_sample_times(kind):
    """Samplers pass one time as a stride-0 view: the networks embed it once and broadcast, with
    the outputs of the same time given per sample."""
    length, c = 24, 3
    torch.manual_seed(0)
    if kind == "pacodi":
        fields = {"spec": FieldSpec(GaussianProcess("vp_linear"), HalfSpectrum(length), "eps")}
        net, key = PaCoDiNet(length, c, fields, hidden=16, depth=2, heads=2), "spec"
        x = HalfSpectrum(length).noise(torch.randn(4, num_bins(length), c, 2), {})
    else:
        fields = {"x": FieldSpec(GaussianProcess("vp_linear"), prediction="eps")}
        net = (TimeTransformer(length, c, fields, hidden=16, depth=2, heads=2) if kind == "dit"
               else TSDiffNet(c, fields, hidden=16, depth=2, state=8))
        key, x = "x", torch.randn(4, length, c)
    for p in net.parameters():  # zero-initialised modulations and mixes: make every path count
        p.data.normal_(0, 0.2)
    shared = torch.full((1,), 0.4).expand(4)
    with torch.no_grad():
        a, b = net({key: x}, shared)[key], net({key: x}, shared.contiguous())[key]
    assert a.shape == b.shape == x.shape
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[0], a[1])


def test_attention_flops_on_the_half_length_sequence():
    """Measured attention FLOPs (torch's FLOP counter on the attention products): PaCoDi's two branches over
    L // 2 + 1 bins against a time-domain DiT with the same number of blocks over L steps."""
    length, c, d = 64, 2, 32
    tf = {"x": FieldSpec(GaussianProcess("vp_linear"), prediction="eps")}
    sf = {"spec": FieldSpec(GaussianProcess("vp_linear"), HalfSpectrum(length), "eps")}
    time_net = TimeTransformer(length, c, tf, hidden=d, depth=4, heads=4)
    spec_net = PaCoDiNet(length, c, sf, hidden=d, depth=2, heads=4)

    def attn_flops(net, state):
        with FlopCounterMode(display=False) as fc:
            net(state, torch.tensor([0.5]))
        counts = fc.get_flop_counts()["Global"]
        return sum(v for k, v in counts.items() if "bmm" in str(k))  # q k^T and softmax(.) v

    ft = attn_flops(time_net, {"x": torch.randn(1, length, c)})
    fs = attn_flops(spec_net, {"spec": torch.randn(1, num_bins(length), c, 2)})
    assert ft == attention_flops(length, d, 4)
    assert fs == attention_flops(num_bins(length), d, 4)
    # same number of blocks (2 branches x 2 against 4), (L/2 + 1)^2 against L^2 tokens pairs
    assert fs / ft == pytest.approx((num_bins(length) / length) ** 2)
