"""The spiking cerebellum in Brian2: wiring, equations and the two network builders.

Populations (per copy of the network), from input to output
-----------------------------------------------------------
MF   mossy fibres, one per input feature, Poisson at ``SpikingConfig.mf_rates_hz(x)``.
GrC  granule cells: LIF whose inhibition is a conductance (it shunts towards ``E_GABA`` and can
     never push the membrane below it), tonic plus phasic Golgi inhibition; exactly K mossy
     fibres each, EPSP jumps ``w_ij`` (log-normal across synapses, scaled per network so that the
     evoked coding level is ``grc_coding_level``)::

         tau_m dv/dt = (E_L - v) + (g_tonic + g_goc) (E_GABA - v)
         dg_goc/dt   = -g_goc / tau_goc_grc              (Golgi spike: g_goc += g_goc_grc)

GoC  Golgi cells: adaptive LIF pacemakers (slow AHP), excited by mossy fibres (feed-forward) and
     parallel fibres (feedback)::

         tau_m dv/dt = (V_rest + drive - v - a),   da/dt = -a / tau_ahp   (spike: a += ahp)

MLI  molecular-layer interneurons (stellate/basket): the same pacemaker model, excited by
     ``pf_per_mli`` random parallel fibres, each inhibiting ``mli_to_pc`` random Purkinje cells
     (feed-forward inhibition: it makes the readout signed).
PC   Purkinje cells, ``pc_per_class`` per class: LIF pacemakers (heterogeneous intrinsic drive),
     PF EPSPs ``j_pf w`` (w the plastic weight in [0, w_max]) and MLI conductance inhibition
     (MLI spike: ``g_mli += g_mli_pc u``, u the plastic MLI-PC weight in [0, w_inh_max], initially 1)::

         tau_m dv/dt = (E_L + drive_i - v) + g_mli (E_GABA - v),   dg_mli/dt = -g_mli / tau_mli_pc

IO   inferior olive (training only), one cell per PC, Poisson at
     ``clip(cf_base + cf_gain (r - r_target), 0, cf_max)``, ``r`` the PC's rate trace (tau 20 ms),
     ``r_target`` high for the labelled class and low otherwise: the olive fires more when the
     Purkinje cell fires too much.

Plasticity (training only), on the PF-PC synapse, with ``x`` the presynaptic PF eligibility
trace (``dx/dt = -x / tau_elig``, ``x += 1`` per GrC spike)::

    ltd='cf':   PF spike:  w += a_ltp                               CF event: w -= a_ltd x
    ltd='none': PF spike:  w += a_ltp (1 - min(1, c))               CF event: c += 1 (no change of w)
                between events w decays to 0 with tau_decay        (dc/dt = -c / tau_veto)

clipped to [0, w_max], with ``a_ltd = a_ltp / (cf_base tau_elig)`` so that LTP and LTD balance at
the baseline climbing-fibre rate (a spiking delta rule). In the control no climbing fibre ever
depresses a PF-PC synapse: the climbing fibre only vetoes LTP (see :class:`~models.spiking.params.SpikingConfig`).

In both settings the MLI-PC weight ``u`` learns with the opposite sign, with ``y`` the MLI's trace
(``dy/dt = -y / tau_elig``, ``y += 1`` per MLI spike)::

    MLI spike:  u -= a_inh                                      CF event: u += a_rp y

clipped to [0, w_inh_max], ``a_rp = a_inh / (cf_base tau_elig)``: inhibition grows on a Purkinje
cell whose olive fires above baseline (the cell fires above its target; rebound potentiation,
Kano et al. 1992) and fades where it fires below. This is the learned subtractive term that a
readout with non-negative PF-PC weights needs (``cereb diagnose learning`` measures both ceilings).

Start of a presentation and readout
-----------------------------------
Every presentation (training and evaluation) starts from the same state: the end of a
``warmup_ms`` simulation under background mossy-fibre input (every fibre at ``mf_rate_min_hz``),
started from rest with random pacemaker phases (:func:`steady_state`): the network's steady
state, so no onset transient is counted. The score of class c is the mean spike count of its
Purkinje cells from ``readout_start_ms`` to the end of the window, in Hz: *higher Purkinje firing
= more evidence for the class*; the prediction is the arg-max (ties go to the lowest index).
Deep cerebellar nuclei are not modelled as the readout: with 30 tonically firing Purkinje cells
per class the scores are well behaved (digits default, seed 0, frozen noise: ties between the two
best classes on 0.8 % of test inputs, no input that silences a class, the lowest class score
29.6 Hz; 2-core AMD, December 2026), so a nuclear stage would add a fixed sign inversion and
nothing the readout needs.

Two builders share the equations: :func:`build_training_net` (one copy, Brian2 ``Synapses``
everywhere, runs as ``cpp_standalone``) and :func:`build_inference_net` (many copies; the
all-to-all MF-GrC, PF-PC/MLI and MLI-PC projections are compiled functions over one shared weight
table instead of replicated synapses, and are tested against ``Synapses``). Granule and Purkinje
membranes advance by the exponential-Euler step of :mod:`models.spiking.integrate`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from models.spiking import integrate
from models.spiking.params import SpikingConfig

log = logging.getLogger(__name__)

__all__ = ["Connectivity", "make_connectivity", "initial_weights", "pc_class", "InferenceNet", "build_inference_net",
           "set_inference_weights", "set_mf_grc_weights", "run_inference_chunks", "TrainingNet", "build_training_net",
           "epoch_namespace", "simulate_with_olive", "set_mli_pc_weights", "STATE_VARS", "initial_state",
           "neuron_group", "step_constants"]

# the state variables of each population that a presentation starts from
STATE_VARS = {"grc": ("v", "g_goc"), "goc": ("v", "a"), "mli": ("v", "a"), "pc": ("v", "g_mli")}


# ============================================================================ wiring
@dataclass(frozen=True)
class Connectivity:
    """The fixed random structure of one copy of the network.

    Index arrays (presynaptic ``*_i``, postsynaptic ``*_j``), the MF-GrC EPSP of every synapse
    ``mf_grc_w_mv`` (after calibration), the intrinsic drive of every Purkinje cell
    ``pc_drive_mv``, and the MLI-PC weight of every inhibitory synapse ``mli_pc_w`` (a multiplier
    of ``g_mli_pc``: 1 before training, learned with the PF-PC weights).
    """

    n_mf: int
    n_grc: int
    n_goc: int
    n_mli: int
    n_pc: int
    n_classes: int
    mf_grc_i: np.ndarray
    mf_grc_j: np.ndarray
    mf_grc_w_mv: np.ndarray
    mf_goc_i: np.ndarray
    mf_goc_j: np.ndarray
    grc_goc_i: np.ndarray
    grc_goc_j: np.ndarray
    goc_grc_i: np.ndarray
    goc_grc_j: np.ndarray
    grc_mli_i: np.ndarray
    grc_mli_j: np.ndarray
    mli_pc_i: np.ndarray
    mli_pc_j: np.ndarray
    pc_drive_mv: np.ndarray
    mli_pc_w: np.ndarray

    ARRAYS = ("mf_grc_i", "mf_grc_j", "mf_goc_i", "mf_goc_j", "grc_goc_i", "grc_goc_j", "goc_grc_i", "goc_grc_j",
              "grc_mli_i", "grc_mli_j", "mli_pc_i", "mli_pc_j")
    FLOATS = ("mf_grc_w_mv", "pc_drive_mv", "mli_pc_w")
    SIZES = ("n_mf", "n_grc", "n_goc", "n_mli", "n_pc", "n_classes")

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {f"conn_{name}": np.asarray(getattr(self, name), dtype=np.int32) for name in self.ARRAYS}
        out.update({f"conn_{name}": np.asarray(getattr(self, name), dtype=np.float64) for name in self.FLOATS})
        out.update({f"conn_{name}": np.int64(getattr(self, name)) for name in self.SIZES})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> "Connectivity":
        kw = {name: np.asarray(arrays[f"conn_{name}"], dtype=np.int32) for name in cls.ARRAYS}
        kw.update({name: np.asarray(arrays[f"conn_{name}"], dtype=np.float64) for name in cls.FLOATS})
        kw.update({name: int(arrays[f"conn_{name}"]) for name in cls.SIZES})
        return cls(**kw)

    def fan_in_grc(self) -> np.ndarray:
        """Number of MF synapses on each granule cell, shape ``(n_grc,)``."""
        return np.bincount(self.mf_grc_j, minlength=self.n_grc)

    def with_mf_grc_scale(self, scale: float) -> "Connectivity":
        """The same network with every MF-GrC EPSP multiplied by ``scale`` (the calibration knob)."""
        from dataclasses import replace

        return replace(self, mf_grc_w_mv=self.mf_grc_w_mv * float(scale))

    def with_mli_pc_weights(self, w: np.ndarray) -> "Connectivity":
        """The same network with the MLI-PC weights ``w`` (``mli_pc_i`` order)."""
        from dataclasses import replace

        w = np.asarray(w, dtype=np.float64)
        if w.shape != self.mli_pc_i.shape:
            raise ValueError(f"MLI-PC weights must have shape {self.mli_pc_i.shape}, got {w.shape}")
        return replace(self, mli_pc_w=w)


def _choose_k(rng: np.random.Generator, n_pre: int, n_post: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each postsynaptic cell gets exactly ``k`` distinct presynaptic cells (post-major order).

    No ``(n_post, n_pre)`` table is ever held: rows are drawn in blocks of at most ~4M keys, or
    one ``choice`` per row when the presynaptic population is large.
    """
    if k > n_pre:
        raise ValueError(f"cannot choose {k} distinct inputs out of {n_pre}")
    if k == n_pre:
        pre = np.tile(np.arange(n_pre), n_post)
    elif n_pre <= 4096:
        block = max(1, (1 << 22) // n_pre)
        parts = []
        for s in range(0, n_post, block):
            keys = rng.random((min(block, n_post - s), n_pre))
            parts.append(np.argpartition(keys, k - 1, axis=1)[:, :k].ravel())
        pre = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    else:
        pre = np.concatenate([rng.choice(n_pre, k, replace=False) for _ in range(n_post)]) if n_post else np.zeros(0)
    post = np.repeat(np.arange(n_post), k)
    return pre.astype(np.int32), post.astype(np.int32)


def make_connectivity(cfg: SpikingConfig, n_inputs: int, n_classes: int, seed: int) -> Connectivity:
    """Draw the fixed random structure of one network from ``seed`` (before calibration:
    MF-GrC EPSPs have mean ``w_mf_grc_mv``)."""
    from core.errors import ConfigError

    if cfg.k > n_inputs:
        raise ConfigError(f"model.k = {cfg.k} exceeds the number of mossy fibres (inputs) {n_inputs}")
    rng = np.random.default_rng([seed, 1])
    n_grc, n_goc, n_pc = cfg.width, cfg.n_goc, cfg.pc_per_class * n_classes
    n_mli = cfg.n_mli(n_pc)
    mf_grc = _choose_k(rng, n_inputs, n_grc, cfg.k)
    sigma = np.sqrt(np.log1p(cfg.w_mf_grc_cv ** 2))
    w_rel = rng.lognormal(-sigma ** 2 / 2, sigma, len(mf_grc[0])) if sigma > 0 else np.ones(len(mf_grc[0]))
    mf_goc = _choose_k(rng, n_inputs, n_goc, min(cfg.mf_per_goc, n_inputs))
    grc_goc = _choose_k(rng, n_grc, n_goc, min(cfg.pf_per_goc, n_grc))
    goc_grc = _choose_k(rng, n_goc, n_grc, min(cfg.goc_per_grc, n_goc)) if cfg.goc_per_grc else (np.zeros(0, np.int32),) * 2
    grc_mli = _choose_k(rng, n_grc, n_mli, min(cfg.pf_per_mli, n_grc))
    mli_pc = _choose_k(rng, n_mli, n_pc, min(cfg.mli_to_pc, n_mli))
    drive = cfg.pc_drive_mv + cfg.pc_drive_jitter_mv * (2 * rng.random(n_pc) - 1)
    return Connectivity(
        n_mf=n_inputs, n_grc=n_grc, n_goc=n_goc, n_mli=n_mli, n_pc=n_pc, n_classes=n_classes,
        mf_grc_i=mf_grc[0], mf_grc_j=mf_grc[1], mf_grc_w_mv=cfg.w_mf_grc_mv * w_rel,
        mf_goc_i=mf_goc[0], mf_goc_j=mf_goc[1], grc_goc_i=grc_goc[0], grc_goc_j=grc_goc[1],
        goc_grc_i=goc_grc[0], goc_grc_j=goc_grc[1], grc_mli_i=grc_mli[0], grc_mli_j=grc_mli[1],
        mli_pc_i=mli_pc[0], mli_pc_j=mli_pc[1], pc_drive_mv=drive, mli_pc_w=np.ones(len(mli_pc[0])),
    )


def initial_weights(cfg: SpikingConfig, conn: Connectivity, seed: int) -> np.ndarray:
    """Initial PF-PC weights, shape ``(n_grc, n_pc)``: ``w_init`` plus uniform jitter."""
    rng = np.random.default_rng([seed, 2])
    w = cfg.w_init + cfg.w_init_jitter * (2 * rng.random((conn.n_grc, conn.n_pc)) - 1)
    return np.clip(w, 0.0, cfg.w_max)


def pc_class(conn: Connectivity) -> np.ndarray:
    """Class of each Purkinje cell, shape ``(n_pc,)``: cells ``c*m ... c*m+m-1`` code class c."""
    return np.repeat(np.arange(conn.n_classes), conn.n_pc // conn.n_classes)


def initial_state(cfg: SpikingConfig, conn: Connectivity, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Where the warm-up starts: granule cells at rest with no conductance, and the pacemakers at
    uniformly random phases, so that they do not start (and stay) in phase. Values in volt
    (dimensionless for conductances).

    For the adaptive pacemakers (GoC, MLI) the phase lives in the slow AHP variable: between
    spikes ``a`` decays from ``a_th + ahp`` to ``a_th`` (``a_th`` the adaptation at which the cell
    reaches threshold), so a uniform phase is a log-uniform ``a`` in that range, with the membrane
    at its quasi-static value below threshold. Purkinje cells: uniform between reset and threshold.
    """
    rng = np.random.default_rng([seed, 5])
    mv = 1e-3

    def pacemaker(n, rest, drive, th, ahp):
        a_th = max(0.5, rest + drive - th + 0.5)
        a = a_th * ((a_th + ahp) / a_th) ** rng.random(n)
        v = np.minimum(rest + drive - a, th - 0.5)
        return {"v": v * mv, "a": a * mv}

    return {
        "grc": {"v": np.full(conn.n_grc, cfg.grc_e_leak_mv * mv), "g_goc": np.zeros(conn.n_grc)},
        "goc": pacemaker(conn.n_goc, cfg.goc_v_rest_mv, cfg.goc_drive_mv, cfg.goc_v_thresh_mv, cfg.goc_ahp_mv),
        "mli": pacemaker(conn.n_mli, cfg.mli_v_rest_mv, cfg.mli_drive_mv, cfg.mli_v_thresh_mv, cfg.mli_ahp_mv),
        "pc": {"v": (cfg.pc_v_reset_mv + (cfg.pc_v_thresh_mv - cfg.pc_v_reset_mv) * rng.random(conn.n_pc)) * mv,
               "g_mli": np.zeros(conn.n_pc)},
    }


# ============================================================================ parameters and equations
def _namespace(b2, cfg: SpikingConfig) -> dict:
    """Every constant the equations use, with Brian2 units; names are unique per population
    (a synapse constant named like ``tau_pre`` would be read as a presynaptic variable)."""
    from models.spiking.noise import brian2_function

    ms, mV, Hz = b2.ms, b2.mV, b2.Hz
    return {
        "mf_uniform": brian2_function(b2),
        # granule cells
        "grc_tau": cfg.grc_tau_m_ms * ms, "grc_el": cfg.grc_e_leak_mv * mV, "grc_egaba": cfg.grc_e_gaba_mv * mV,
        "grc_gt": cfg.grc_g_tonic, "grc_vth": cfg.grc_v_thresh_mv * mV, "grc_vreset": cfg.grc_v_reset_mv * mV,
        "goc_grc_tau": cfg.tau_goc_grc_ms * ms, "elig_tau": cfg.tau_elig_ms * ms,
        # Golgi cells
        "goc_tau": cfg.goc_tau_m_ms * ms, "goc_vrest": cfg.goc_v_rest_mv * mV, "goc_vth": cfg.goc_v_thresh_mv * mV,
        "goc_vreset": cfg.goc_v_reset_mv * mV, "goc_drive": cfg.goc_drive_mv * mV,
        "goc_tau_ahp": cfg.goc_tau_ahp_ms * ms, "goc_ahp": cfg.goc_ahp_mv * mV,
        # molecular-layer interneurons
        "mli_tau": cfg.mli_tau_m_ms * ms, "mli_vrest": cfg.mli_v_rest_mv * mV, "mli_vth": cfg.mli_v_thresh_mv * mV,
        "mli_vreset": cfg.mli_v_reset_mv * mV, "mli_drive": cfg.mli_drive_mv * mV,
        "mli_tau_ahp": cfg.mli_tau_ahp_ms * ms, "mli_ahp": cfg.mli_ahp_mv * mV,
        # Purkinje cells
        "pc_tau": cfg.pc_tau_m_ms * ms, "pc_el": cfg.pc_e_leak_mv * mV, "pc_egaba": cfg.pc_e_gaba_mv * mV,
        "pc_vth": cfg.pc_v_thresh_mv * mV, "pc_vreset": cfg.pc_v_reset_mv * mV, "mli_pc_tau": cfg.tau_mli_pc_ms * ms,
        "rate_tau": cfg.pc_rate_tau_ms * ms,
        # synapses
        "w_mf_goc": cfg.w_mf_goc_mv * mV, "w_grc_goc": cfg.w_grc_goc_mv * mV, "g_goc_grc": cfg.g_goc_grc,
        "w_pf_mli": cfg.w_pf_mli_mv * mV, "g_mli_pc": cfg.g_mli_pc, "j_pf": cfg.j_pf_scaled_mv * mV,
        "w_max": cfg.w_max, "w_init": cfg.w_init,
        # olive
        "cf_base": cfg.cf_base_hz * Hz, "cf_gain": cfg.cf_gain, "cf_max": cfg.cf_max_hz * Hz,
        "veto_tau": cfg.tau_veto_ms * ms, "decay_tau": cfg.tau_decay_s * b2.second,
    }


MF_EQS = """
slot : integer
fibre : integer (constant)
noise_seed : integer (shared)
t_call : second (shared)
"""
GRC_EQS = """
dv/dt = ((grc_el - v) + (grc_gt + g_goc) * (grc_egaba - v)) / grc_tau : volt
dg_goc/dt = -g_goc / goc_grc_tau : 1
"""
GOC_EQS = """
dv/dt = (goc_vrest + goc_drive - v - a) / goc_tau : volt
da/dt = -a / goc_tau_ahp : volt
"""
MLI_EQS = """
dv/dt = (mli_vrest + mli_drive - v - a) / mli_tau : volt
da/dt = -a / mli_tau_ahp : volt
"""
PC_EQS = """
dv/dt = ((pc_el + drive - v) + g_mli * (pc_egaba - v)) / pc_tau : volt
dg_mli/dt = -g_mli / mli_pc_tau : 1
drive : volt (constant)
"""
# The granule and Purkinje membranes are integrated by an explicit exponential-Euler step (the
# conductance held over the step, as Brian2's ``exponential_euler`` does) written with
# :func:`models.spiking.integrate.relax_step`, which needs no ``exp`` call per neuron and step:
# the equations above stay the model; these are its state variables and its step.
# (Golgi cells and interneurons have constant coefficients: Brian2's step has no per-neuron exp.)
CONDUCTANCE_VARS = {
    "grc": "v : volt\ng_goc : 1\n",
    "pc": "v : volt\ng_mli : 1\ndrive : volt (constant)\n",
}
CONDUCTANCE_STEP = {
    "grc": "v = relax_step(v, grc_b0 + grc_bg * g_goc, grc_y0 + grc_yg * g_goc)\ng_goc = g_goc * grc_gdecay",
    "pc": "v = relax_step(v, pc_c * (pc_el + drive + g_mli * pc_egaba), pc_c * (1 + g_mli))\ng_mli = g_mli * pc_gdecay",
}


def step_constants(b2, cfg: SpikingConfig, dt_ms: float) -> dict:
    """The per-step constants of :data:`CONDUCTANCE_STEP` at step ``dt_ms``: ``c = dt / tau``,
    the relaxation rate ``y = y0 + yg g`` and drive ``b = b0 + bg g`` of the granule membrane, and
    the conductance decay factors ``exp(-dt / tau_syn)``."""
    mV = b2.mV
    c_grc = dt_ms / cfg.grc_tau_m_ms
    return {
        "relax_step": integrate.brian2_function(b2),
        "grc_y0": c_grc * (1 + cfg.grc_g_tonic), "grc_yg": c_grc,
        "grc_b0": c_grc * (cfg.grc_e_leak_mv + cfg.grc_g_tonic * cfg.grc_e_gaba_mv) * mV,
        "grc_bg": c_grc * cfg.grc_e_gaba_mv * mV,
        "grc_gdecay": float(np.exp(-dt_ms / cfg.tau_goc_grc_ms)),
        "pc_c": dt_ms / cfg.pc_tau_m_ms, "pc_gdecay": float(np.exp(-dt_ms / cfg.tau_mli_pc_ms)),
    }


RESETS = {"grc": "v = grc_vreset", "goc": "v = goc_vreset; a += goc_ahp", "mli": "v = mli_vreset; a += mli_ahp",
          "pc": "v = pc_vreset"}
THRESHOLDS = {"grc": "v > grc_vth", "goc": "v > goc_vth", "mli": "v > mli_vth", "pc": "v > pc_vth"}
# per-neuron start values of a presentation (the steady state): "v_init : volt (constant)" etc.
INIT_EQS = {pop: "".join(f"{var}_init : {'volt' if var in ('v', 'a') else '1'} (constant)\n" for var in names)
            for pop, names in STATE_VARS.items()}
RESTART = {pop: "\n".join(f"{var} = {var}_init" for var in names) for pop, names in STATE_VARS.items()}


def _clocks(b2, dt_ms: float, window_ms: float):
    """The simulation step clock and the presentation-window clock of one network, with fixed names.

    Brian2 names a clock it creates for a group after the clocks already alive in the process,
    and the name is part of the generated code, so a second network built in one process would
    compile all its code again. Explicit names keep the code of every network the same.
    """
    return (b2.Clock(dt=dt_ms * b2.ms, name="cereb_step_clock"),
            b2.Clock(dt=window_ms * b2.ms, name="cereb_window_clock"))


def _offsets(i: np.ndarray, j: np.ndarray, n_pre: int, n_post: int, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicate one copy's synapses ``copies`` times with index offsets per copy."""
    b = np.arange(copies, dtype=np.int64)[:, None]
    return (np.asarray(i, np.int64)[None, :] + b * n_pre).ravel(), (np.asarray(j, np.int64)[None, :] + b * n_post).ravel()


def neuron_group(b2, pop: str, n: int, cfg: SpikingConfig, clock, ns: dict, extra: str = "", reset: str = "",
                 events: dict | None = None, name: str | None = None, reference: bool = False):
    """``n`` cells of population ``pop`` (``grc``, ``goc``, ``mli`` or ``pc``) with the model's
    equations, threshold, reset (plus ``reset``), start-value variables and integration step;
    ``extra`` adds equations (integrated by exponential Euler). ``reference``: Brian2 integrates
    every equation itself (``exponential_euler`` on :data:`GRC_EQS` and :data:`PC_EQS`), the
    engine's fixed speed reference."""
    step = {} if reference else CONDUCTANCE_STEP
    eqs = {"grc": GRC_EQS, "goc": GOC_EQS, "mli": MLI_EQS, "pc": PC_EQS, **{p: CONDUCTANCE_VARS[p] for p in step}}[pop]
    dtype = {"v": np.dtype(cfg.grc_state_dtype), "g_goc": np.dtype(cfg.grc_state_dtype)} if pop == "grc" else None
    ns = {**ns, **step_constants(b2, cfg, float(clock.dt_) * 1000.0)}
    g = b2.NeuronGroup(n, eqs + INIT_EQS[pop] + extra, threshold=THRESHOLDS[pop], reset=RESETS[pop] + reset,
                       method="exponential_euler", clock=clock, namespace=ns, name=name or pop,
                       **({"dtype": dtype} if dtype else {}), **({"events": events} if events else {}))
    if pop in step:
        g.run_regularly(step[pop], clock=clock, when="groups", name=f"{name or pop}_step")
    return g


def _cells(b2, cfg: SpikingConfig, conn: Connectivity, copies: int, clock, ns: dict, extra: dict, resets: dict,
           events: dict | None = None, reference: bool = False):
    """GrC, GoC, MLI and PC groups of ``copies`` copies, with their start-value variables."""
    sizes = {"grc": conn.n_grc, "goc": conn.n_goc, "mli": conn.n_mli, "pc": conn.n_pc}
    groups = {pop: neuron_group(b2, pop, sizes[pop] * copies, cfg, clock, ns, extra.get(pop, ""), resets.get(pop, ""),
                                (events or {}).get(pop), reference=reference)
              for pop in ("grc", "goc", "mli", "pc")}
    groups["pc"].drive_ = np.tile(conn.pc_drive_mv * 1e-3, copies)
    return groups


def _synapses(b2, name, pre, post, i, j, n_pre, n_post, copies, code, clock, ns, model=""):
    s = b2.Synapses(pre, post, model=model, on_pre=code, clock=clock, namespace=ns, name=name)
    ii, jj = _offsets(i, j, n_pre, n_post, copies)
    if len(ii):
        s.connect(i=ii, j=jj)
    else:
        s.active = False  # e.g. goc_per_grc = 0: Brian2 refuses to run a Synapses object without synapses
    return s


def _fixed_synapses(b2, groups: dict, mf, conn: Connectivity, copies: int, clock, ns: dict,
                    plastic_inh: bool = False, mli_pc: bool = True) -> list:
    """MF-GoC, PF-GoC, GoC-GrC and (``mli_pc``) MLI-PC synapses (the same in both builders; the
    MLI-PC weights ``w_inh`` are set from ``conn.mli_pc_w``, and the training builder adds their
    plasticity; the inference builder replaces them by a compiled projection)."""
    g = groups
    return [
        _synapses(b2, "mf_goc", mf, g["goc"], conn.mf_goc_i, conn.mf_goc_j, conn.n_mf, conn.n_goc, copies,
                  "v_post += w_mf_goc", clock, ns),
        _synapses(b2, "grc_goc", g["grc"], g["goc"], conn.grc_goc_i, conn.grc_goc_j, conn.n_grc, conn.n_goc, copies,
                  "v_post += w_grc_goc", clock, ns),
        _synapses(b2, "goc_grc", g["goc"], g["grc"], conn.goc_grc_i, conn.goc_grc_j, conn.n_goc, conn.n_grc, copies,
                  "g_goc_post += g_goc_grc", clock, ns),
    ] + ([_mli_pc(b2, g, conn, copies, clock, ns, plastic=plastic_inh)] if mli_pc else [])


def _mli_pc(b2, groups: dict, conn: Connectivity, copies: int, clock, ns: dict, plastic: bool = False):
    """MLI-PC inhibition with weights ``w_inh`` (``conn.mli_pc_w``); ``plastic``: the MLI-alone
    depression and CF-triggered rebound potentiation of the module docstring (training only)."""
    if plastic:
        model = "w_inh : 1\nlr_scale_inh : 1 (shared)"
        on_pre = {"pre": "g_mli_post += g_mli_pc * w_inh\n"
                         "w_inh = clip(w_inh - lr_scale_inh * a_inh * int(t % sample_dt >= teach_delay), 0, w_inh_max)"}
        on_post = "w_inh = clip(w_inh + lr_scale_inh * a_rp * y_mli_pre, 0, w_inh_max)"
        s = b2.Synapses(groups["mli"], groups["pc"], model, on_pre=on_pre, on_post=on_post,
                        on_event={"pre": "spike", "post": "cf"}, clock=clock, namespace=ns, name="mli_pc")
        ii, jj = _offsets(conn.mli_pc_i, conn.mli_pc_j, conn.n_mli, conn.n_pc, copies)
        s.connect(i=ii, j=jj)
    else:
        s = _synapses(b2, "mli_pc", groups["mli"], groups["pc"], conn.mli_pc_i, conn.mli_pc_j, conn.n_mli, conn.n_pc,
                      copies, "g_mli_post += g_mli_pc * w_inh", clock, ns, model="w_inh : 1 (constant)")
    s.w_inh_[:] = np.tile(np.asarray(conn.mli_pc_w, dtype=np.float64), copies)
    return s


def _set_start(groups: dict, state: dict, copies: int) -> None:
    """Load start values (one copy's, in volt) into the ``*_init`` variables of every copy."""
    for pop, names in STATE_VARS.items():
        for var in names:
            setattr(groups[pop], f"{var}_init_", np.tile(np.asarray(state[pop][var], dtype=np.float64), copies))


def _csr(pre: np.ndarray, post: np.ndarray, n_pre: int, values: np.ndarray | None = None):
    """Targets of each presynaptic cell: ``ptr (n_pre + 1,)``, ``idx`` (and ``values``) in pre order."""
    order = np.argsort(pre, kind="stable")
    ptr = np.zeros(n_pre + 1, dtype=np.int32)
    np.cumsum(np.bincount(pre, minlength=n_pre), out=ptr[1:])
    return ptr, np.ascontiguousarray(post[order], dtype=np.int32), (None if values is None else
                                                                     np.ascontiguousarray(values[order], dtype=np.float64))


# ============================================================================ inference network
# Compiled helpers of the inference network. Sizes are arguments (constants of the calling
# group's namespace), never part of the code, so one compiled module serves every network size
# and every number of copies.
MF_GRC_CYTHON = """
cdef double mf_to_grc(int i, int n_mf, int n_grc) noexcept:
    global _namespace_mfgrc_ptr, _namespace_mfgrc_idx, _namespace_mfgrc_w, _namespace_mfgrc_v
    cdef int copy = i // n_mf
    cdef int f = i - copy * n_mf
    cdef int k
    cdef int base = copy * n_grc
    for k in range(_namespace_mfgrc_ptr[f], _namespace_mfgrc_ptr[f + 1]):
        _namespace_mfgrc_v[base + _namespace_mfgrc_idx[k]] += _namespace_mfgrc_w[k]
    return 0.0
"""

PF_CYTHON = """
cdef double pf_to_targets(int i, int n_grc, int n_pc, int n_mli, double w_mli) noexcept:
    global _namespace_pf_weff, _namespace_pf_pcv, _namespace_pfmli_ptr, _namespace_pfmli_idx, _namespace_pf_mliv
    cdef int copy = i // n_grc
    cdef int g = i - copy * n_grc
    cdef int k
    cdef double *w = _namespace_pf_weff + g * n_pc
    cdef double *v = _namespace_pf_pcv + copy * n_pc
    cdef double *vm = _namespace_pf_mliv + copy * n_mli
    for k in range(n_pc):
        v[k] += w[k]
    for k in range(_namespace_pfmli_ptr[g], _namespace_pfmli_ptr[g + 1]):
        vm[_namespace_pfmli_idx[k]] += w_mli
    return 0.0
"""

MLI_PC_CYTHON = """
cdef double mli_to_pc(int i, int n_mli, int n_pc, double g_unit) noexcept:
    global _namespace_mlipc_ptr, _namespace_mlipc_idx, _namespace_mlipc_w, _namespace_mlipc_g
    cdef int copy = i // n_mli
    cdef int m = i - copy * n_mli
    cdef int k
    cdef double *g = _namespace_mlipc_g + copy * n_pc
    for k in range(_namespace_mlipc_ptr[m], _namespace_mlipc_ptr[m + 1]):
        g[_namespace_mlipc_idx[k]] += g_unit * _namespace_mlipc_w[k]
    return 0.0
"""

STASH_CYTHON = """
cdef double stash_%POP%(int i, int chunk, int n, int row, int max_chunks) noexcept:
    global _namespace_counts_%POP%
    if chunk >= 0 and chunk < max_chunks:  # bounds-checked: a stale t_call must not write out of range
        _namespace_counts_%POP%[chunk * row + i] = n
    return 0.0
"""

RATE_LOOKUP_CYTHON = """
cdef double mf_rate_lookup(int i, int chunk, int row, int max_chunks) noexcept:
    global _namespace_mf_rate_table
    if chunk < 0 or chunk >= max_chunks:
        return 0.0
    return _namespace_mf_rate_table[chunk * row + i]
"""

SLOT_LOOKUP_CYTHON = """
cdef int mf_slot_lookup(int i, int chunk, int copies, int n_mf, int max_chunks) noexcept:
    global _namespace_mf_slot_table
    if chunk < 0 or chunk >= max_chunks:
        return 0
    return _namespace_mf_slot_table[chunk * copies + i // n_mf]
"""


def _cython_function(b2, name: str, code: str, namespace: dict, arg_types: dict, result: str):
    """A Brian2 function with only a Cython implementation (used by the inference network)."""

    def _no_python(*args):
        raise NotImplementedError(f"{name} has only a Cython implementation")

    f = b2.Function(_no_python, arg_units=[1] * len(arg_types), return_unit=1,
                    arg_types=list(arg_types.values()), return_type=result)
    f.implementations.add_implementation("cython", code, namespace=namespace, name=name)
    return f


COUNTED = ("grc", "goc", "mli", "pc")


@dataclass
class InferenceNet:
    """A built inference network of ``copies`` copies, simulating up to ``max_chunks`` chunks of
    ``copies`` queries per ``run`` (plasticity off).

    Buffers shared with the compiled code: ``rate_table`` ``(max_chunks, copies * n_mf)`` Hz,
    ``slot_table`` ``(max_chunks, copies)``, ``counts[pop]`` ``(max_chunks, copies * n_pop)``,
    ``pf_weff`` ``(n_grc * n_pc,)`` volt, ``mf_grc_w`` (CSR order) volt, ``mli_pc_w`` (CSR order, the
    multipliers of ``g_mli_pc``).
    """

    net: object
    groups: dict
    rate_table: np.ndarray
    slot_table: np.ndarray
    counts: dict
    pf_weff: np.ndarray
    mf_grc_w: np.ndarray
    mf_grc_order: np.ndarray
    recorders: dict
    copies: int
    max_chunks: int
    window_ms: float
    conn: Connectivity
    cfg: SpikingConfig
    mli_pc_w: np.ndarray
    mli_pc_order: np.ndarray


def build_inference_net(cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, copies: int, dt_ms: float,
                        window_ms: float, max_chunks: int = 10, record: tuple[str, ...] = (),
                        start: dict | None = None, reference: bool = False) -> InferenceNet:
    """Build ``copies`` copies of the trained network for evaluation (plasticity off).

    One ``run`` of ``n_chunks * window_ms`` simulates ``n_chunks`` chunks back to back: at each
    chunk boundary a ``run_regularly`` operation stores the spike counts of the chunk that ended,
    sets every state variable to its start value (``start``: the steady state, see
    :func:`steady_state`; rest until then), and loads the next chunk's mossy-fibre rates and
    noise slots. Spike trains are recorded (``SpikeMonitor``) only for the populations in ``record``.
    ``reference``: the network as it was built before the engine's own integration step and
    compiled MLI-PC projection (Brian2's ``exponential_euler`` and ``Synapses``), kept unchanged
    as the fixed speed reference of ``cereb bench spiking`` and as the numerical check of both.
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    ns = _namespace(b2, cfg)
    ns["chunk_dt"] = window_ms * b2.ms
    # PC spikes count from this step of each chunk on; whole steps, because a float test flips
    # with rounding at the boundary step
    ns["readout_steps"] = int(np.ceil(cfg.readout_start_ms / dt_ms - 1e-9))
    ns["chunk_steps"] = int(round(window_ms / dt_ms))  # noise step counts from each chunk's start
    if abs(ns["chunk_steps"] * dt_ms - window_ms) > 1e-9:
        raise ValueError(f"window_ms={window_ms} must be a whole number of steps of dt_ms={dt_ms}")
    clock, window_clock = _clocks(b2, dt_ms, window_ms)
    chunk = "int((t - t_call) / chunk_dt + 0.5)"
    counting = "nspk : integer\nscratch : 1\nt_call : second (shared)\n"
    extra = {pop: counting for pop in COUNTED}
    resets = {pop: "; nspk += 1" for pop in ("grc", "goc", "mli")}
    resets["grc"] += "; scratch = pf_to_targets(i, n_grc_copy, n_pc_copy, n_mli_copy, w_pf_mli_v)"
    if not reference:
        resets["mli"] += "; scratch = mli_to_pc(i, n_mli_copy, n_pc_copy, g_mli_pc)"
    resets["pc"] = "; nspk += int(timestep(t - t_call, dt) % chunk_steps >= readout_steps)"
    mf = b2.NeuronGroup(conn.n_mf * copies, MF_EQS + "rate : Hz\nscratch : 1\n",
                        threshold="mf_uniform(noise_seed, slot, fibre, timestep(t - t_call, dt) % chunk_steps) < rate * dt",
                        reset="scratch = mf_to_grc(i, n_mf_copy, n_grc_copy)", clock=clock, namespace=dict(ns), name="mf")
    mf.fibre = np.tile(np.arange(conn.n_mf), copies)
    groups = {"mf": mf, **_cells(b2, cfg, conn, copies, clock, ns, extra, resets, reference=reference)}
    # MF input lands before a GrC reset of the same step, and PF input before a PC/MLI reset, as with Synapses
    mf.resetter["spike"].order = -2
    groups["grc"].resetter["spike"].order = -1
    syn = _fixed_synapses(b2, groups, mf, conn, copies, clock, ns, mli_pc=reference)  # else the compiled mli_to_pc
    sizes = {"grc": conn.n_grc, "goc": conn.n_goc, "mli": conn.n_mli, "pc": conn.n_pc}
    rate_table = np.zeros((max_chunks, copies * conn.n_mf))
    slot_table = np.zeros((max_chunks, copies), dtype=np.int32)
    counts = {pop: np.zeros((max_chunks, copies * n), dtype=np.int32) for pop, n in sizes.items()}
    pf_weff = np.zeros(conn.n_grc * conn.n_pc)
    sizes_ns = {"max_chunks": max_chunks, "n_copies": copies, "n_mf_copy": conn.n_mf, "mf_row": copies * conn.n_mf,
                "n_grc_copy": conn.n_grc, "n_pc_copy": conn.n_pc, "n_mli_copy": conn.n_mli,
                "w_pf_mli_v": cfg.w_pf_mli_mv * 1e-3}
    for grp in groups.values():
        grp.namespace.update(sizes_ns)
    ints = lambda *names: {name: "integer" for name in names}  # noqa: E731
    # compiled code needs flat buffers; the 2-d arrays kept in InferenceNet are views of them
    mf.namespace["mf_rate_lookup"] = _cython_function(
        b2, "mf_rate_lookup", RATE_LOOKUP_CYTHON, {"_mf_rate_table": rate_table.reshape(-1)},
        ints("i", "chunk", "row", "max_chunks"), "float")
    mf.namespace["mf_slot_lookup"] = _cython_function(
        b2, "mf_slot_lookup", SLOT_LOOKUP_CYTHON, {"_mf_slot_table": slot_table.reshape(-1)},
        ints("i", "chunk", "copies", "n_mf", "max_chunks"), "integer")
    mf.run_regularly(f"rate = mf_rate_lookup(i, {chunk}, mf_row, max_chunks) * Hz\n"
                     f"slot = mf_slot_lookup(i, {chunk}, n_copies, n_mf_copy, max_chunks)",
                     clock=window_clock, when="start", name="mf_load")
    ptr, idx, w_csr = _csr(conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, conn.mf_grc_w_mv * 1e-3)
    mf_grc_order = np.argsort(conn.mf_grc_i, kind="stable")
    grc_v = groups["grc"].variables["v"].get_value()
    mf.namespace["mf_to_grc"] = _cython_function(
        b2, "mf_to_grc", MF_GRC_CYTHON,
        {"_mfgrc_ptr": ptr, "_mfgrc_idx": idx, "_mfgrc_w": w_csr, "_mfgrc_v": grc_v},
        ints("i", "n_mf", "n_grc"), "float")
    mptr, midx, _ = _csr(conn.grc_mli_i, conn.grc_mli_j, conn.n_grc)
    groups["grc"].namespace["pf_to_targets"] = _cython_function(
        b2, "pf_to_targets", PF_CYTHON,
        {"_pf_weff": pf_weff, "_pf_pcv": groups["pc"].variables["v"].get_value(), "_pfmli_ptr": mptr,
         "_pfmli_idx": midx, "_pf_mliv": groups["mli"].variables["v"].get_value()},
        {**ints("i", "n_grc", "n_pc", "n_mli"), "w_mli": "float"}, "float")
    iptr, iidx, iw = _csr(conn.mli_pc_i, conn.mli_pc_j, conn.n_mli, conn.mli_pc_w)
    if not reference:
        groups["mli"].namespace["mli_to_pc"] = _cython_function(
            b2, "mli_to_pc", MLI_PC_CYTHON,
            {"_mlipc_ptr": iptr, "_mlipc_idx": iidx, "_mlipc_w": iw, "_mlipc_g": groups["pc"].variables["g_mli"].get_value()},
            {**ints("i", "n_mli", "n_pc"), "g_unit": "float"}, "float")
    for pop, n in sizes.items():
        g = groups[pop]
        g.namespace[f"{pop}_row"] = copies * n
        g.namespace[f"stash_{pop}"] = _cython_function(
            b2, f"stash_{pop}", STASH_CYTHON.replace("%POP%", pop), {f"_counts_{pop}": counts[pop].reshape(-1)},
            ints("i", "chunk", "n", "row", "max_chunks"), "float")
        g.run_regularly(f"scratch = stash_{pop}(i, {chunk} - 1, nspk, {pop}_row, max_chunks)\nnspk = 0\n{RESTART[pop]}",
                        clock=window_clock, when="start", name=f"{pop}_chunk")
    recorders = {name: b2.SpikeMonitor(groups[name], name=f"spikes_{name}") for name in groups if name in record}
    net = b2.Network(*groups.values(), *syn, *recorders.values())
    inet = InferenceNet(net, groups, rate_table, slot_table, counts, pf_weff, w_csr, mf_grc_order, recorders, copies,
                        max_chunks, window_ms, conn, cfg, iw, np.argsort(conn.mli_pc_i, kind="stable"))
    set_inference_weights(inet, weights)
    set_start_state(inet, start or initial_state(cfg, conn, 0))
    return inet


def set_inference_weights(inet: InferenceNet, weights: np.ndarray) -> None:
    """Load PF-PC weights ``(n_grc, n_pc)`` as PSPs ``j_pf w`` (volt)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (inet.conn.n_grc, inet.conn.n_pc):
        raise ValueError(f"weights must have shape {(inet.conn.n_grc, inet.conn.n_pc)}, got {w.shape}")
    inet.pf_weff[:] = inet.cfg.j_pf_scaled_mv * 1e-3 * w.ravel()


def set_mf_grc_weights(inet: InferenceNet, w_mv: np.ndarray) -> None:
    """Load MF-GrC EPSPs (mV, in ``Connectivity.mf_grc_i`` order) without rebuilding."""
    inet.mf_grc_w[:] = np.asarray(w_mv, dtype=np.float64)[inet.mf_grc_order] * 1e-3


def set_mli_pc_weights(inet: InferenceNet, w: np.ndarray) -> None:
    """Load MLI-PC weights (``Connectivity.mli_pc_i`` order) into every copy without rebuilding."""
    w = np.asarray(w, dtype=np.float64)
    inet.mli_pc_w[:] = w[inet.mli_pc_order]
    if any(obj.name == "mli_pc" for obj in inet.net.objects):  # the reference network
        inet.net["mli_pc"].w_inh_[:] = np.tile(w, inet.copies)


def set_start_state(inet: InferenceNet, state: dict) -> None:
    """Every later presentation starts from ``state`` (one copy's values, volt), and so does the next run."""
    _set_start(inet.groups, state, inet.copies)
    for pop, names in STATE_VARS.items():
        g = inet.groups[pop]
        for var in names:
            setattr(g, f"{var}_", getattr(g, f"{var}_init_")[:])


def read_state(inet: InferenceNet, copy: int = 0) -> dict:
    """The current state of copy ``copy`` (volt), in the layout of :func:`initial_state`."""
    out = {}
    for pop, names in STATE_VARS.items():
        n = {"grc": inet.conn.n_grc, "goc": inet.conn.n_goc, "mli": inet.conn.n_mli, "pc": inet.conn.n_pc}[pop]
        out[pop] = {var: np.asarray(getattr(inet.groups[pop], f"{var}_")[copy * n:(copy + 1) * n], dtype=np.float64)
                    for var in names}
    return out


WARMUP_SLOT = 2**30  # noise slot of the warm-up (no query uses it)


def steady_state(inet: InferenceNet, noise_seed: int) -> dict:
    """The network's state after ``cfg.warmup_ms`` of background input (every mossy fibre at
    ``mf_rate_min_hz``), started from :func:`initial_state`: the start of every presentation.

    Simulated window by window on copy 0 of ``inet`` (each window continues where the last one
    ended), with noise slot ``WARMUP_SLOT + window``; returns one copy's state. The network's own
    start values are left at the result.
    """
    cfg, conn = inet.cfg, inet.conn
    state = initial_state(cfg, conn, noise_seed)
    n_windows = int(np.ceil(cfg.warmup_ms / inet.window_ms - 1e-9))
    background = np.full((1, conn.n_mf), cfg.mf_rate_min_hz)
    for w in range(n_windows):
        set_start_state(inet, state)
        run_inference_chunks(inet, background, np.array([WARMUP_SLOT + w]), noise_seed)
        state = read_state(inet, 0)
    set_start_state(inet, state)
    return state


def run_inference_chunks(inet: InferenceNet, rates_hz: np.ndarray, slots: np.ndarray, noise_seed: int) -> tuple[dict, dict]:
    """Simulate up to ``max_chunks * copies`` queries in one run.

    Parameters
    ----------
    rates_hz : ``(n, n_mf)`` mossy-fibre rates; slots : ``(n,)`` frozen-noise slots.

    Returns
    -------
    counts : population -> ``(n, n_cells)`` spike counts; spikes : population -> list of
    ``(i, t_ms)`` per query (recorded populations only).
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    n, B, conn = len(rates_hz), inet.copies, inet.conn
    n_chunks = -(-n // B)
    if n_chunks > inet.max_chunks:
        raise ValueError(f"{n} queries exceed {inet.max_chunks} chunks of {B}")
    rates = np.zeros((n_chunks * B, conn.n_mf))
    rates[:n] = rates_hz
    slot = np.zeros(n_chunks * B, dtype=np.int64)
    slot[:n] = slots
    inet.rate_table[:n_chunks] = rates.reshape(n_chunks, B * conn.n_mf)
    inet.slot_table[:n_chunks] = (slot % (2**31)).reshape(n_chunks, B)
    g = inet.groups
    t0 = float(inet.net.t_)
    for name in ("mf", *COUNTED):
        g[name].t_call_[:] = t0
    g["mf"].noise_seed_[:] = int(noise_seed) % (2**31)
    # the first chunk starts from the start values too (the chunk operation at t0 restores them)
    nspk = {k: len(m.i) for k, m in inet.recorders.items()}
    inet.net.run(n_chunks * inet.window_ms * b2.ms)
    sizes = {"grc": conn.n_grc, "goc": conn.n_goc, "mli": conn.n_mli, "pc": conn.n_pc}
    counts = {}
    for pop, size in sizes.items():
        c = inet.counts[pop]
        c[n_chunks - 1] = g[pop].nspk_[:]  # the last chunk has no boundary after it
        counts[pop] = c[:n_chunks].reshape(n_chunks * B, size)[:n].copy()
    spikes = {}
    dt_ms = float(inet.groups["pc"].clock.dt_) * 1000.0
    chunk_steps = int(round(inet.window_ms / dt_ms))
    for pop, mon in inet.recorders.items():
        i = np.asarray(mon.i[:])[nspk[pop]:]
        t = (np.asarray(mon.t_[:])[nspk[pop]:] - t0) * 1000.0
        size = sizes.get(pop, conn.n_mf)
        # whole steps, not float division: a spike on a chunk's first step (t = k * window up to
        # rounding) belongs to that chunk, as its spike count says, not to the one before
        step = np.rint(t / dt_ms).astype(np.int64)
        chunk_of = np.minimum(step // chunk_steps, n_chunks - 1)
        query = chunk_of * B + i // size
        t_in = (step - chunk_of * chunk_steps) * dt_ms
        spikes[pop] = [(i[query == q] - (q % B) * size, t_in[query == q]) for q in range(n)]
    return counts, spikes


# ============================================================================ training network
@dataclass
class TrainingNet:
    net: object
    mf: object
    groups: dict
    io: object
    pf_pc: object
    mf_grc: object
    pc_spikes: object
    grc_count: object
    io_count: object
    conn: Connectivity
    cfg: SpikingConfig

    @property
    def grc(self):
        return self.groups["grc"]

    @property
    def mli_pc(self):
        return self.net["mli_pc"]

    @property
    def pc(self):
        return self.groups["pc"]


def build_training_net(cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, n_samples: int,
                       window_ms: float, dt_ms: float, start: dict | None = None) -> TrainingNet:
    """One copy of the network with climbing-fibre-driven PF-PC plasticity switched on.

    Samples are presented back to back for ``window_ms`` each; every sample starts from the start
    values (``start``, the steady state of :func:`steady_state`; settable per run through the
    ``*_init`` variables). The olive and PF-alone LTP are active from ``teach_delay_ms`` after
    sample onset, once the Purkinje rate trace reflects the current sample.

    Inputs are given per epoch through two TimedArrays named ``mf_input`` (Hz, shape
    ``(n_samples, n_mf)``) and ``pc_target`` (Hz, ``(n_samples, n_pc)``) indexed by
    ``t - t_call``; see :func:`epoch_namespace`.
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    ns = _namespace(b2, cfg)
    ns["sample_dt"] = window_ms * b2.ms
    ns["teach_delay"] = cfg.teach_delay_ms * b2.ms
    ns.update(a_inh=cfg.a_inh, a_rp=cfg.a_rp, w_inh_max=cfg.w_inh_max)
    clock, window_clock = _clocks(b2, dt_ms, window_ms)
    teaching = "int(t % sample_dt >= teach_delay)"  # a training run always starts at t = 0
    mf = b2.NeuronGroup(conn.n_mf, MF_EQS, clock=clock, namespace=dict(ns), name="mf", reset="",
                        threshold="mf_uniform(noise_seed, 0, fibre, timestep(t - t_call, dt)) < mf_input(t - t_call, i) * dt")
    mf.fibre = np.arange(conn.n_mf)
    extra = {"grc": "dx_pf/dt = -x_pf / elig_tau : 1\n", "mli": "dy_mli/dt = -y_mli / elig_tau : 1\n",
             "pc": "dr/dt = -r / rate_tau : Hz\ncf_flag : 1\ndc_veto/dt = -c_veto / veto_tau : 1\n"}
    groups = _cells(b2, cfg, conn, 1, clock, ns, extra, {"grc": "; x_pf += 1", "mli": "; y_mli += 1", "pc": "; r += 1 / rate_tau"},
                    events={"pc": {"cf": "cf_flag > 0.5"}})
    grc, pc = groups["grc"], groups["pc"]
    # every sample starts from the steady state
    for pop in STATE_VARS:
        reset = RESTART[pop] + {"grc": "\nx_pf = 0", "mli": "\ny_mli = 0", "pc": "\nr = 0*Hz\ncf_flag = 0\nc_veto = 0"}.get(pop, "")
        groups[pop].run_regularly(reset, clock=window_clock, when="start", name=f"{pop}_sample_reset")
    _set_start(groups, start or initial_state(cfg, conn, 0), 1)
    mf_grc = b2.Synapses(mf, grc, "w_syn : volt (constant)", on_pre="v_post += w_syn", clock=clock, namespace=ns,
                         name="mf_grc")
    mf_grc.connect(i=conn.mf_grc_i.astype(np.int64), j=conn.mf_grc_j.astype(np.int64))
    mf_grc.w_syn_[:] = conn.mf_grc_w_mv * 1e-3
    syn = _fixed_synapses(b2, groups, mf, conn, 1, clock, ns, plastic_inh=True)
    syn[-1].lr_scale_inh = 1.0
    syn.append(_synapses(b2, "grc_mli", grc, groups["mli"], conn.grc_mli_i, conn.grc_mli_j, conn.n_grc, conn.n_mli, 1,
                         "v_post += w_pf_mli", clock, ns))
    io = b2.NeuronGroup(conn.n_pc, "r_pc : Hz (linked)\nnoise_seed : integer (shared)\nt_call : second (shared)",
                        threshold=f"mf_uniform(noise_seed, -1, i, timestep(t - t_call, dt)) < {teaching} * "
                                  "clip(cf_base + cf_gain * (r_pc - pc_target(t - t_call, i)), 0*Hz, cf_max) * dt",
                        reset="", clock=clock, namespace=dict(ns), name="io")
    io.r_pc = b2.linked_var(pc, "r")
    cf = b2.Synapses(io, pc, on_pre="cf_flag_post = 1", clock=clock, namespace=ns, name="cf")
    cf.connect(j="i")
    pc.run_on_event("cf", "cf_flag = 0\nc_veto += 1")
    syn_ns = dict(ns, a_ltp=cfg.a_ltp, a_ltd=cfg.a_ltd)
    if cfg.ltd == "cf":
        model, on_pre = "w : 1\nlr_scale : 1 (shared)", f"w = clip(w + lr_scale * a_ltp * {teaching}, 0, w_max)"
        on_post = "w = clip(w - lr_scale * a_ltd * x_pf_pre, 0, w_max)"
    else:  # no climbing-fibre depression: the CF vetoes LTP; potentiation decays between events
        model = "dw/dt = -lr_scale * w / decay_tau : 1 (event-driven)\nlr_scale : 1 (shared)"
        on_pre = f"w = clip(w + lr_scale * a_ltp * {teaching} * clip(1 - c_veto_post, 0, 1), 0, w_max)"
        on_post = None
    pf_pc = b2.Synapses(grc, pc, model, on_pre={"pre": "v_post += j_pf * w\n" + on_pre},
                        on_post=on_post, on_event={"pre": "spike", "post": "cf"} if on_post else {"pre": "spike"},
                        clock=clock, namespace=syn_ns, name="pf_pc")
    ii = np.repeat(np.arange(conn.n_grc, dtype=np.int64), conn.n_pc)
    jj = np.tile(np.arange(conn.n_pc, dtype=np.int64), conn.n_grc)
    pf_pc.connect(i=ii, j=jj)
    pf_pc.w_[:] = np.asarray(weights, dtype=np.float64).ravel()
    pf_pc.lr_scale = 1.0  # scales LTP and LTD together (an annealing schedule across epochs)
    pc_spikes = b2.SpikeMonitor(pc, name="train_pc_spikes")
    grc_count = b2.SpikeMonitor(grc, record=False, name="train_grc_count")
    io_count = b2.SpikeMonitor(io, record=False, name="train_io_count")
    net = b2.Network(mf, *groups.values(), io, cf, mf_grc, *syn, pf_pc, pc_spikes, grc_count, io_count)
    return TrainingNet(net, mf, groups, io, pf_pc, mf_grc, pc_spikes, grc_count, io_count, conn, cfg)


def epoch_namespace(b2, x: np.ndarray, targets_hz: np.ndarray, cfg: SpikingConfig, window_ms: float) -> dict:
    """TimedArrays for one epoch: MF rates from inputs ``x`` ``(n, n_mf)`` and PC targets ``(n, n_pc)``."""
    return {
        "mf_input": b2.TimedArray(cfg.mf_rates_hz(x) * b2.Hz, dt=window_ms * b2.ms, name="mf_input"),
        "pc_target": b2.TimedArray(np.asarray(targets_hz, dtype=np.float64) * b2.Hz, dt=window_ms * b2.ms, name="pc_target"),
    }


def simulate_with_olive(cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, x: np.ndarray, y: np.ndarray,
                        noise_seed: int, start: dict) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Spike trains of every population, climbing fibres included, for each input presented alone
    with the inferior olive on and plasticity off.

    The network is the training network (:func:`build_training_net`) with the olive teaching
    towards label ``y[q]`` (target rates as in training) and the plasticity amplitudes scaled by
    zero, so the climbing fibres fire as they would during training but no weight changes. Each
    input is its own simulation from the steady state ``start``, with the mossy-fibre noise of
    noise slot 0 of the inference engine with the same ``noise_seed``.

    Returns
    -------
    One dict per input: population (``mf``, ``grc``, ``goc``, ``mli``, ``pc``, ``cf``) -> ``(i, t_ms)``.

    The simulation runs on Brian2's ``numpy`` code-generation target, which compiles nothing: on a
    2-core AMD EPYC (7 Dec 2026, the default digits network, two inputs) it took 12 s, against
    480 s for the first ``cython`` run in a fresh cache (its compile; 3.3 s once cached), with
    every population's spike trains identical between the two targets.
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    previous = b2.prefs.codegen.target
    b2.prefs.codegen.target = "numpy"
    try:
        return _simulate_with_olive(b2, cfg, conn, weights, x, y, noise_seed, start)
    finally:
        b2.prefs.codegen.target = previous


def _simulate_with_olive(b2, cfg, conn, weights, x, y, noise_seed, start):
    from models.spiking.train import pc_targets

    x = np.asarray(x, dtype=np.float64)
    out = []
    for xq, yq in zip(x, np.asarray(y)):
        tnet = build_training_net(cfg, conn, weights, 1, cfg.window_ms, cfg.dt_ms, start=start)
        ns = epoch_namespace(b2, xq[None, :], pc_targets(cfg, conn, np.array([int(yq)])), cfg, cfg.window_ms)
        tnet.mf.namespace["mf_input"] = ns["mf_input"]
        tnet.io.namespace["pc_target"] = ns["pc_target"]
        tnet.pf_pc.lr_scale = 0.0
        tnet.mli_pc.lr_scale_inh = 0.0
        tnet.mf.noise_seed = int(noise_seed) % (2**31)
        tnet.io.noise_seed = int(noise_seed) % (2**31)
        groups = {"mf": tnet.mf, "grc": tnet.grc, "goc": tnet.groups["goc"], "mli": tnet.groups["mli"], "io": tnet.io}
        monitors = {pop: b2.SpikeMonitor(g, name=f"olive_spikes_{pop}") for pop, g in groups.items()}
        tnet.net.add(*monitors.values())
        tnet.net.run(cfg.window_ms * b2.ms)
        w_after = np.asarray(tnet.pf_pc.w_[:]).reshape(conn.n_grc, conn.n_pc)
        if not np.array_equal(w_after, np.asarray(weights, dtype=np.float64)):
            raise RuntimeError("PF-PC weights changed with plasticity scaled to zero")
        if not np.array_equal(np.asarray(tnet.mli_pc.w_inh_[:]), np.asarray(conn.mli_pc_w, dtype=np.float64)):
            raise RuntimeError("MLI-PC weights changed with plasticity scaled to zero")
        trains = {pop: (np.asarray(m.i[:], dtype=np.int32), np.asarray(m.t_[:]) * 1000.0) for pop, m in monitors.items()}
        trains["pc"] = (np.asarray(tnet.pc_spikes.i[:], dtype=np.int32), np.asarray(tnet.pc_spikes.t_[:]) * 1000.0)
        trains["cf"] = trains.pop("io")
        out.append(trains)
    return out
