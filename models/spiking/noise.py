"""Counter-based noise for the mossy fibres: a uniform number that is a pure function of
``(seed, slot, fibre, step)``.

With it the Poisson spike of mossy fibre ``fibre`` of the network copy that holds query
``slot`` at time step ``step`` is ``u(seed, slot, fibre, step) < rate * dt``. The noise does
not depend on how many copies are simulated together, on which process runs them, or on what
the other copies receive: in ``frozen`` mode the network is a deterministic function of
(input, slot, seed), as decision-based attacks need; ``fresh`` mode draws a new seed per call.

The hash is four rounds of SplitMix64 (Steele, Lea & Flood 2014), one per key component.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1

CYTHON_CODE = """
cdef inline unsigned long long _cereb_mix(unsigned long long z) noexcept:
    z = z + 0x9E3779B97F4A7C15ULL
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)

cdef double mf_uniform(long long seed, long long slot, long long fibre, long long step) noexcept:
    cdef unsigned long long h = _cereb_mix(<unsigned long long>seed)
    h = _cereb_mix(h ^ <unsigned long long>slot)
    h = _cereb_mix(h ^ <unsigned long long>fibre)
    h = _cereb_mix(h ^ <unsigned long long>step)
    return (h >> 11) * (1.0 / 9007199254740992.0)
"""


CPP_CODE = """
static inline unsigned long long _cereb_mix(unsigned long long z)
{
    z = z + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline double mf_uniform(long long seed, long long slot, long long fibre, long long step)
{
    unsigned long long h = _cereb_mix((unsigned long long)seed);
    h = _cereb_mix(h ^ (unsigned long long)slot);
    h = _cereb_mix(h ^ (unsigned long long)fibre);
    h = _cereb_mix(h ^ (unsigned long long)step);
    return (h >> 11) * (1.0 / 9007199254740992.0);
}
"""


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def uniform(seed, slot, fibre, step) -> np.ndarray:
    """NumPy reference of the hash: uniform floats in [0, 1), broadcast over the arguments."""
    as_u = lambda a: np.asarray(a, dtype=np.int64).astype(np.uint64)
    h = _mix(as_u(seed))
    h = _mix(h ^ as_u(slot))
    h = _mix(h ^ as_u(fibre))
    h = _mix(h ^ as_u(step))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def poisson_trains(seed: int, slot: int, rates_hz: np.ndarray, n_steps: int, dt_ms: float) -> np.ndarray:
    """The mossy-fibre spikes the network draws in one window: ``(n_steps, n_fibres)`` booleans,
    ``u(seed, slot, fibre, step) < rate * dt`` (the kernel's and the Brian2 build's test, ``dt`` in
    seconds) for fibres firing at ``rates_hz`` ``(n_fibres,)``."""
    rates = np.asarray(rates_hz, dtype=np.float64)
    steps = np.arange(int(n_steps), dtype=np.int64)[:, None]
    fibres = np.arange(len(rates), dtype=np.int64)[None, :]
    return uniform(int(seed) % (2**31), int(slot) % (2**31), fibres, steps) < (float(dt_ms) * 1e-3) * rates[None, :]


def brian2_function(b2):
    """The hash as a Brian2 function ``mf_uniform(seed, slot, fibre, step)`` (Cython, C++, NumPy)."""

    @b2.implementation("cython", CYTHON_CODE)
    @b2.implementation("cpp", CPP_CODE)
    @b2.declare_types(seed="integer", slot="integer", fibre="integer", step="integer", result="float")
    @b2.check_units(seed=1, slot=1, fibre=1, step=1, result=1)
    def mf_uniform(seed, slot, fibre, step):
        return uniform(seed, slot, fibre, step)

    return mf_uniform
