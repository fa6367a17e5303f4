"""Rate-coded surrogate of a trained spiking cerebellum: expected firing rates, differentiable.

Built from a spiking checkpoint with the same connectivity, MF-GrC EPSPs, PF-PC weights,
Purkinje drives and neuron parameters (:mod:`models.spiking.network`), the surrogate maps input
features to the expected firing rate of every cell, population by population::

    mossy fibres   r_mf  = r_min + x (r_max - r_min)                                      (exact)
    granule cells  r_grc = F_grc(mu, sigma; tau_eff), shunted by tonic and Golgi conductances
    Golgi cells    r_goc = F_goc(mu, sigma), driven by mossy and parallel fibres, less their mean AHP
    interneurons   r_mli = F_mli(mu, sigma), driven by parallel fibres, less their mean AHP
    Purkinje cells r_pc  = F_pc(mu, sigma; tau_eff), PF EPSPs j_pf w, shunted by MLI conductances
    scores         mean Purkinje rate per class (Hz), as the spiking readout

``mu`` is the mean free membrane potential under Poisson input and ``sigma`` the noise amplitude
of the diffusion approximation, in the convention of Brunel (2000) (the free membrane potential
has variance ``sigma^2 / 2``): for delta (voltage-jump) synapses of sizes ``J_s`` at rates
``r_s``, Campbell's theorem gives ``mu = v_inf + tau sum_s J_s r_s`` and ``sigma^2 = tau sum_s
J_s^2 r_s``. A conductance ``g`` (in leak units, reversal ``E_GABA``) is taken at its mean (the
effective-time-constant approximation; Kuhn, Aertsen & Rotter 2004, J Neurosci 24:2345)::

    tau_eff = tau_m / (1 + g),   v_inf = (E_L + g E_GABA) / (1 + g)

Granule cell i (Golgi inhibition: each Golgi spike adds ``g_goc_grc``, decaying with
``tau_goc_grc``; MF EPSPs ``w_ij``, per synapse, calibrated in the checkpoint)::

    g = g_tonic + g_goc_grc tau_goc_grc sum_{Golgi k -> i} r_goc,k
    mu = v_inf + tau_eff sum_j w_ij r_mf,j,      sigma^2 = tau_eff sum_j w_ij^2 r_mf,j

Golgi cells and interneurons (adaptive pacemakers: ``tau dv/dt = V_rest + drive - v - a``, each
spike adds ``ahp`` to ``a``, which decays with ``tau_ahp``; mean ``a = ahp tau_ahp r``)::

    Golgi:  mu = V_rest + drive + tau (w_mf_goc sum r_mf + w_grc_goc sum r_grc) - ahp tau_ahp r_goc
    MLI:    mu = V_rest + drive + tau w_pf_mli sum r_grc - ahp tau_ahp r_mli
            sigma^2 = tau sum_s J_s^2 r_s  (the same inputs)

Each is self-consistent in the cell's own rate, ``r = F(mu(r), sigma)``: since ``F`` rises with
``mu`` the root is unique; it is found per cell on the bracket ``[0, F(mu(0))]`` without gradient
(false position), and its gradient is the implicit one, ``dr = dF / (1 + ahp tau_ahp F')``. Purkinje cell i (intrinsic drive ``drive_i``,
MLI inhibition: each MLI spike adds ``g_mli_pc``, decaying with ``tau_mli_pc``; PF-PC weights
``w`` in [0, w_max])::

    g = g_mli_pc tau_mli_pc sum_{MLI k -> i} u_k r_mli,k,   v_inf = (E_L + drive_i + g E_GABA) / (1 + g)
    mu = v_inf + tau_eff j_pf sum_j w_ji r_grc,j,      sigma^2 = tau_eff j_pf^2 sum_j w_ji^2 r_grc,j

``F`` is the leaky integrate-and-fire rate of the diffusion approximation (the Siegert formula;
Brunel 2000, eq. 21), with the effective time constant where there is one::

    1 / F = tau sqrt(pi) int_{(V_r - mu) / sigma}^{(theta - mu) / sigma} erfcx(-u) du

(``erfcx(-u) = exp(u^2) (1 + erf(u))``), evaluated by Gauss-Legendre quadrature, so that its
derivative is the surrogate gradient. The diffusion approximation is only approximate for the
granule cell's few large EPSPs and for the fluctuations of the conductances and the AHP, and
the spiking network is simulated for a finite window (from its steady state under background
input), so each population has four free parameters, fitted by least squares to the spiking
network's rates on calibration inputs (:func:`calibrate`)::

    F_pop(mu, sigma) = gain_out * Siegert(theta + gain_mu (mu - theta) + shift_mv, gain_sigma sigma)

Every connection but the PF-PC weights (dense, ``(n_grc, n_pc)``) is a sparse CSR matrix, so a
surrogate of hundreds of thousands of granule cells holds no ``(n_grc, n_goc)`` table.

The Golgi-granule loop is solved as a fixed point (damped iteration with Anderson mixing, without
gradient, to convergence; then, when a gradient is wanted, a few damped iterations with gradient
from the converged point: the gradient of a contractive fixed point, truncated). The iteration,
and the root search of each pacemaker's rate, start from the previous call's solution when the
batch has the same size (successive attack steps change the input little); results then depend
on the call history only below the tolerances ``fp_tol_hz`` and ``ROOT_TOL_HZ``
(:meth:`CerebellumSurrogate.reset_warm` forgets it). The interneurons and Purkinje
cells are feed-forward from the granule rates. ``forward`` returns logits ``scores / temperature_hz``.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import CheckpointError

__all__ = ["SurrogateConfig", "CerebellumSurrogate", "siegert_rate", "calibrate", "fidelity", "save_surrogate",
           "load_surrogate", "SURROGATE_FORMAT", "POPS"]

SURROGATE_FORMAT = "cerebellum-surrogate-v2"   # v2: conductance inhibition, adaptive Golgi cells, interneurons
OLD_FORMATS = ("cerebellum-surrogate-v1",)
POPS = ("grc", "goc", "mli", "pc")
_GL_NODES = 48
ROOT_TOL_HZ = 1e-11   # residual (or bracket) of the self-consistent AHP rates
ROOT_MAX_ITERS = 100  # safeguarded Newton iterations at most (5-8 are needed)
_FD_MV = 1e-6         # step (mV) of the backward difference that gives F' in the root search


@dataclass(frozen=True)
class SurrogateConfig:
    """Settings of the surrogate (``surrogate.*`` keys)."""

    n_calibration: int = 500          # training inputs simulated to fit the free parameters
    n_fidelity: int = 500             # held-out (test) inputs on which fidelity is reported
    fp_iters: int = 20                # damped fixed-point iterations of the Golgi-granule loop (no gradient; ~1e-5 Hz residual)
    fp_tol_hz: float = 1e-4           # stop the iteration once no Golgi rate moves by more than this
    grad_iters: int = 3               # iterations with gradient from the converged point
    damping: float = 0.5
    temperature_hz: float = 10.0      # logits = scores / temperature (scores are Hz; keeps softmax losses usable)
    fit_steps: int = 150              # optimiser steps per population in the calibration

    def __post_init__(self):
        if self.n_calibration < 10 or self.n_fidelity < 1:
            raise ValueError("surrogate.n_calibration >= 10 and surrogate.n_fidelity >= 1 are required")
        if self.fp_iters < 1 or self.grad_iters < 1 or not 0 < self.damping <= 1 or self.fp_tol_hz < 0:
            raise ValueError("surrogate.fp_iters >= 1, surrogate.grad_iters >= 1, 0 < surrogate.damping <= 1 and "
                             "surrogate.fp_tol_hz >= 0 are required")
        if self.temperature_hz <= 0 or self.fit_steps < 0:
            raise ValueError("surrogate.temperature_hz > 0 and surrogate.fit_steps >= 0 are required")


def _gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)


_GL = _gauss_legendre(_GL_NODES)
U_MAX = 20.0        # threshold more than 20 sigma above the mean: silent (rate < 1e-170 / tau)
B_MIN = -20.0       # threshold more than 20 sigma below the mean: deterministic (noise-free) LIF
LOGC_RANGE = (math.log(0.01), math.log(100.0))
_TABLE: torch.Tensor | None = None
# grid_sample coordinates in [-1, 1] as one multiply-add: log c -> x, b -> y
_GX = (2 / (LOGC_RANGE[1] - LOGC_RANGE[0]), -2 * LOGC_RANGE[0] / (LOGC_RANGE[1] - LOGC_RANGE[0]) - 1)
_GY = (2 / (U_MAX - B_MIN), -2 * B_MIN / (U_MAX - B_MIN) - 1)


def siegert_exact(b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Dimensionless LIF rate ``tau nu`` by quadrature: ``b = (theta - mu) / sigma``,
    ``c = (theta - V_r) / sigma > 0`` (so the lower limit is ``b - c``), ``b <= U_MAX``."""
    nodes, weights = (t.to(b.dtype) for t in _GL)
    a = b - c
    half, mid = (b - a) / 2, (b + a) / 2
    u = mid.unsqueeze(-1) + half.unsqueeze(-1) * nodes
    integral = half * (torch.special.erfcx(-u) * weights).sum(-1)
    return 1.0 / (math.sqrt(math.pi) * integral.clamp_min(1e-300))


