"""Rate-coded surrogate of a trained spiking cerebellum: expected firing rates, differentiable.

Built from a spiking checkpoint with the same connectivity, PF-PC weights and neuron
parameters, the surrogate maps input features to the expected firing rate of every cell,
population by population::

    mossy fibres   r_mf = r_min + x (r_max - r_min)                               (exact)
    granule cells  r_grc = F_grc(mu_grc, sigma_grc), with Golgi inhibition g = w_goc tau_inh sum r_goc
    Golgi cells    r_goc = F_goc(mu_goc, sigma_goc), driven by mossy and parallel fibres
    Purkinje cells r_pc  = F_pc(mu_pc, sigma_pc),   PF input j_pf (w - w_mli) per granule spike
    scores         mean Purkinje rate per class (Hz), as the spiking readout

where ``mu`` and ``sigma`` are the mean and standard deviation of the free membrane potential
under Poisson input (Campbell's theorem for delta synapses: ``mu = E_L + tau sum_j J_j r_j``,
``sigma^2 = tau / 2 sum_j J_j^2 r_j``) and ``F`` is the leaky integrate-and-fire rate of the
diffusion approximation (the Siegert formula; Brunel 2000, eq. 21)::

    1 / F = tau sqrt(pi) int_{(V_r - mu) / sigma}^{(theta - mu) / sigma} erfcx(-u) du

(``erfcx(-u) = exp(u^2) (1 + erf(u))``), evaluated by Gauss-Legendre quadrature, so that its
derivative is the surrogate gradient. The diffusion approximation is only approximate for the
granule cell's few large EPSPs, and the spiking network is simulated for a finite window from
rest, so each population has three free parameters, fitted by least squares to the spiking
network's rates on calibration inputs (:func:`calibrate`)::

    F_pop(mu, sigma) = gain_out * Siegert(theta + gain_mu (mu - theta) + shift_mv, gain_sigma sigma)

The Golgi-granule loop is solved as a fixed point (damped iteration without gradient to
convergence, then a few iterations with gradient from the converged point: the gradient of a
contractive fixed point, truncated). The iteration starts from the previous call's solution when
the batch has the same size (successive attack steps change the input little); results then
depend on the call history only below the tolerance ``fp_tol_hz``. ``forward`` returns logits ``scores / temperature_hz``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import CheckpointError

__all__ = ["SurrogateConfig", "CerebellumSurrogate", "siegert_rate", "calibrate", "fidelity", "save_surrogate",
           "load_surrogate", "SURROGATE_FORMAT", "POPS"]

SURROGATE_FORMAT = "cerebellum-surrogate-v1"
POPS = ("grc", "goc", "pc")
_GL_NODES = 48


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
    """log(tau nu) on a grid of (b, log c): 801 x 401 points, built once per process (~0.3 s)."""
    global _TABLE
    if _TABLE is None:
        b = torch.linspace(B_MIN, U_MAX, 801, dtype=torch.float64)
        logc = torch.linspace(*LOGC_RANGE, 401, dtype=torch.float64)
        bb, cc = torch.meshgrid(b, logc.exp(), indexing="ij")
        _TABLE = torch.log(siegert_exact(bb.reshape(-1), cc.reshape(-1))).reshape(1, 1, 801, 401)
    return _TABLE


def siegert_rate(mu: torch.Tensor, sigma: torch.Tensor, tau_s: float, v_th: float, v_reset: float) -> torch.Tensor:
    """Firing rate (Hz) of a LIF neuron (no refractory period) whose free membrane potential has
    mean ``mu`` and standard deviation ``sigma`` (mV), with membrane time constant ``tau_s`` (s),
    threshold ``v_th`` and reset ``v_reset`` (mV): the Siegert formula.

    Evaluated by bilinear interpolation of ``log(tau nu)`` on a precomputed grid of
    ``b = (v_th - mu) / sigma`` and ``log c``, ``c = (v_th - v_reset) / sigma`` (relative error below
    1e-3 inside the grid; tested against :func:`siegert_exact`), which is ~50x cheaper than the
    quadrature and differentiable almost everywhere. Beyond the grid: silent for ``b > 20``; for
    ``b < -20`` (drive far above threshold) the noise-free LIF rate ``1 / (tau ln((c - b) / -b))``.
    """
    import torch.nn.functional as F

    sigma = sigma.clamp_min(1e-6)
    b = (v_th - mu) / sigma
    c = (v_th - v_reset) / sigma
    logc = torch.log(c).clamp(*LOGC_RANGE)
    gx = 2 * (logc - LOGC_RANGE[0]) / (LOGC_RANGE[1] - LOGC_RANGE[0]) - 1
    gy = 2 * (b.clamp(B_MIN, U_MAX) - B_MIN) / (U_MAX - B_MIN) - 1
    grid = torch.stack([gx, gy], -1).reshape(1, 1, -1, 2)
    table = _table().to(mu.dtype)
    log_tnu = F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True).reshape(mu.shape)
    rate = torch.exp(log_tnu) / tau_s
    b_det = b.clamp(max=B_MIN)
    det = 1.0 / (tau_s * torch.log((c - b_det) / -b_det))
    rate = torch.where(b < B_MIN, det, rate)
    return torch.where(b > U_MAX, torch.zeros_like(rate), rate)


class CerebellumSurrogate(nn.Module):
    """Expected rates of a trained spiking cerebellum (see the module docstring).

    ``forward(x)`` returns logits ``(n, n_classes)``; :meth:`rates` returns every population.
    """

    def __init__(self, cfg, conn, weights: np.ndarray, scfg: SurrogateConfig | None = None,
                 params: dict | None = None):
        super().__init__()
        self.cfg, self.conn = cfg, conn
        self.scfg = scfg or SurrogateConfig()
        f64 = torch.float64
        self.register_buffer("mf_idx", torch.as_tensor(conn.mf_grc_i.reshape(conn.n_grc, -1).astype(np.int64))
                             if _grc_major(conn) else _grouped(conn.mf_grc_i, conn.mf_grc_j, conn.n_grc))
        self.register_buffer("mf_goc", _count_matrix(conn.mf_goc_i, conn.mf_goc_j, conn.n_mf, conn.n_goc))
        self.register_buffer("grc_goc", _count_matrix(conn.grc_goc_i, conn.grc_goc_j, conn.n_grc, conn.n_goc))
        self.register_buffer("goc_grc", _count_matrix(conn.goc_grc_i, conn.goc_grc_j, conn.n_goc, conn.n_grc))
        w_eff = np.asarray(weights, dtype=np.float64) - cfg.w_mli
        self.register_buffer("w_eff", torch.as_tensor(w_eff, dtype=f64))
        p = {pop: (1.0, 0.0, 1.0, 1.0) for pop in POPS}  # gain_mu, shift_mv, gain_sigma, gain_out
        if params:
            p.update({k: tuple(float(v) for v in val) for k, val in params.items()})
        self._warm: torch.Tensor | None = None
        self.params = nn.ParameterDict({pop: nn.Parameter(torch.tensor(p[pop], dtype=f64), requires_grad=False)
                                        for pop in POPS})

    # -- populations
    def _f(self, pop: str, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        g_mu, shift, g_sig, g_out = self.params[pop]
        tau, th, vr = {
            "grc": (cfg.grc_tau_m_ms, cfg.grc_v_thresh_mv, cfg.grc_v_reset_mv),
            "goc": (cfg.goc_tau_m_ms, cfg.goc_v_thresh_mv, cfg.goc_v_reset_mv),
            "pc": (cfg.pc_tau_m_ms, cfg.pc_v_thresh_mv, cfg.pc_v_reset_mv),
        }[pop]
        mu_eff = th + g_mu * (mu - th) + shift
        return g_out.abs() * siegert_rate(mu_eff, g_sig.abs() * sigma, tau * 1e-3, th, vr)

    def mf_rates(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return cfg.mf_rate_min_hz + x.to(torch.float64) * (cfg.mf_rate_max_hz - cfg.mf_rate_min_hz)

    def grc_input(self, r_mf: torch.Tensor) -> torch.Tensor:
        """Summed MF rate onto each granule cell ``(n, n_grc)``."""
        return r_mf[:, self.mf_idx].sum(-1)

    def grc_rates(self, mf_sum: torch.Tensor, r_goc: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        tau = cfg.grc_tau_m_ms * 1e-3
        g_inh = cfg.w_goc_grc_mv * cfg.tau_goc_grc_ms * 1e-3 * (r_goc @ self.goc_grc)
        mu = cfg.grc_v_rest_mv - cfg.grc_tonic_inh_mv - g_inh + tau * cfg.w_mf_grc_mv * mf_sum
        sigma = torch.sqrt(tau / 2 * cfg.w_mf_grc_mv ** 2 * mf_sum + 1e-6)  # (+1e-6: a finite gradient at zero input)
        return self._f("grc", mu, sigma)

    def goc_rates(self, r_mf: torch.Tensor, r_grc: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        tau = cfg.goc_tau_m_ms * 1e-3
        mf_in, pf_in = r_mf @ self.mf_goc, r_grc @ self.grc_goc
        mu = cfg.goc_v_rest_mv + cfg.goc_drive_mv + tau * (cfg.w_mf_goc_mv * mf_in + cfg.w_grc_goc_mv * pf_in)
        sigma = torch.sqrt(tau / 2 * (cfg.w_mf_goc_mv ** 2 * mf_in + cfg.w_grc_goc_mv ** 2 * pf_in) + 1e-6)
        return self._f("goc", mu, sigma)

    def pc_rates(self, r_grc: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        tau = cfg.pc_tau_m_ms * 1e-3
        j = cfg.j_pf_scaled_mv
        mu = cfg.pc_v_rest_mv + cfg.pc_drive_mv + tau * j * (r_grc @ self.w_eff)
        sigma = torch.sqrt(tau / 2 * j ** 2 * (r_grc @ self.w_eff ** 2) + 1e-6)
        return self._f("pc", mu, sigma)

    def scores_from_pc(self, r_pc: torch.Tensor) -> torch.Tensor:
        n = r_pc.shape[0]
        return r_pc.reshape(n, self.conn.n_classes, -1).mean(-1)

    def granule_golgi(self, r_mf: torch.Tensor, r_goc_fixed: torch.Tensor | None = None):
        """Granule and Golgi rates: the fixed point of the loop, or (``r_goc_fixed`` given) the
        granule rates under those Golgi rates and the Golgi rates they drive."""
        mf_sum = self.grc_input(r_mf)
        if r_goc_fixed is not None:
            r_grc = self.grc_rates(mf_sum, r_goc_fixed)
            return r_grc, self.goc_rates(r_mf, r_grc)
        s, d = self.scfg, self.scfg.damping
        with torch.no_grad():
            warm = self._warm
            if warm is not None and warm.shape == (r_mf.shape[0], self.conn.n_goc) and warm.dtype == r_mf.dtype:
                r_goc = warm  # the previous call's solution (successive attack steps move the input little)
            else:
                r_goc = self.goc_rates(r_mf, torch.zeros(r_mf.shape[0], self.conn.n_grc, dtype=r_mf.dtype))
            for _ in range(s.fp_iters):
                r_grc = self.grc_rates(mf_sum, r_goc)
                new = (1 - d) * r_goc + d * self.goc_rates(r_mf, r_grc)
                done = bool((new - r_goc).abs().max() < s.fp_tol_hz) if new.numel() else True
                r_goc = new
                if done:
                    break
        r_goc = r_goc.detach()
        self._warm = r_goc
        for _ in range(s.grad_iters):
            r_grc = self.grc_rates(mf_sum, r_goc)
            r_goc = (1 - d) * r_goc + d * self.goc_rates(r_mf, r_grc)
        r_grc = self.grc_rates(mf_sum, r_goc)
        return r_grc, r_goc

    def rates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every population's rate (Hz) and the class scores, for inputs ``x`` in [0, 1]."""
        r_mf = self.mf_rates(x)
        r_grc, r_goc = self.granule_golgi(r_mf)
        r_pc = self.pc_rates(r_grc)
        return {"mf": r_mf, "grc": r_grc, "goc": r_goc, "pc": r_pc, "scores": self.scores_from_pc(r_pc)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x.reshape(x.shape[0], -1)
        logits = self.rates(x_in)["scores"] / self.scfg.temperature_hz
        return logits.to(x.dtype if x.is_floating_point() else torch.float64)

    def param_dict(self) -> dict[str, list[float]]:
        return {pop: [float(v) for v in self.params[pop].detach()] for pop in POPS}


def _grc_major(conn) -> bool:
    k = len(conn.mf_grc_j) // max(conn.n_grc, 1)
    return k * conn.n_grc == len(conn.mf_grc_j) and np.array_equal(conn.mf_grc_j, np.repeat(np.arange(conn.n_grc), k))


def _grouped(i: np.ndarray, j: np.ndarray, n_post: int) -> torch.Tensor:
    order = np.argsort(j, kind="stable")
    k = len(j) // n_post
    return torch.as_tensor(i[order].reshape(n_post, k).astype(np.int64))


def _count_matrix(i: np.ndarray, j: np.ndarray, n_pre: int, n_post: int) -> torch.Tensor:
    m = np.zeros((n_pre, n_post))
    np.add.at(m, (np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)), 1.0)
    return torch.as_tensor(m, dtype=torch.float64)


