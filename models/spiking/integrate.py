"""One exponential-Euler step of a conductance-based membrane, without ``exp`` or a checked division.

The granule and Purkinje membranes are linear in ``v`` with a coefficient that depends on a
conductance (see :mod:`models.spiking.network`)::

    tau dv/dt = (E_L + drive - v) + g (E_syn - v)

Over one step ``dt`` with ``g`` held at its value at the start of the step (Brian2's
``exponential_euler``), the exact solution relaxes ``v`` towards ``v_inf = b / y`` by the factor
``exp(-y)``, with ``y = dt (1 + g) / tau`` and ``b = dt (E_L + drive + g E_syn) / tau``::

    v <- v_inf + (v - v_inf) exp(-y)

Brian2 generates this with a call of ``exp`` and a zero-checked division per neuron and step,
which keeps the compiler from vectorising the loop: it was 55 % of the inference time of the
default digits network (Brian2 profile, 2-core AMD EPYC, December 2026). :func:`brian2_function`
computes the same step with a polynomial: ``exp(-y) = T6(-y/16) ** 16`` (``T6`` the degree-6
Taylor polynomial, 4 squarings), whose relative error is below ``2e-11`` for ``y <= 1``, and whose
absolute error stays below ``2e-8`` up to ``y = 16`` (relative ``8e-3`` there, where ``exp(-y) =
1.1e-7``); beyond ``y = 16`` the factor is 0 (``v`` is at ``v_inf``). At the default step (0.2 ms) and time constants (10 ms) ``y <= 1`` means a
conductance below 49 times the leak, far above anything the network reaches, so the step agrees
with ``exp`` to rounding; the factor stays in ``[0, 1]`` for every ``y >= 0``, so ``v`` never
overshoots ``v_inf`` (a conductance can never push the membrane past its reversal potential).
The division is compiled without the zero check (``y >= dt / tau > 0``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["exp_neg", "relax_step", "brian2_function"]

Y_MAX = 16.0  # beyond this the relaxation factor is 0
# 1/n! for the degree-6 Taylor polynomial of exp(-z)
_TAYLOR = (1.0, -1.0, 0.5, -1.0 / 6.0, 1.0 / 24.0, -1.0 / 120.0, 1.0 / 720.0)

_HORNER = "1.0 + z * (-1.0 + z * (0.5 + z * (-0.16666666666666666 + z * (0.041666666666666664 + z * (-0.008333333333333333 + z * 0.001388888888888889)))))"

CYTHON_CODE = f"""
@_cython.cdivision(True)
cdef inline double relax_step(double v, double b, double y) noexcept nogil:
    cdef double z = (y if y < {Y_MAX!r} else {Y_MAX!r}) * 0.0625
    cdef double p = {_HORNER}
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * (y < {Y_MAX!r})
    cdef double v_inf = b / y
    return v_inf + (v - v_inf) * p
"""

CPP_CODE = f"""
static inline double relax_step(double v, double b, double y)
{{
    const double z = (y < {Y_MAX!r} ? y : {Y_MAX!r}) * 0.0625;
    double p = {_HORNER};
    p = p * p;
    p = p * p;
    p = p * p;
    p = p * p;
    p = p * (y < {Y_MAX!r});
    const double v_inf = b / y;
    return v_inf + (v - v_inf) * p;
}}
"""


def exp_neg(y):
    """``exp(-y)`` as the compiled step computes it (NumPy), for ``y >= 0``."""
    y = np.asarray(y, dtype=np.float64)
    z = np.minimum(y, Y_MAX) * 0.0625  # clamped, as in the compiled step, so that the power cannot overflow
    p = np.zeros_like(z)
    for c in reversed(_TAYLOR):
        p = p * z + c
    p = p ** 16
    return np.where(y < Y_MAX, p, 0.0)


def relax_step(v, b, y):
    """One step: ``v_inf + (v - v_inf) exp(-y)`` with ``v_inf = b / y`` (NumPy reference)."""
    v_inf = np.asarray(b, dtype=np.float64) / np.asarray(y, dtype=np.float64)
    return v_inf + (np.asarray(v, dtype=np.float64) - v_inf) * exp_neg(y)


def brian2_function(b2):
    """:func:`relax_step` as a Brian2 function ``relax_step(v, b, y)`` (Cython, C++, NumPy)."""

    @b2.implementation("cython", CYTHON_CODE)
    @b2.implementation("cpp", CPP_CODE)
    @b2.declare_types(v="float", b="float", y="float", result="float")
    @b2.check_units(v=b2.volt, b=b2.volt, y=1, result=b2.volt)
    def relax_step(v, b, y):  # the name the compiled code defines
        return _reference(v, b, y) * b2.volt

    return relax_step


_reference = relax_step
