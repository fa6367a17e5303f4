"""The engine's exponential-Euler step (models/spiking/integrate.py) against ``exp``."""
from __future__ import annotations

import numpy as np
import pytest

from models.spiking import integrate


def test_relaxation_factor_matches_exp_to_the_documented_error():
    y = np.linspace(0.0, 1.0, 10_001)
    rel = np.abs(integrate.exp_neg(y) / np.exp(-y) - 1)
    assert rel.max() < 2e-11
    y = np.linspace(1.0, 16.0, 10_001)[:-1]
    assert np.abs(integrate.exp_neg(y) - np.exp(-y)).max() < 2e-8
    assert np.abs(integrate.exp_neg(y) / np.exp(-y) - 1).max() < 8e-3
    # beyond Y_MAX the membrane is at its equilibrium (exp(-16) = 1.1e-7)
    assert integrate.exp_neg(np.array([16.0, 1e3, 1e12])).tolist() == [0.0, 0.0, 0.0]


def test_relaxation_factor_stays_in_zero_one_so_a_conductance_never_overshoots():
    y = np.concatenate([np.linspace(0, 20, 100_001), np.geomspace(1e-9, 1e9, 1000)])
    e = integrate.exp_neg(y)
    assert e.min() >= 0.0 and e.max() <= 1.0
    assert np.all(np.diff(integrate.exp_neg(np.linspace(0, 15.9, 10_000))) < 0)  # monotone
    # v moves towards v_inf and never past it, whatever the conductance
    rng = np.random.default_rng(0)
    v, v_inf, y = rng.uniform(-0.08, -0.04, 1000), rng.uniform(-0.075, -0.06, 1000), np.geomspace(1e-3, 1e6, 1000)
    nxt = integrate.relax_step(v, v_inf * y, y)
    assert np.all((nxt - v_inf) * np.sign(v - v_inf) >= -1e-15)  # up to the rounding of b / y
    assert np.all(np.abs(nxt - v_inf) <= np.abs(v - v_inf) + 1e-15)


def test_one_step_equals_exponential_euler_in_the_physiological_range():
    rng = np.random.default_rng(1)
    g = rng.uniform(0, 20, 10_000)  # Golgi conductance in leak units (the network stays far below)
    dt, tau, gt, el, eg = 0.2, 10.0, 1.0, -70.0, -75.0
    v = rng.uniform(-80, -40, g.size)
    y = dt * (1 + gt + g) / tau
    b = dt * (el + (gt + g) * eg) / tau
    v_inf = (el + (gt + g) * eg) / (1 + gt + g)
    exact = v_inf + (v - v_inf) * np.exp(-y)
    np.testing.assert_allclose(integrate.relax_step(v, b, y), exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("code", [integrate.CYTHON_CODE, integrate.CPP_CODE])
def test_the_compiled_polynomial_is_the_documented_one(code):
    """The Horner string that both compiled implementations use evaluates to the Taylor polynomial
    of exp(-z) (a typo in a coefficient would change the network silently)."""
    assert integrate._HORNER in code and "0.0625" in code and f"{integrate.Y_MAX!r}" in code
    z = np.linspace(0, 1, 101)
    horner = eval(integrate._HORNER, {"z": z})  # noqa: S307 - a fixed arithmetic expression of this module
    taylor = sum(c * z ** n for n, c in enumerate(integrate._TAYLOR))
    np.testing.assert_allclose(horner, taylor, rtol=1e-15, atol=1e-15)
    assert integrate._TAYLOR == tuple((-1.0) ** n / np.prod(np.arange(1, n + 1)) for n in range(7))


def test_the_compiled_cython_step_equals_the_numpy_reference():
    """relax_step inside a Brian2 NeuronGroup (Cython) against the NumPy reference, step by step."""
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    n, steps = 200, 50
    rng = np.random.default_rng(2)
    v0, b, y = rng.uniform(-0.08, -0.04, n), rng.uniform(-0.02, -0.001, n) * 0.2, np.geomspace(0.01, 1e9, n)
    g = b2.NeuronGroup(n, "v : volt\nb : volt (constant)\ny : 1 (constant)", namespace={
        "relax_step": integrate.brian2_function(b2)}, dt=0.1 * b2.ms, name="relax_test")
    g.run_regularly("v = relax_step(v, b, y)", when="groups", name="relax_test_step")
    g.v_, g.b_, g.y_ = v0, b, y
    b2.Network(g).run(steps * 0.1 * b2.ms)
    expect = v0
    for _ in range(steps):
        expect = integrate.relax_step(expect, b, y)
    assert np.all(np.isfinite(g.v_[:]))  # a huge conductance neither overflows nor gives NaN
    np.testing.assert_allclose(g.v_[:], expect, rtol=1e-12, atol=1e-15)
    assert not np.allclose(expect, v0)  # it moved