# ----------------------------------------------------------------------------- calibration
def spiking_rates(prediction, cfg) -> dict[str, np.ndarray]:
    """Rates (Hz) per cell from an engine :class:`~models.spiking.engine.Prediction`: granule and
    Golgi cells over the whole window, Purkinje cells over the readout period."""
    window_s = cfg.window_ms * 1e-3
    readout_s = (cfg.window_ms - cfg.readout_start_ms) * 1e-3
    return {"grc": prediction.counts["grc"] / window_s, "goc": prediction.counts["goc"] / window_s,
            "pc": prediction.counts["pc"] / readout_s, "scores": prediction.scores}


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


def _grc_subset(model, r_mf, idx, cells, r_goc):
    cfg = model.cfg
    tau = cfg.grc_tau_m_ms * 1e-3
    mf_sum = r_mf[:, idx].sum(-1)
    g_inh = cfg.w_goc_grc_mv * cfg.tau_goc_grc_ms * 1e-3 * (r_goc @ model.goc_grc[:, cells])
    mu = cfg.grc_v_rest_mv - cfg.grc_tonic_inh_mv - g_inh + tau * cfg.w_mf_grc_mv * mf_sum
    sigma = torch.sqrt(tau / 2 * cfg.w_mf_grc_mv ** 2 * mf_sum + 1e-6)  # (+1e-6: a finite gradient at zero input)
    return model._f("grc", mu, sigma)