def _table() -> torch.Tensor:
    """log(tau nu) on a grid of (b, log c): 801 x 401 points, built once per process (~0.3 s),
    in blocks of rows (the quadrature of the whole grid at once would hold ~0.4 GB)."""
    global _TABLE
    if _TABLE is None:
        b = torch.linspace(B_MIN, U_MAX, 801, dtype=torch.float64)
        c = torch.linspace(*LOGC_RANGE, 401, dtype=torch.float64).exp()
        rows = [torch.log(siegert_exact(*(t.reshape(-1) for t in torch.meshgrid(part, c, indexing="ij"))))
                for part in b.split(64)]
        _TABLE = torch.cat(rows).reshape(1, 1, 801, 401)
    return _TABLE


def siegert_rate(mu: torch.Tensor, sigma: torch.Tensor, tau_s: float | torch.Tensor, v_th: float,
                 v_reset: float) -> torch.Tensor:
    """Firing rate (Hz) of a LIF neuron (no refractory period) whose free membrane potential has
    mean ``mu`` (mV) and noise amplitude ``sigma`` (mV; Brunel's convention: the free membrane
    potential has variance ``sigma^2 / 2``), with membrane time constant ``tau_s`` (s; a number,
    or a tensor broadcastable to ``mu``, e.g. a conductance-dependent effective time constant),
    threshold ``v_th`` and reset ``v_reset`` (mV): the Siegert formula.

    Evaluated by bilinear interpolation of ``log(tau nu)`` on a precomputed grid of
    ``b = (v_th - mu) / sigma`` and ``log c``, ``c = (v_th - v_reset) / sigma`` (relative error below
    1e-3 inside the grid; tested against :func:`siegert_exact`), which is ~50x cheaper than the
    quadrature and differentiable almost everywhere. Beyond the grid: silent for ``b > 20``; for
    ``b < -20`` (drive far above threshold) the noise-free LIF rate ``1 / (tau ln((c - b) / -b))``;
    for ``c > 100`` (noise small against the reset distance, as in a pacemaker) the integral below
    ``u = b - 100``, where ``erfcx(-u) = 1 / (sqrt(pi) |u|)`` within 1e-4, in closed form:
    ``1 / (tau nu) = 1 / (tau nu)(b, 100) + ln((c - b) / (100 - b))``.
    """
    import torch.nn.functional as F

    sigma = sigma.clamp_min(1e-6)
    b = (v_th - mu) / sigma
    c = (v_th - v_reset) / sigma
    gx = torch.log(c).clamp(*LOGC_RANGE) * _GX[0] + _GX[1]
    grid = torch.stack([gx, b.clamp(B_MIN, U_MAX) * _GY[0] + _GY[1]], -1)
    table = _table() if mu.dtype == torch.float64 else _table().to(mu.dtype)
    log_tnu = F.grid_sample(table, grid.reshape(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                            align_corners=True).reshape(mu.shape)
    inv = torch.exp(-log_tnu)  # 1 / (tau nu) inside the grid
    # the branches below change nothing where no element needs them (the common case), so each is
    # computed only when some element does (one comparison instead of several full-size operations)
    c_max = math.exp(LOGC_RANGE[1])
    if bool((c > c_max).any()):
        b_in = b.clamp(max=U_MAX)
        inv = inv + torch.log((torch.clamp(c, min=c_max) - b_in) / (c_max - b_in))  # 0 where c <= c_max
    rate = 1.0 / (inv * tau_s)
    if bool((b < B_MIN).any()):
        b_det = b.clamp(max=B_MIN)
        det = 1.0 / (tau_s * torch.log((c - b_det) / -b_det))
        rate = torch.where(b < B_MIN, det, rate)
    return torch.where(b > U_MAX, 0.0, rate)


# ----------------------------------------------------------------------------- connections
def connection_matrix(pre: np.ndarray, post: np.ndarray, n_pre: int, n_post: int,
                      values: np.ndarray | None = None) -> torch.Tensor:
    """The connections ``pre -> post`` as a sparse CSR matrix ``(n_post, n_pre)`` (float64): entry
    ``(j, i)`` is the sum of ``values`` (default 1, i.e. the synapse count) over synapses ``i -> j``."""
    pre_t = torch.as_tensor(np.asarray(pre, dtype=np.int64))
    post_t = torch.as_tensor(np.asarray(post, dtype=np.int64))
    v = torch.ones(len(pre_t), dtype=torch.float64) if values is None else \
        torch.as_tensor(np.asarray(values, dtype=np.float64))
    coo = torch.sparse_coo_tensor(torch.stack([post_t, pre_t]), v, (n_post, n_pre), check_invariants=True)
    with warnings.catch_warnings():  # torch marks CSR support as beta; the products used here are tested
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()


def _project(m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Summed presynaptic rates ``(n, n_post)`` through the connection matrix ``m`` ``(n_post, n_pre)``
    from rates ``r`` ``(n, n_pre)``."""
    return (m @ r.T).T


# ----------------------------------------------------------------------------- the surrogate
class CerebellumSurrogate(nn.Module):
    """Expected rates of a trained spiking cerebellum (see the module docstring).

    Parameters
    ----------
    cfg, conn, weights : the spiking network (:class:`~models.spiking.params.SpikingConfig`,
        :class:`~models.spiking.network.Connectivity`, PF-PC weights ``(n_grc, n_pc)``).
    scfg : the surrogate's settings.
    params : fitted free parameters, population -> ``(gain_mu, shift_mv, gain_sigma, gain_out)``
        (default ``(1, 0, 1, 1)``: the uncalibrated diffusion approximation).

    ``forward(x)`` returns logits ``(n, n_classes)``; :meth:`rates` returns every population.
    """

    def __init__(self, cfg, conn, weights: np.ndarray, scfg: SurrogateConfig | None = None,
                 params: dict | None = None):
        super().__init__()
        self.cfg, self.conn = cfg, conn
        self.scfg = scfg or SurrogateConfig()
        f64 = torch.float64
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (conn.n_grc, conn.n_pc):
            raise ValueError(f"weights must have shape {(conn.n_grc, conn.n_pc)}, got {w.shape}")
        w_mf = np.asarray(conn.mf_grc_w_mv, dtype=np.float64)
        self.register_buffer("mf_grc", connection_matrix(conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, conn.n_grc, w_mf))
        self.register_buffer("mf_grc_sq", connection_matrix(conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, conn.n_grc,
                                                            w_mf ** 2))
        self.register_buffer("goc_grc", connection_matrix(conn.goc_grc_i, conn.goc_grc_j, conn.n_goc, conn.n_grc))
        self.register_buffer("mf_goc", connection_matrix(conn.mf_goc_i, conn.mf_goc_j, conn.n_mf, conn.n_goc))
        self.register_buffer("grc_goc", connection_matrix(conn.grc_goc_i, conn.grc_goc_j, conn.n_grc, conn.n_goc))
        self.register_buffer("grc_mli", connection_matrix(conn.grc_mli_i, conn.grc_mli_j, conn.n_grc, conn.n_mli))
        self.register_buffer("mli_pc", connection_matrix(conn.mli_pc_i, conn.mli_pc_j, conn.n_mli, conn.n_pc,
                                                          conn.mli_pc_w))
        self.register_buffer("w", torch.as_tensor(w, dtype=f64))
        self.register_buffer("w_sq", torch.as_tensor(w ** 2, dtype=f64))
        self.register_buffer("pc_drive", torch.as_tensor(np.asarray(conn.pc_drive_mv, dtype=np.float64)))
        p = {pop: (1.0, 0.0, 1.0, 1.0) for pop in POPS}  # gain_mu, shift_mv, gain_sigma, gain_out
        if params:
            p.update({k: tuple(float(v) for v in val) for k, val in params.items()})
        self._warm: torch.Tensor | None = None
        self._root_warm: dict[str, torch.Tensor] = {}
        self.params = nn.ParameterDict({pop: nn.Parameter(torch.tensor(p[pop], dtype=f64), requires_grad=False)
                                        for pop in POPS})

    def reset_warm(self) -> None:
        """Forget the previous call's solutions (Golgi fixed point, pacemaker roots): the next call
        starts cold, so its result does not depend on the calls before it even below the tolerances."""
        self._warm = None
        self._root_warm = {}

    # -- the transfer function of each population
    def _f(self, pop: str, mu: torch.Tensor, sigma: torch.Tensor, tau_s: float | torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        g_mu, shift, g_sig, g_out = self.params[pop]
        th, vr = {
            "grc": (cfg.grc_v_thresh_mv, cfg.grc_v_reset_mv),
            "goc": (cfg.goc_v_thresh_mv, cfg.goc_v_reset_mv),
            "mli": (cfg.mli_v_thresh_mv, cfg.mli_v_reset_mv),
            "pc": (cfg.pc_v_thresh_mv, cfg.pc_v_reset_mv),
        }[pop]
        mu_eff = th + g_mu * (mu - th) + shift
        return g_out.abs() * siegert_rate(mu_eff, g_sig.abs() * sigma, tau_s, th, vr)

    def _adapting(self, pop: str, mu0: torch.Tensor, sigma: torch.Tensor, tau_s: float,
                  ahp_mv_s: float) -> torch.Tensor:
        """The self-consistent rate ``r = F_pop(mu0 - ahp_mv_s r, sigma)`` of an adaptive pacemaker
        (``ahp_mv_s = ahp tau_ahp``, mV s: the mean AHP per Hz), every cell at once.

        ``h(r) = r - F(mu0 - ahp_mv_s r)`` rises with ``r`` (``h' = 1 + ahp_mv_s F' >= 1``), is
        ``<= 0`` at 0 and ``>= 0`` at ``F(mu0)``: Newton's method from ``r = 0`` (or from the
        previous call's root) without gradient, with ``F'`` from a backward difference,
        safeguarded by the bracket of the points seen (first ``[0, F(mu0)]``; a step that leaves
        it, or that does not halve ``|h|``, is replaced by the bracket's midpoint), until ``|h|``
        or the bracket is below ``ROOT_TOL_HZ`` (the bracket also ends the search where ``F``
        steps, as at the edge of the Siegert table); cells that have converged leave the search.
        About 5-8 iterations (two evaluations of ``F`` each) from 0 and 2-4 from a warm start,
        against ~35 evaluations of false position from the bracket ``[0, F(mu0)]``, whose upper
        end is thousands of Hz for a pacemaker without its AHP (measured on a trained digits
        network, 2-core AMD EPYC, December 2026). The root then gets the implicit gradient
        ``dF / (1 + ahp_mv_s F')`` (a Newton step whose value part is dropped: the value stays the
        root found).
        """
        def f(mu):
            return self._f(pop, mu, sigma, tau_s)

        with torch.no_grad():
            m0 = mu0.reshape(-1)
            sg = sigma.expand_as(mu0).reshape(-1)
            slope = torch.zeros_like(m0)
            # start from the previous call's root for this population when it has the same shape
            # (successive attack steps, or fit steps, move the root little): 2-4 iterations
            warm = self._root_warm.get(pop)
            r = warm.clone() if warm is not None and warm.shape == m0.shape and warm.dtype == m0.dtype \
                else torch.zeros_like(m0)
            lo, hi = torch.zeros_like(m0), self._f(pop, m0, sg, tau_s)  # the root lies in [0, F(mu0)]
            r = torch.minimum(r, hi)
            prev = torch.full_like(m0, math.inf)
            act = torch.arange(m0.numel())  # the elements not yet converged (only these are evaluated)
            for _ in range(ROOT_MAX_ITERS):
                if not act.numel():
                    break
                ra, la, ha = r[act], lo[act], hi[act]
                mu, sg_a = m0[act] - ahp_mv_s * ra, sg[act]
                fr = self._f(pop, mu, sg_a, tau_s)
                sa = ((fr - self._f(pop, mu - _FD_MV, sg_a, tau_s)) / _FD_MV).clamp_min(0.0)  # F' (Hz/mV)
                h = ra - fr
                up = h > 0  # the root lies below r
                ha, la = torch.where(up, ra, ha), torch.where(up, la, ra)
                done = (h.abs() < ROOT_TOL_HZ) | (ha - la < ROOT_TOL_HZ)
                step = ra - h / (1.0 + ahp_mv_s * sa)
                ok = (step > la) & (step < ha) & (h.abs() <= 0.5 * prev[act])  # (False where step is NaN)
                nxt = torch.where(done, ra, torch.where(ok, step, 0.5 * (la + ha)))
                r[act], slope[act], lo[act], hi[act], prev[act] = nxt, sa, la, ha, h.abs()
                act = act[~done]
            self._root_warm[pop] = r.clone()
            r, slope = r.reshape(mu0.shape), slope.reshape(mu0.shape)
        if not (torch.is_grad_enabled() and (mu0.requires_grad or sigma.requires_grad
                                             or self.params[pop].requires_grad)):
            return r
        at_root = f(mu0 - ahp_mv_s * r)
        return r + (at_root - at_root.detach()) / (1.0 + ahp_mv_s * slope)

    # -- populations
    def mf_rates(self, x: torch.Tensor) -> torch.Tensor:
        """Mossy-fibre rates (Hz) ``(n, n_mf)`` for inputs ``x`` in [0, 1] (``SpikingConfig.mf_rates_hz``)."""
        cfg = self.cfg
        return cfg.mf_rate_min_hz + x.to(torch.float64) * (cfg.mf_rate_max_hz - cfg.mf_rate_min_hz)

    def grc_input(self, r_mf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mossy-fibre drive of each granule cell: ``sum_j w_ij r_j`` (mV/s) and ``sum_j w_ij^2 r_j``
        (mV^2/s), each ``(n, n_grc)``."""
        return _project(self.mf_grc, r_mf), _project(self.mf_grc_sq, r_mf)

    def grc_rates(self, drive: tuple[torch.Tensor, torch.Tensor], r_goc: torch.Tensor) -> torch.Tensor:
        """Granule rates ``(n, n_grc)`` under mossy-fibre ``drive`` (:meth:`grc_input`) and Golgi rates ``r_goc``."""
        return self._grc(drive[0], drive[1], _project(self.goc_grc, r_goc))

    def _grc(self, mf_mean: torch.Tensor, mf_sq: torch.Tensor, goc_sum: torch.Tensor) -> torch.Tensor:
        """Granule rates from the summed inputs (``goc_sum``: summed Golgi rates onto each cell, Hz)."""
        cfg = self.cfg
        g = cfg.grc_g_tonic + cfg.g_goc_grc * cfg.tau_goc_grc_ms * 1e-3 * goc_sum
        tau = cfg.grc_tau_m_ms * 1e-3 / (1.0 + g)
        v_inf = (cfg.grc_e_leak_mv + g * cfg.grc_e_gaba_mv) / (1.0 + g)
        mu = v_inf + tau * mf_mean
        sigma = torch.sqrt(tau * mf_sq + 1e-6)  # (+1e-6: a finite gradient at zero input)
        return self._f("grc", mu, sigma, tau)

    def goc_rates(self, r_mf: torch.Tensor, r_grc: torch.Tensor) -> torch.Tensor:
        """Golgi rates ``(n, n_goc)`` driven by ``r_mf`` and ``r_grc``, self-consistent with their AHP."""
        return self._goc(_project(self.mf_goc, r_mf), _project(self.grc_goc, r_grc))

    def _goc(self, mf_in: torch.Tensor, pf_in: torch.Tensor) -> torch.Tensor:
        """Golgi rates from the summed mossy-fibre and parallel-fibre rates onto each cell (Hz)."""
        cfg = self.cfg
        tau = cfg.goc_tau_m_ms * 1e-3
        mu0 = cfg.goc_v_rest_mv + cfg.goc_drive_mv + tau * (cfg.w_mf_goc_mv * mf_in + cfg.w_grc_goc_mv * pf_in)
        sigma = torch.sqrt(tau * (cfg.w_mf_goc_mv ** 2 * mf_in + cfg.w_grc_goc_mv ** 2 * pf_in) + 1e-6)
        return self._adapting("goc", mu0, sigma, tau, cfg.goc_ahp_mv * cfg.goc_tau_ahp_ms * 1e-3)

    def mli_rates(self, r_grc: torch.Tensor) -> torch.Tensor:
        """Interneuron rates ``(n, n_mli)`` driven by ``r_grc``, self-consistent with their AHP."""
        return self._mli(_project(self.grc_mli, r_grc))

    def _mli(self, pf_in: torch.Tensor) -> torch.Tensor:
        """Interneuron rates from the summed parallel-fibre rates onto each cell (Hz)."""
        cfg = self.cfg
        tau = cfg.mli_tau_m_ms * 1e-3
        mu0 = cfg.mli_v_rest_mv + cfg.mli_drive_mv + tau * cfg.w_pf_mli_mv * pf_in
        sigma = torch.sqrt(tau * cfg.w_pf_mli_mv ** 2 * pf_in + 1e-6)
        return self._adapting("mli", mu0, sigma, tau, cfg.mli_ahp_mv * cfg.mli_tau_ahp_ms * 1e-3)

    def pc_rates(self, r_grc: torch.Tensor, r_mli: torch.Tensor) -> torch.Tensor:
        """Purkinje rates ``(n, n_pc)`` under granule rates ``r_grc`` and interneuron rates ``r_mli``."""
        return self._pc(_project(self.mli_pc, r_mli), r_grc @ self.w, r_grc @ self.w_sq)

    def _pc(self, mli_in: torch.Tensor, pf_in: torch.Tensor, pf_sq: torch.Tensor) -> torch.Tensor:
        """Purkinje rates from the summed (weighted) interneuron rates and PF drives ``sum_j w_ji r_j``
        and ``sum_j w_ji^2 r_j`` onto each cell."""
        cfg = self.cfg
        g = cfg.g_mli_pc * cfg.tau_mli_pc_ms * 1e-3 * mli_in
        tau = cfg.pc_tau_m_ms * 1e-3 / (1.0 + g)
        v_inf = (cfg.pc_e_leak_mv + self.pc_drive + g * cfg.pc_e_gaba_mv) / (1.0 + g)
        j = cfg.j_pf_scaled_mv
        mu = v_inf + tau * j * pf_in
        sigma = torch.sqrt(tau * j ** 2 * pf_sq + 1e-6)
        return self._f("pc", mu, sigma, tau)

    def scores_from_pc(self, r_pc: torch.Tensor) -> torch.Tensor:
        n = r_pc.shape[0]
        return r_pc.reshape(n, self.conn.n_classes, -1).mean(-1)

    def granule_golgi(self, r_mf: torch.Tensor, r_goc_fixed: torch.Tensor | None = None):
        """Granule and Golgi rates: the fixed point of the loop, or (``r_goc_fixed`` given) the
        granule rates under those Golgi rates and the Golgi rates they drive."""
        drive = self.grc_input(r_mf)
        if r_goc_fixed is not None:
            r_grc = self.grc_rates(drive, r_goc_fixed)
            return r_grc, self.goc_rates(r_mf, r_grc)
        s, d = self.scfg, self.scfg.damping
        with torch.no_grad():
            warm = self._warm
            if warm is not None and warm.shape == (r_mf.shape[0], self.conn.n_goc) and warm.dtype == r_mf.dtype:
                r_goc = warm  # the previous call's solution (successive attack steps move the input little)
            else:
                r_goc = self.goc_rates(r_mf, torch.zeros(r_mf.shape[0], self.conn.n_grc, dtype=r_mf.dtype))
            # the damped iteration x <- x + d g(x), g(x) = G(x) - x, accelerated by Anderson mixing
            # of depth 1, row by row (Walker & Ni 2011, SIAM J Numer Anal 49:1715): ~5 iterations to
            # fp_tol_hz where the damped iteration alone takes ~15
            x_prev = g_prev = None
            for _ in range(s.fp_iters):
                g = self.goc_rates(r_mf, self.grc_rates(drive, r_goc)) - r_goc
                if not g.numel() or bool(d * g.abs().max() < s.fp_tol_hz):
                    r_goc = r_goc + d * g
                    break
                new = r_goc + d * g
                if g_prev is not None:
                    dg, dx = g - g_prev, r_goc - x_prev
                    den = (dg * dg).sum(1, keepdim=True)
                    gamma = torch.where(den > 0, (dg * g).sum(1, keepdim=True) / den.clamp_min(1e-300), 0.0)
                    new = new - gamma * (dx + d * dg)
                x_prev, g_prev = r_goc, g
                r_goc = new.clamp_min(0.0)
        r_goc = r_goc.detach()
        self._warm = r_goc
        needs_grad = torch.is_grad_enabled() and (r_mf.requires_grad or any(p.requires_grad for p in self.params.values()))
        for _ in range(s.grad_iters if needs_grad else 0):  # without a gradient to carry they would only move below fp_tol_hz
            r_grc = self.grc_rates(drive, r_goc)
            r_goc = (1 - d) * r_goc + d * self.goc_rates(r_mf, r_grc)
        r_grc = self.grc_rates(drive, r_goc)
        return r_grc, r_goc

    def rates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every population's rate (Hz) and the class scores, for inputs ``x`` in [0, 1]."""
        r_mf = self.mf_rates(x)
        r_grc, r_goc = self.granule_golgi(r_mf)
        r_mli = self.mli_rates(r_grc)
        r_pc = self.pc_rates(r_grc, r_mli)
        return {"mf": r_mf, "grc": r_grc, "goc": r_goc, "mli": r_mli, "pc": r_pc, "scores": self.scores_from_pc(r_pc)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x.reshape(x.shape[0], -1)
        logits = self.rates(x_in)["scores"] / self.scfg.temperature_hz
        return logits.to(x.dtype if x.is_floating_point() else torch.float64)

    def param_dict(self) -> dict[str, list[float]]:
        return {pop: [float(v) for v in self.params[pop].detach()] for pop in POPS}


# ----------------------------------------------------------------------------- calibration
def spiking_rates(prediction, cfg) -> dict[str, np.ndarray]:
    """Rates (Hz) per cell from an engine :class:`~models.spiking.engine.Prediction`: granule,
    Golgi and interneuron rates over the whole window, Purkinje rates over the readout period."""
    window_s = cfg.window_ms * 1e-3
    readout_s = (cfg.window_ms - cfg.readout_start_ms) * 1e-3
    return {"grc": prediction.counts["grc"] / window_s, "goc": prediction.counts["goc"] / window_s,
            "mli": prediction.counts["mli"] / window_s, "pc": prediction.counts["pc"] / readout_s,
            "scores": prediction.scores}


def _fit(fn, params: torch.Tensor, target: torch.Tensor, steps: int) -> float:
    """Least squares of ``fn(params)`` against ``target`` (Adam, then a few L-BFGS steps)."""
    params.requires_grad_(True)
    scale = target.pow(2).mean().clamp_min(1.0)
    opt = torch.optim.Adam([params], lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss = (fn(params) - target).pow(2).mean() / scale
        if not torch.isfinite(loss):
            break
        loss.backward()
        opt.step()
    lbfgs = torch.optim.LBFGS([params], max_iter=40, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = (fn(params) - target).pow(2).mean() / scale
        loss.backward()
        return loss

    if steps:
        lbfgs.step(closure)
    params.requires_grad_(False)
    with torch.no_grad():
        return float(((fn(params) - target).pow(2).mean()).sqrt())


def _granule_subset(model: CerebellumSurrogate, r_mf: torch.Tensor, r_goc: torch.Tensor, cells: np.ndarray):
    """The summed inputs of granule cells ``cells`` (sorted) alone: MF drive and squared drive
    under ``r_mf``, summed Golgi rates ``r_goc`` (each ``(n, len(cells))``), from sub-matrices."""
    conn = model.conn

    def rows(pre, post, n_pre, values=None):
        keep = np.isin(post, cells)
        return connection_matrix(pre[keep], np.searchsorted(cells, post[keep]), n_pre, len(cells),
                                 None if values is None else values[keep])

    w = np.asarray(conn.mf_grc_w_mv, dtype=np.float64)
    return (_project(rows(conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, w), r_mf),
            _project(rows(conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, w ** 2), r_mf),
            _project(rows(conn.goc_grc_i, conn.goc_grc_j, conn.n_goc), r_goc))


def calibrate(model: CerebellumSurrogate, x: np.ndarray, spiking: dict[str, np.ndarray], *, max_cells: int = 500,
              seed: int = 0) -> dict[str, float]:
    """Fit each population's free parameters to the spiking rates on inputs ``x``.

    Each population is fitted with its inputs taken from the spiking network (granule cells
    under the measured Golgi rates; Golgi cells and interneurons under the measured granule
    rates, each self-consistent with its own AHP; Purkinje cells under the measured granule and
    interneuron rates), so that the errors of one population do not leak into the fit of the
    next; granule cells and interneurons are each fitted on ``max_cells`` of them (a fixed random
    subset: the four parameters are shared by the whole population). ``spiking`` holds rates ``(n, n_cells)``
    per population (:func:`spiking_rates`). Returns the RMS error (Hz) per population after the fit.
    """
    steps = model.scfg.fit_steps
    xt = torch.as_tensor(x, dtype=torch.float64)
    s = {pop: torch.as_tensor(spiking[pop], dtype=torch.float64) for pop in POPS}
    # the parameters are shared by all cells of a population: a fixed random subset of granule
    # cells (and of interneurons) is enough for the fit and keeps it short
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(model.conn.n_grc, min(max_cells, model.conn.n_grc), replace=False))
    mli_cells = np.sort(rng.choice(model.conn.n_mli, min(max_cells, model.conn.n_mli), replace=False))
    with torch.no_grad():
        r_mf = model.mf_rates(xt)
        grc_in = _granule_subset(model, r_mf, s["goc"], cells)
        goc_in = _project(model.mf_goc, r_mf), _project(model.grc_goc, s["grc"])
        mli_in = _project(model.grc_mli, s["grc"])[:, torch.as_tensor(mli_cells)]
        pc_in = _project(model.mli_pc, s["mli"]), s["grc"] @ model.w, s["grc"] @ model.w_sq
    fits = {
        "grc": (lambda: model._grc(*grc_in), s["grc"][:, torch.as_tensor(cells)]),
        "goc": (lambda: model._goc(*goc_in), s["goc"]),
        "mli": (lambda: model._mli(mli_in), s["mli"][:, torch.as_tensor(mli_cells)]),
        "pc": (lambda: model._pc(*pc_in), s["pc"]),
    }
    rms = {}
    for pop, (fn, target) in fits.items():
        rms[pop] = _fit(lambda _p, fn=fn: fn(), model.params[pop], target, steps)
    return rms


def fidelity(model: CerebellumSurrogate, x: np.ndarray, spiking: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """How well the surrogate matches the spiking network on inputs ``x``.

    Returns ``(metrics, arrays)``: metrics ``fidelity_r_<pop>`` (Pearson correlation over all
    inputs and cells, for each of ``POPS``), ``fidelity_readout_r2`` (R^2 of the class scores),
    ``fidelity_agreement`` (fraction of inputs with the same predicted class); arrays
    ``spiking_<pop>`` and ``surrogate_<pop>`` rates and both score tables.
    """
    with torch.no_grad():
        sur = {k: v.numpy() for k, v in model.rates(torch.as_tensor(x, dtype=torch.float64)).items()}
    metrics, arrays = {}, {}
    for pop in POPS:
        a, b = np.asarray(spiking[pop], dtype=np.float64), sur[pop]
        metrics[f"fidelity_r_{pop}"] = _pearson(a.ravel(), b.ravel())
        arrays[f"spiking_{pop}"], arrays[f"surrogate_{pop}"] = a.astype(np.float32), b.astype(np.float32)
    s, t = np.asarray(spiking["scores"], dtype=np.float64), sur["scores"]
    ss_res = float(((s - t) ** 2).sum())
    ss_tot = float(((s - s.mean()) ** 2).sum())
    metrics["fidelity_readout_r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    metrics["fidelity_agreement"] = float((s.argmax(1) == t.argmax(1)).mean())
    metrics["fidelity_n"] = int(len(x))
    arrays["spiking_scores"], arrays["surrogate_scores"] = s.astype(np.float32), t.astype(np.float32)
    return metrics, arrays


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# ----------------------------------------------------------------------------- files
def save_surrogate(path, model: CerebellumSurrogate, source_checkpoint: str) -> Path:
    """Write the surrogate's own state (settings and fitted parameters; the network itself is the
    spiking checkpoint it names) as a pickle-free ``.npz``."""
    from core.runs import save_npz

    return save_npz(path, format=np.array(SURROGATE_FORMAT),
                    settings=np.array(json.dumps(asdict(model.scfg), sort_keys=True)),
                    params=np.array(json.dumps(model.param_dict(), sort_keys=True)),
                    source_checkpoint=np.array(str(source_checkpoint)))


def load_surrogate(path, checkpoint_path) -> CerebellumSurrogate:
    """Rebuild a calibrated surrogate from its ``.npz`` and the spiking checkpoint.

    A file of another format, an earlier surrogate version included (its populations and
    equations differ), raises :class:`CheckpointError`.
    """
    from core.runs import load_npz
    from models.spiking.train import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"surrogate file not found: {path}")
    try:
        data = load_npz(path)
        fmt = str(data.get("format", ""))
        if fmt in OLD_FORMATS:
            raise CheckpointError(f"{path} was written by an earlier version of the surrogate (format {fmt}); "
                                  f"recalibrate it with this version (format {SURROGATE_FORMAT})")
        if fmt != SURROGATE_FORMAT:
            raise CheckpointError(f"{path} is not a surrogate file (format {data.get('format')!r})")
        scfg = SurrogateConfig(**json.loads(str(data["settings"])))
        params = json.loads(str(data["params"]))
        if set(params) != set(POPS) or any(len(v) != 4 for v in params.values()):
            raise ValueError("parameters must hold 4 numbers for each of " + ", ".join(POPS))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable surrogate file ({exc})") from None
    cfg, conn, weights, _, _ = load_checkpoint(checkpoint_path)
    return CerebellumSurrogate(cfg, conn, weights, scfg, params)
