"""The rate-coded surrogate of the spiking cerebellum (``models/surrogate.py``).

Covers the Siegert rate (its table against the quadrature, the quadrature against SciPy, the
branches beyond the table), the input gradients of :class:`CerebellumSurrogate` against central
finite differences of the surrogate itself, the warm-started Golgi-granule fixed point, the
calibration against a small spiking network and the fidelity numbers, the surrogate file (round
trip, corrupt or foreign files) and the settings.

The spiking network here has the shape of the inference engines of ``tests/test_spiking.py``
(width 60, 2 Purkinje cells per class, 20 granule cells per Golgi cell, 16 inputs, 2 classes,
7 copies per network), so that Brian2's compiled code in the project cache is shared.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from core.runs import load_npz, save_npz
from models.spiking.network import make_connectivity
from models.spiking.params import SpikingConfig
from models.surrogate import (POPS, SURROGATE_FORMAT, CerebellumSurrogate, SurrogateConfig, calibrate, fidelity,
                              load_surrogate, save_surrogate, siegert_exact, siegert_rate, spiking_rates)

N_IN, N_CLASSES = 16, 2
CFG = SpikingConfig(width=60, pc_per_class=2, grc_per_goc=20, window_ms=100.0, dt_ms=0.2)
BATCH, CHUNKS = 7, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net():
    """A random network whose PF-PC weights span [0, 1] (the ``net`` of test_spiking.py)."""
    conn = make_connectivity(CFG, N_IN, N_CLASSES, seed=1)
    weights = np.random.default_rng(2).random((conn.n_grc, conn.n_pc))
    return conn, weights


# ============================================================================ Siegert rate
def _scipy_siegert(b: float, c: float) -> float:
    """``tau nu`` from Brunel (2000) eq. 21 by adaptive quadrature (independent of the module)."""
    from scipy.integrate import quad
    from scipy.special import erfcx

    integral, _ = quad(lambda u: erfcx(-u), b - c, b, epsabs=0, epsrel=1e-12, limit=200)
    return 1.0 / (math.sqrt(math.pi) * integral)


@pytest.mark.parametrize("b, c", [(-15.0, 0.5), (-3.0, 2.0), (-0.5, 0.05), (0.0, 1.0), (1.5, 4.0), (4.0, 30.0),
                                  (8.0, 0.3), (15.0, 10.0)])
def test_siegert_quadrature_matches_scipy(b, c):
    got = float(siegert_exact(torch.tensor([b], dtype=torch.float64), torch.tensor([c], dtype=torch.float64))[0])
    assert got == pytest.approx(_scipy_siegert(b, c), rel=1e-8)


@pytest.mark.parametrize("tau_ms, v_th, v_reset", [(10.0, -50.0, -70.0), (20.0, -50.0, -65.0), (10.0, -55.0, -65.0)])
def test_siegert_table_matches_quadrature(tau_ms, v_th, v_reset):
    """Random (b, log c) over the whole table, plus its corners and edges: relative error < 1e-3."""
    rng = np.random.default_rng(0)
    lo_c, hi_c = math.log(0.01), math.log(100.0)
    edge = 20.0 - 1e-6  # (exactly 20 is beyond the table after rounding of mu and sigma)
    b = np.concatenate([rng.uniform(-20.0, 20.0, 3000), [-edge, -edge, edge, edge, 0.0, 19.99, -19.99]])
    logc = np.concatenate([rng.uniform(lo_c, hi_c, 3000), [lo_c, hi_c, lo_c, hi_c, 0.0, 0.0, 0.0]])
    b, c = torch.tensor(b), torch.tensor(np.exp(logc))
    sigma = (v_th - v_reset) / c
    mu = v_th - b * sigma
    got = siegert_rate(mu, sigma, tau_ms * 1e-3, v_th, v_reset)
    want = siegert_exact(b, c) / (tau_ms * 1e-3)
    assert torch.all(want > 0)
    rel = ((got - want).abs() / want).max()
    assert rel < 1e-3, float(rel)
    assert got.dtype == torch.float64 and got.shape == mu.shape


def test_siegert_rate_keeps_the_input_shape_and_is_increasing_in_the_drive():
    mu = torch.linspace(-80.0, -30.0, 24, dtype=torch.float64).reshape(2, 3, 4)
    r = siegert_rate(mu, torch.full_like(mu, 3.0), 0.01, -50.0, -70.0)
    assert r.shape == (2, 3, 4)
    flat = r.reshape(-1)
    assert torch.all(flat[1:] > flat[:-1])
    assert float(flat[0]) < 1e-6 and 40.0 < float(flat[-1]) < 1000.0


def test_siegert_rate_beyond_the_table():
    tau, th, vr = 0.01, -50.0, -70.0
    # threshold more than 20 sigma above the mean: silent
    sigma = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.all(siegert_rate(th - 20.5 * sigma, sigma, tau, th, vr) == 0)
    # more than 20 sigma below: the noise-free LIF, 1 / (tau ln((mu - V_r) / (mu - theta)))
    mu = torch.tensor([-40.0, -20.0, 10.0], dtype=torch.float64)
    sigma = torch.full_like(mu, 0.1)
    want = 1.0 / (tau * np.log((mu.numpy() - vr) / (mu.numpy() - th)))
    np.testing.assert_allclose(siegert_rate(mu, sigma, tau, th, vr).numpy(), want, rtol=1e-12)
    # ... which the diffusion formula approaches there (within 1% at b = -25)
    b, c = torch.tensor([-25.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    sig = (th - vr) / c
    det = siegert_rate(th - b * sig, sig, tau, th, vr)
    assert float(det[0]) == pytest.approx(float(siegert_exact(b, c)[0]) / tau, rel=1e-2)


# ============================================================================ gradients
def _objective(model, x: torch.Tensor) -> torch.Tensor:
    """One number per image: a fixed combination of the logits (what the attacks differentiate)."""
    coef = torch.tensor([1.0, -0.7], dtype=torch.float64)
    return (model(x) * coef).sum(1)


def _autograd(model, x0: torch.Tensor) -> torch.Tensor:
    model._warm = None
    x = x0.clone().requires_grad_(True)
    _objective(model, x).sum().backward()
    return x.grad.detach()


def _central_differences(model, x0: torch.Tensor, h: float) -> torch.Tensor:
    """d objective_i / d x_ij; every image moves at once (the images are independent)."""
    fd = torch.zeros_like(x0)
    with torch.no_grad():
        for j in range(x0.shape[1]):
            e = torch.zeros_like(x0)
            e[:, j] = h
            model._warm = None
            up = _objective(model, x0 + e)
            model._warm = None
            down = _objective(model, x0 - e)
            fd[:, j] = (up - down) / (2 * h)
    return fd


# the fixed point solved to round-off and the gradient iterated to convergence: the exact
# gradient of the function that forward() computes
EXACT = SurrogateConfig(fp_iters=300, fp_tol_hz=1e-12, grad_iters=60)
FD_STEP = 1e-6  # the table is bilinear in (b, log c): larger steps straddle its grid lines


@pytest.fixture(scope="module")
def grad_case(net):
    conn, weights = net
    x0 = torch.as_tensor(np.random.default_rng(3).uniform(0.05, 0.95, (3, N_IN)), dtype=torch.float64)
    fd = _central_differences(CerebellumSurrogate(CFG, conn, weights, EXACT), x0, FD_STEP)
    return x0, fd


def test_input_gradients_match_finite_differences(net, grad_case):
    conn, weights = net
    x0, fd = grad_case
    model = CerebellumSurrogate(CFG, conn, weights, EXACT)
    g = _autograd(model, x0)
    scale = float(fd.abs().max())
    assert scale > 1.0  # the logits do depend on the input
    assert (fd.abs() > 1e-3 * scale).float().mean() > 0.5  # ... through most coordinates
    np.testing.assert_allclose(g.numpy(), fd.numpy(), rtol=1e-5, atol=1e-6 * scale)


def test_truncated_fixed_point_gradient_is_close(net, grad_case):
    """The defaults iterate the loop only grad_iters=3 times with gradient: an approximation, within
    1% of the exact gradient here; one iteration is not (the Golgi feedback matters)."""
    conn, weights = net
    x0, fd = grad_case
    scale = float(fd.abs().max())
    errors = {}
    for k in (1, SurrogateConfig().grad_iters):
        g = _autograd(CerebellumSurrogate(CFG, conn, weights, SurrogateConfig(grad_iters=k)), x0)
        errors[k] = float((g - fd).abs().max()) / scale
    assert errors[SurrogateConfig().grad_iters] < 1e-2, errors
    assert errors[1] > 1e-2, errors  # not vacuous: the loop's share of the gradient is visible


def test_gradient_of_float32_inputs_as_foolbox_passes_them(net, grad_case):
    conn, weights = net
    x0, fd = grad_case
    model = CerebellumSurrogate(CFG, conn, weights, EXACT)
    x = x0.to(torch.float32).requires_grad_(True)
    logits = model(x)
    assert logits.dtype == torch.float32 and logits.shape == (3, N_CLASSES)
    (logits * torch.tensor([1.0, -0.7])).sum().backward()
    assert x.grad.dtype == torch.float32
    np.testing.assert_allclose(x.grad.numpy(), fd.numpy(), rtol=1e-3, atol=1e-3 * float(fd.abs().max()))


def test_gradient_is_finite_at_silent_mossy_fibres(net):
    """With model.mf_rate_min_hz = 0 a zero input silences the mossy fibres: a granule cell whose
    fibres are all silent has no input variance, and the gradient there must still be finite (an
    attack on MNIST starts from many zero pixels; one NaN spreads to the whole image)."""
    from dataclasses import replace

    conn, weights = net
    model = CerebellumSurrogate(replace(CFG, mf_rate_min_hz=0.0), conn, weights)
    x = torch.zeros(2, N_IN, dtype=torch.float64)
    x[1, :8] = 0.5
    x.requires_grad_(True)
    logits = model(x)
    (logits * torch.tensor([1.0, -0.7], dtype=torch.float64)).sum().backward()
    assert torch.all(torch.isfinite(logits)) and torch.all(torch.isfinite(x.grad)), x.grad


def test_warm_start_does_not_change_the_fixed_point(net):
    """Successive calls start the Golgi iteration from the previous solution; the answer for a
    batch must not depend on what was computed before it (a far-away batch of the same shape)."""
    conn, weights = net
    rng = np.random.default_rng(4)
    a, b = torch.as_tensor(rng.random((5, N_IN))), torch.as_tensor(rng.random((5, N_IN)))
    model = CerebellumSurrogate(CFG, conn, weights)
    with torch.no_grad():
        cold = model.rates(b)
        assert model._warm is not None and model._warm.shape == (5, conn.n_goc)
        model.rates(torch.zeros(5, N_IN, dtype=torch.float64))
        model.rates(a)
        warm = model.rates(b)
        model._warm = None
        ref = CerebellumSurrogate(CFG, conn, weights, EXACT).rates(b)
        other_shape = model.rates(b[:2])  # another batch size: a cold start
    for key in ("grc", "goc", "pc", "scores"):
        np.testing.assert_allclose(warm[key].numpy(), cold[key].numpy(), rtol=0, atol=1e-3, err_msg=key)
        np.testing.assert_allclose(cold[key].numpy(), ref[key].numpy(), rtol=0, atol=1e-3, err_msg=key)
        np.testing.assert_allclose(other_shape[key].numpy(), ref[key][:2].numpy(), rtol=0, atol=1e-3, err_msg=key)
    # the fixed point is one: the Golgi rates are those that the granule rates they allow drive
    r_mf = model.mf_rates(b)
    _, goc_again = model.granule_golgi(r_mf, r_goc_fixed=ref["goc"])
    np.testing.assert_allclose(goc_again.numpy(), ref["goc"].numpy(), rtol=1e-9)


def test_rates_are_the_documented_populations(net):
    conn, weights = net
    model = CerebellumSurrogate(CFG, conn, weights)
    x = torch.as_tensor(np.random.default_rng(5).random((4, N_IN)))
    with torch.no_grad():
        r = model.rates(x)
        logits = model(x)
    assert r["mf"].shape == (4, N_IN) and r["grc"].shape == (4, conn.n_grc)
    assert r["goc"].shape == (4, conn.n_goc) and r["pc"].shape == (4, conn.n_pc)
    np.testing.assert_allclose(r["mf"].numpy(), CFG.mf_rate_min_hz + x.numpy() * (CFG.mf_rate_max_hz - CFG.mf_rate_min_hz))
    # scores: mean Purkinje rate of each class's cells (class-major, as the engine's readout)
    np.testing.assert_allclose(r["scores"].numpy(), r["pc"].numpy().reshape(4, N_CLASSES, -1).mean(2))
    np.testing.assert_allclose(logits.numpy(), r["scores"].numpy() / model.scfg.temperature_hz, rtol=1e-12)
    for pop in ("grc", "goc", "pc"):
        assert torch.all(torch.isfinite(r[pop])) and torch.all(r[pop] >= 0), pop
    # more drive, more granule activity
    with torch.no_grad():
        lo, hi = model.rates(torch.zeros(1, N_IN, dtype=torch.float64)), model.rates(torch.ones(1, N_IN, dtype=torch.float64))
    assert float(hi["grc"].mean()) > float(lo["grc"].mean())


# ============================================================================ calibration and fidelity
@pytest.fixture(scope="module")
def spiking_data(net):
    """Spiking rates of the network on 60 calibration and 40 held-out inputs (frozen noise, slot 0,
    as the attack command measures them)."""
    from models.spiking.engine import SpikingEngine

    conn, weights = net
    rng = np.random.default_rng(6)
    x_cal, x_fid = rng.random((60, N_IN)), rng.random((40, N_IN))
    with SpikingEngine(CFG, conn, weights, window_ms=CFG.window_ms, dt_ms=CFG.dt_ms, batch_size=BATCH,
                       chunks_per_run=CHUNKS, workers=1, seed=0) as eng:
        p_cal = eng.predict(x_cal, slots=np.zeros(len(x_cal), dtype=np.int64))
        p_fid = eng.predict(x_fid, slots=np.zeros(len(x_fid), dtype=np.int64))
    return x_cal, spiking_rates(p_cal, CFG), x_fid, spiking_rates(p_fid, CFG), p_fid


@pytest.fixture(scope="module")
def calibrated(net, spiking_data):
    conn, weights = net
    x_cal, s_cal, _, _, _ = spiking_data
    model = CerebellumSurrogate(CFG, conn, weights, SurrogateConfig(fit_steps=60))
    rms = calibrate(model, x_cal, s_cal, seed=0)
    return model, rms


def test_spiking_rates_from_counts(spiking_data):
    _, _, x_fid, s_fid, p_fid = spiking_data
    np.testing.assert_allclose(s_fid["grc"], p_fid.counts["grc"] / 0.1)
    np.testing.assert_allclose(s_fid["goc"], p_fid.counts["goc"] / 0.1)
    np.testing.assert_allclose(s_fid["pc"], p_fid.counts["pc"] / 0.08)  # readout from 20 ms of 100 ms
    np.testing.assert_array_equal(s_fid["scores"], p_fid.scores)


def test_calibration_reduces_the_error_of_every_population(net, spiking_data, calibrated):
    conn, weights = net
    x_cal, s_cal, _, _, _ = spiking_data
    model, rms = calibrated
    raw = CerebellumSurrogate(CFG, conn, weights, SurrogateConfig(fit_steps=0))
    rms0 = calibrate(raw, x_cal, s_cal, seed=0)  # no steps: only measures the error of the defaults
    assert raw.param_dict() == {pop: [1.0, 0.0, 1.0, 1.0] for pop in POPS}
    assert set(rms) == set(POPS)
    for pop in POPS:
        assert np.isfinite(rms[pop]) and rms[pop] < rms0[pop], (pop, rms, rms0)
    assert rms["pc"] < 0.5 * rms0["pc"], (rms, rms0)
    assert model.param_dict() != raw.param_dict()
    # a physically sensible fit: more drive is still more firing (a sign error of the model would
    # otherwise be absorbed by a negative gain)
    for pop, (gain_mu, _, _, _) in model.param_dict().items():
        assert gain_mu > 0, (pop, model.param_dict())


def test_uncalibrated_surrogate_already_correlates(net, spiking_data):
    """The structure alone (connectivity, weights, neuron parameters, Siegert rates) must match
    the spiking network; calibration only adjusts gains and offsets."""
    conn, weights = net
    _, _, x_fid, s_fid, _ = spiking_data
    metrics, _ = fidelity(CerebellumSurrogate(CFG, conn, weights), x_fid, s_fid)
    # measured 0.89 / 0.96 / 0.87 on this network
    for pop, bound in (("grc", 0.8), ("goc", 0.85), ("pc", 0.75)):
        assert metrics[f"fidelity_r_{pop}"] > bound, metrics


def test_population_responses_have_the_right_signs(net):
    """Golgi cells inhibit granule cells; mossy and parallel fibres excite Golgi cells; a parallel
    fibre excites a Purkinje cell when its weight is above w_mli and inhibits it below."""
    conn, weights = net
    model = CerebellumSurrogate(CFG, conn, weights)
    x = torch.as_tensor(np.random.default_rng(8).random((4, N_IN)))
    with torch.no_grad():
        r = model.rates(x)
        mf_sum = model.grc_input(r["mf"])
        grc_lo = model.grc_rates(mf_sum, r["goc"])
        grc_hi = model.grc_rates(mf_sum, 2 * r["goc"])
        assert torch.all(grc_hi <= grc_lo) and float((grc_lo - grc_hi).sum()) > 0
        goc = model.goc_rates(r["mf"], r["grc"])
        for more in (model.goc_rates(r["mf"] * 1.5, r["grc"]), model.goc_rates(r["mf"], r["grc"] * 1.5)):
            assert torch.all(more >= goc) and float((more - goc).sum()) > 1.0  # (a cell may lack mossy input)
        pcs = {w: CerebellumSurrogate(CFG, conn, np.full_like(weights, w)).pc_rates(r["grc"])
               for w in (0.0, CFG.w_mli, 1.0)}
    assert torch.all(pcs[1.0] > pcs[CFG.w_mli]) and torch.all(pcs[CFG.w_mli] > pcs[0.0])
    # no net PF drive: every Purkinje cell at the same (spontaneous) rate
    np.testing.assert_allclose(pcs[CFG.w_mli].numpy(), float(pcs[CFG.w_mli][0, 0]), rtol=1e-9)


def test_surrogate_and_spiking_rates_correlate(spiking_data, calibrated):
    _, _, x_fid, s_fid, p_fid = spiking_data
    model, _ = calibrated
    metrics, arrays = fidelity(model, x_fid, s_fid)
    assert metrics["fidelity_n"] == len(x_fid)
    # measured 0.91 / 0.96 / 0.89 and R^2 0.71 on this network
    assert metrics["fidelity_r_grc"] > 0.8, metrics
    assert metrics["fidelity_r_goc"] > 0.85, metrics
    assert metrics["fidelity_r_pc"] > 0.75, metrics
    assert metrics["fidelity_readout_r2"] > 0.4, metrics
    # agreement: the same predicted class, recomputed here from both networks
    with torch.no_grad():
        sur_labels = model(torch.as_tensor(x_fid)).argmax(1).numpy()
    agreement = float((sur_labels == p_fid.labels).mean())
    assert metrics["fidelity_agreement"] == pytest.approx(agreement)
    assert agreement >= 0.65, metrics  # two classes: well above chance (measured 0.8)
    # the arrays are the rates compared
    for pop in POPS:
        assert arrays[f"spiking_{pop}"].shape == arrays[f"surrogate_{pop}"].shape == s_fid[pop].shape
        np.testing.assert_allclose(arrays[f"spiking_{pop}"], s_fid[pop], rtol=1e-6)
        r = np.corrcoef(arrays[f"spiking_{pop}"].ravel(), arrays[f"surrogate_{pop}"].ravel())[0, 1]
        assert metrics[f"fidelity_r_{pop}"] == pytest.approx(r, abs=1e-5)
    np.testing.assert_allclose(arrays["surrogate_scores"], model.rates(torch.as_tensor(x_fid))["scores"].detach().numpy(),
                               rtol=1e-5)


# ============================================================================ surrogate files
@pytest.fixture()
def saved(tmp_path, net, calibrated):
    from models.spiking.train import save_checkpoint

    conn, weights = net
    model, _ = calibrated
    ckpt = tmp_path / "checkpoint.npz"
    save_checkpoint(ckpt, CFG, conn, weights, 0)
    path = save_surrogate(tmp_path / "surrogate.npz", model, str(ckpt))
    return path, ckpt, model


def test_save_and_load_reproduce_the_outputs(saved):
    path, ckpt, model = saved
    back = load_surrogate(path, ckpt)
    assert back.scfg == model.scfg and back.param_dict() == model.param_dict()
    assert back.param_dict() != {pop: [1.0, 0.0, 1.0, 1.0] for pop in POPS}  # calibrated, not the defaults
    x = torch.as_tensor(np.random.default_rng(7).random((6, N_IN)))
    with torch.no_grad():
        a, b = model.rates(x), back.rates(x)
    for key in a:
        np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=1e-12, atol=1e-12, err_msg=key)
    data = load_npz(path)
    assert str(data["format"]) == SURROGATE_FORMAT and str(data["source_checkpoint"]) == str(ckpt)


def _resave(change):
    def corrupt(path):
        arrays = load_npz(path)
        change(arrays)
        save_npz(path, **arrays)

    return corrupt


def _set_json(key, edit):
    def change(arrays):
        value = json.loads(str(arrays[key]))
        edit(value)
        arrays[key] = np.array(json.dumps(value))

    return _resave(change)


BROKEN_SURROGATES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable surrogate"),
    "not_npz": (lambda p: p.write_text("gain: 1.0\n"), "not a readable surrogate"),
    "empty": (lambda p: p.write_bytes(b""), "not a readable surrogate"),
    "wrong_format": (_resave(lambda a: a.update(format=np.array("cereb-spiking-checkpoint-v1"))), "is not a surrogate file"),
    "no_format": (_resave(lambda a: a.pop("format")), "is not a surrogate file"),
    "no_params": (_resave(lambda a: a.pop("params")), "not a readable surrogate"),
    "params_not_json": (_resave(lambda a: a.update(params=np.array("{gain"))), "not a readable surrogate"),
    "params_short": (_set_json("params", lambda v: v.update(pc=[1.0, 0.0])), "4 numbers"),
    "params_missing_pop": (_set_json("params", lambda v: v.pop("goc")), "4 numbers"),
    "bad_setting": (_set_json("settings", lambda v: v.update(damping=0.0)), "damping"),
    "unknown_setting": (_set_json("settings", lambda v: v.update(colour="red")), "colour"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SURROGATES))
def test_broken_surrogate_file_raises_checkpoint_error(case, saved):
    path, ckpt, _ = saved
    corrupt, fragment = BROKEN_SURROGATES[case]
    corrupt(path)
    with pytest.raises(CheckpointError) as info:
        load_surrogate(path, ckpt)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_a_spiking_checkpoint_is_not_a_surrogate_file(saved):
    _, ckpt, _ = saved
    with pytest.raises(CheckpointError, match="is not a surrogate file") as info:
        load_surrogate(ckpt, ckpt)
    assert str(ckpt) in str(info.value)


def test_missing_surrogate_file(tmp_path):
    path = tmp_path / "nothing" / "surrogate.npz"
    with pytest.raises(CheckpointError, match="surrogate file not found") as info:
        load_surrogate(path, tmp_path / "checkpoint.npz")
    assert str(path) in str(info.value)


def test_missing_checkpoint_of_a_good_surrogate_file(saved, tmp_path):
    path, ckpt, _ = saved
    ckpt.unlink()
    with pytest.raises(CheckpointError, match="checkpoint not found") as info:
        load_surrogate(path, ckpt)
    assert str(ckpt) in str(info.value)


# ============================================================================ settings
@pytest.mark.parametrize("bad, fragment", [
    (dict(n_calibration=9), "n_calibration"),
    (dict(n_fidelity=0), "n_fidelity"),
    (dict(fp_iters=0), "fp_iters"),
    (dict(grad_iters=0), "grad_iters"),
    (dict(damping=0.0), "damping"),
    (dict(damping=1.5), "damping"),
    (dict(damping=float("nan")), "damping"),
    (dict(temperature_hz=0.0), "temperature_hz"),
    (dict(temperature_hz=-10.0), "temperature_hz"),
    (dict(fit_steps=-1), "fit_steps"),
])
def test_surrogate_config_rejects_bad_values(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        SurrogateConfig(**bad)


def test_surrogate_config_accepts_the_edges():
    SurrogateConfig(n_calibration=10, n_fidelity=1, fp_iters=1, grad_iters=1, damping=1.0, fit_steps=0)
    SurrogateConfig()