def calibrate(model: CerebellumSurrogate, x: np.ndarray, spiking: dict[str, np.ndarray], *, max_cells: int = 500,
              seed: int = 0) -> dict[str, float]:
    """Fit each population's free parameters to the spiking rates on inputs ``x``.

    Each population is fitted with its inputs taken from the spiking network (granule cells
    under the measured Golgi rates; Golgi cells under the measured granule rates; Purkinje cells
    under the measured granule rates), so that the errors of one population do not leak into
    the fit of the next; granule cells are fitted on ``max_cells`` of them. Returns the RMS error
    (Hz) per population after the fit.
    """
    steps = model.scfg.fit_steps
    xt = torch.as_tensor(x, dtype=torch.float64)
    with torch.no_grad():
        r_mf = model.mf_rates(xt)
        mf_sum = model.grc_input(r_mf)
    s_grc = torch.as_tensor(spiking["grc"], dtype=torch.float64)
    s_goc = torch.as_tensor(spiking["goc"], dtype=torch.float64)
    s_pc = torch.as_tensor(spiking["pc"], dtype=torch.float64)
    # the parameters are shared by all cells of a population: a fixed random subset of granule
    # cells is enough for the fit and keeps it to seconds
    rng = np.random.default_rng(seed)
    cells = torch.as_tensor(np.sort(rng.choice(model.conn.n_grc, min(max_cells, model.conn.n_grc), replace=False)))
    sub = model.mf_idx[cells]
    rms = {}
    fits = {
        "grc": (lambda: _grc_subset(model, r_mf, sub, cells, s_goc), s_grc[:, cells]),
        "goc": (lambda: model.goc_rates(r_mf, s_grc), s_goc),
        "pc": (lambda: model.pc_rates(s_grc), s_pc),
    }
    for pop, (fn, target) in fits.items():
        p = model.params[pop]
        rms[pop] = _fit(lambda _p, fn=fn: fn(), p, target, steps)
    return rms


def fidelity(model: CerebellumSurrogate, x: np.ndarray, spiking: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """How well the surrogate matches the spiking network on inputs ``x``.

    Returns ``(metrics, arrays)``: metrics ``fidelity_r_<pop>`` (Pearson correlation over all
    inputs and cells), ``fidelity_readout_r2`` (R^2 of the class scores), ``fidelity_agreement``
    (fraction of inputs with the same predicted class); arrays ``spiking_<pop>`` and
    ``surrogate_<pop>`` rates and both score tables.
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
    """Rebuild a calibrated surrogate from its ``.npz`` and the spiking checkpoint."""
    from core.runs import load_npz
    from models.spiking.train import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"surrogate file not found: {path}")
    try:
        data = load_npz(path)
        if str(data.get("format", "")) != SURROGATE_FORMAT:
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
