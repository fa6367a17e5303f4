"""The spiking cerebellum in Brian2: connectivity, equations and network builders.

Populations (per copy of the network)
-------------------------------------
MF   mossy fibres, one per input feature, Poisson: ``rate = r_min + x (r_max - r_min)``.
GrC  granule cells, LIF with delta EPSPs from exactly K mossy fibres and a slow inhibitory
     current from Golgi cells::

         dv/dt  = (v_rest - v - g_inh) / tau_m
         dg_inh/dt = -g_inh / tau_inh            (Golgi spike: g_inh += w_goc_grc)

GoC  Golgi cells, LIF with tonic drive, excited by mossy fibres (feed-forward) and parallel
     fibres (feedback), inhibiting granule cells::

         dv/dt = (v_rest + drive - v) / tau_m

PC   Purkinje cells, ``pc_per_class`` per class, LIF with tonic drive (spontaneous firing).
     Each parallel-fibre spike moves the PC by ``j_pf (w - w_mli)``: the plastic excitatory
     PF synapse (w in [0, w_max]) together with the fixed feed-forward inhibition that the same
     PF spike recruits through molecular-layer interneurons (lumped, no delay), so that the
     effective readout weight is signed.
IO   inferior olive (training only), one cell per PC, Poisson at
     ``clip(cf_base + s cf_gain (r - r_target), 0, cf_max)`` with ``r`` the PC's rate trace
     (tau 20 ms), ``r_target`` high for the labelled class and low otherwise, and ``s = +1``
     (``ltd='cf'``) or ``-1`` (``ltd='none'``).

Plasticity (training only), on the PF-PC synapse, with ``x`` the presynaptic PF
eligibility trace (``dx/dt = -x / tau_elig``, ``x += 1`` per GrC spike)::

    ltd='cf':   PF spike:  w += a_ltp          CF event:  w -= a_ltd x
    ltd='none': PF spike:  w -= a_ltp          CF event:  w += a_ltd x

clipped to [0, w_max], with ``a_ltd = a_ltp / (cf_base tau_elig)`` so that LTP and LTD
balance at the baseline climbing-fibre rate (a spiking delta rule).

Readout and sign convention
---------------------------
The score of class c is the mean spike count of its Purkinje cells over the presentation
window divided by the window (Hz): *higher Purkinje firing = more evidence for the class*; the
prediction is the arg-max. (In the real circuit Purkinje cells inhibit the deep nuclei, so the
nuclear output would carry the opposite sign.)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np

from models.spiking.params import SpikingConfig

log = logging.getLogger(__name__)

__all__ = ["Connectivity", "make_connectivity", "initial_weights", "InferenceNet", "build_inference_net", "TrainingNet", "build_training_net"]


@dataclass(frozen=True)
class Connectivity:
    """Index arrays of one copy of the network (presynaptic ``*_i``, postsynaptic ``*_j``)."""

    n_mf: int
    n_grc: int
    n_goc: int
    n_pc: int
    n_classes: int
    mf_grc_i: np.ndarray
    mf_grc_j: np.ndarray
    mf_goc_i: np.ndarray
    mf_goc_j: np.ndarray
    grc_goc_i: np.ndarray
    grc_goc_j: np.ndarray
    goc_grc_i: np.ndarray
    goc_grc_j: np.ndarray

    ARRAYS = ("mf_grc_i", "mf_grc_j", "mf_goc_i", "mf_goc_j", "grc_goc_i", "grc_goc_j", "goc_grc_i", "goc_grc_j")
    SIZES = ("n_mf", "n_grc", "n_goc", "n_pc", "n_classes")

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {f"conn_{name}": np.asarray(getattr(self, name), dtype=np.int32) for name in self.ARRAYS}
        out.update({f"conn_{name}": np.int64(getattr(self, name)) for name in self.SIZES})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> "Connectivity":
        kw = {name: np.asarray(arrays[f"conn_{name}"], dtype=np.int32) for name in cls.ARRAYS}
        kw.update({name: int(arrays[f"conn_{name}"]) for name in cls.SIZES})
        return cls(**kw)

    def fan_in_grc(self) -> np.ndarray:
        """Number of MF synapses on each granule cell, shape ``(n_grc,)``."""
        return np.bincount(self.mf_grc_j, minlength=self.n_grc)


def _choose_k(rng: np.random.Generator, n_pre: int, n_post: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each postsynaptic cell gets exactly ``k`` distinct presynaptic cells."""
    if k > n_pre:
        raise ValueError(f"cannot choose {k} distinct inputs out of {n_pre}")
    if k == n_pre:
        pre = np.tile(np.arange(n_pre), n_post)
    else:
        # argsort of uniform keys: k distinct indices per row, vectorised
        keys = rng.random((n_post, n_pre))
        pre = np.argpartition(keys, k - 1, axis=1)[:, :k].ravel()
    post = np.repeat(np.arange(n_post), k)
    return pre.astype(np.int32), post.astype(np.int32)


def _bernoulli(rng: np.random.Generator, n_pre: int, n_post: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    mask = rng.random((n_pre, n_post)) < p
    pre, post = np.nonzero(mask)
    return pre.astype(np.int32), post.astype(np.int32)


def make_connectivity(cfg: SpikingConfig, n_inputs: int, n_classes: int, seed: int) -> Connectivity:
    """Draw the fixed random wiring of one network from ``seed``."""
    from core.errors import ConfigError

    if cfg.k > n_inputs:
        raise ConfigError(f"model.k = {cfg.k} exceeds the number of mossy fibres (inputs) {n_inputs}")
    rng = np.random.default_rng([seed, 1])
    n_grc, n_goc = cfg.width, cfg.n_goc
    mf_grc = _choose_k(rng, n_inputs, n_grc, cfg.k)
    mf_goc = _bernoulli(rng, n_inputs, n_goc, cfg.p_mf_goc)
    p_pf = min(1.0, cfg.pf_per_goc / n_grc)
    grc_goc = _bernoulli(rng, n_grc, n_goc, p_pf)
    goc_grc = _choose_k(rng, n_goc, n_grc, min(cfg.goc_per_grc, n_goc)) if cfg.goc_per_grc else (np.zeros(0, np.int32),) * 2
    return Connectivity(
        n_mf=n_inputs, n_grc=n_grc, n_goc=n_goc, n_pc=cfg.pc_per_class * n_classes, n_classes=n_classes,
        mf_grc_i=mf_grc[0], mf_grc_j=mf_grc[1], mf_goc_i=mf_goc[0], mf_goc_j=mf_goc[1],
        grc_goc_i=grc_goc[0], grc_goc_j=grc_goc[1], goc_grc_i=goc_grc[0], goc_grc_j=goc_grc[1],
    )


def initial_weights(cfg: SpikingConfig, conn: Connectivity, seed: int) -> np.ndarray:
    """Initial PF-PC weights, shape ``(n_grc, n_pc)``: ``w_init`` plus uniform jitter."""
    rng = np.random.default_rng([seed, 2])
    w = cfg.w_init + cfg.w_init_jitter * (2 * rng.random((conn.n_grc, conn.n_pc)) - 1)
    return np.clip(w, 0.0, cfg.w_max)


def pc_class(conn: Connectivity) -> np.ndarray:
    """Class of each Purkinje cell, shape ``(n_pc,)``: cells ``c*m ... c*m+m-1`` code class c."""
    return np.repeat(np.arange(conn.n_classes), conn.n_pc // conn.n_classes)


# ============================================================================ Brian2 parts
def _namespace(b2, cfg: SpikingConfig) -> dict:
    """Every constant the equations use, with Brian2 units; names are unique per population
    (a synapse constant named like ``tau_pre`` would be read as a presynaptic variable)."""
    from models.spiking.noise import brian2_function

    ms, mV, Hz = b2.ms, b2.mV, b2.Hz
    return {
        "mf_uniform": brian2_function(b2),
        "grc_tau": cfg.grc_tau_m_ms * ms, "grc_vrest": cfg.grc_v_rest_mv * mV,
        "grc_vth": cfg.grc_v_thresh_mv * mV, "grc_vreset": cfg.grc_v_reset_mv * mV,
        "inh_tau": cfg.tau_goc_grc_ms * ms, "elig_tau": cfg.tau_elig_ms * ms,
        "goc_tau": cfg.goc_tau_m_ms * ms, "goc_vrest": cfg.goc_v_rest_mv * mV,
        "goc_vth": cfg.goc_v_thresh_mv * mV, "goc_vreset": cfg.goc_v_reset_mv * mV, "goc_drive": cfg.goc_drive_mv * mV,
        "pc_tau": cfg.pc_tau_m_ms * ms, "pc_vrest": cfg.pc_v_rest_mv * mV,
        "pc_vth": cfg.pc_v_thresh_mv * mV, "pc_vreset": cfg.pc_v_reset_mv * mV, "pc_drive": cfg.pc_drive_mv * mV,
        "rate_tau": cfg.pc_rate_tau_ms * ms,
        "w_mf_grc": cfg.w_mf_grc_mv * mV, "w_mf_goc": cfg.w_mf_goc_mv * mV, "w_grc_goc": cfg.w_grc_goc_mv * mV,
        "w_goc_grc": cfg.w_goc_grc_mv * mV, "j_pf": cfg.j_pf_scaled_mv * mV, "w_mli": cfg.w_mli, "w_max": cfg.w_max,
        "cf_base": cfg.cf_base_hz * Hz, "cf_gain": cfg.cf_gain, "cf_max": cfg.cf_max_hz * Hz,
    }


GRC_EQS = """
dv/dt = (grc_vrest - v - g_inh) / grc_tau : volt
dg_inh/dt = -g_inh / inh_tau : volt
"""
GRC_TRACE_EQS = "dx_pf/dt = -x_pf / elig_tau : 1\n"
GOC_EQS = "dv/dt = (goc_vrest + goc_drive - v) / goc_tau : volt\n"
PC_EQS = "dv/dt = (pc_vrest + pc_drive - v) / pc_tau : volt\n"
PC_TRAIN_EQS = """
dr/dt = -r / rate_tau : Hz
cf_flag : 1
"""


def _offsets(i: np.ndarray, j: np.ndarray, n_pre: int, n_post: int, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicate one copy's synapses ``copies`` times with index offsets per copy."""
    b = np.arange(copies, dtype=np.int64)[:, None]
    return (i[None, :] + b * n_pre).ravel(), (j[None, :] + b * n_post).ravel()


MF_EQS = """
slot : integer (constant)
fibre : integer (constant)
noise_seed : integer (shared)
t_call : second (shared)
"""


def _core_groups(b2, cfg: SpikingConfig, conn: Connectivity, copies: int, mf_threshold: str, mf_model: str,
                 train: bool, ns: dict, dt):
    """MF, GrC, GoC, PC groups and the fixed synapses, ``copies`` independent copies.

    A mossy fibre spikes when ``mf_uniform(noise_seed, slot, fibre, step) < rate dt`` (see
    :mod:`models.spiking.noise`); ``t_call`` marks step 0 of the current call.
    """
    mf = b2.NeuronGroup(conn.n_mf * copies, MF_EQS + mf_model, threshold=mf_threshold, reset="", dt=dt, namespace=ns, name="mf")
    mf.fibre = np.tile(np.arange(conn.n_mf), copies)
    grc_eqs = GRC_EQS + (GRC_TRACE_EQS if train else "")
    grc = b2.NeuronGroup(conn.n_grc * copies, grc_eqs, threshold="v > grc_vth",
                         reset="v = grc_vreset" + ("; x_pf += 1" if train else ""),
                         method="exact", dt=dt, namespace=ns, name="grc")
    goc = b2.NeuronGroup(conn.n_goc * copies, GOC_EQS, threshold="v > goc_vth", reset="v = goc_vreset",
                         method="exact", dt=dt, namespace=ns, name="goc")
    pc_eqs = PC_EQS + (PC_TRAIN_EQS if train else "")
    pc_kw = {"events": {"cf": "cf_flag > 0.5"}} if train else {}
    pc = b2.NeuronGroup(conn.n_pc * copies, pc_eqs, threshold="v > pc_vth",
                        reset="v = pc_vreset" + ("; r += 1 / rate_tau" if train else ""),
                        method="exact", dt=dt, namespace=ns, name="pc", **pc_kw)
    for g, vr in ((grc, cfg.grc_v_rest_mv), (goc, cfg.goc_v_rest_mv), (pc, cfg.pc_v_rest_mv)):
        g.v = vr * b2.mV
    syn = []
    for name, pre, post, i, j, n_pre, n_post, code in (
        ("mf_grc", mf, grc, conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, conn.n_grc, "v_post += w_mf_grc"),
        ("mf_goc", mf, goc, conn.mf_goc_i, conn.mf_goc_j, conn.n_mf, conn.n_goc, "v_post += w_mf_goc"),
        ("grc_goc", grc, goc, conn.grc_goc_i, conn.grc_goc_j, conn.n_grc, conn.n_goc, "v_post += w_grc_goc"),
        ("goc_grc", goc, grc, conn.goc_grc_i, conn.goc_grc_j, conn.n_goc, conn.n_grc, "g_inh_post += w_goc_grc"),
    ):
        s = b2.Synapses(pre, post, on_pre=code, dt=dt, namespace=ns, name=name)
        ii, jj = _offsets(i, j, n_pre, n_post, copies)
        if len(ii):
            s.connect(i=ii, j=jj)
        syn.append(s)
    return mf, grc, goc, pc, syn


def _dense_pf_pc(conn: Connectivity, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """All-to-all PF-PC indices (GrC-major, then PC), replicated per copy."""
    i = np.repeat(np.arange(conn.n_grc, dtype=np.int64), conn.n_pc)
    j = np.tile(np.arange(conn.n_pc, dtype=np.int64), conn.n_grc)
    return _offsets(i, j, conn.n_grc, conn.n_pc, copies)


@dataclass
class InferenceNet:
    """A built inference network of ``copies`` independent copies (plasticity off)."""

    net: object
    mf: object
    grc: object
    goc: object
    pc: object
    pf_pc: object
    counters: dict
    recorders: dict
    copies: int
    conn: Connectivity
    cfg: SpikingConfig


def build_inference_net(cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, copies: int, dt_ms: float,
                        record: tuple[str, ...] = ()) -> InferenceNet:
    """Build ``copies`` copies of the trained network for evaluation.

    Mossy-fibre rates are a per-fibre variable ``rate`` (Hz) set before each run; spike counts
    of every population are kept (``SpikeMonitor(record=False)``); full spike trains only for
    the populations named in ``record``.
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    ns = _namespace(b2, cfg)
    dt = dt_ms * b2.ms
    mf, grc, goc, pc, syn = _core_groups(
        b2, cfg, conn, copies, "mf_uniform(noise_seed, slot, fibre, timestep(t - t_call, dt)) < rate * dt",
        "rate : Hz", False, ns, dt)
    pf_pc = b2.Synapses(grc, pc, "weff : volt", on_pre="v_post += weff", dt=dt, namespace=ns, name="pf_pc")
    ii, jj = _dense_pf_pc(conn, copies)
    pf_pc.connect(i=ii, j=jj)
    set_inference_weights(pf_pc, cfg, weights, copies)
    counters = {name: b2.SpikeMonitor(g, record=False, name=f"count_{name}") for name, g in
                (("mf", mf), ("grc", grc), ("goc", goc), ("pc", pc))}
    recorders = {name: b2.SpikeMonitor(g, name=f"spikes_{name}") for name, g in
                 (("mf", mf), ("grc", grc), ("goc", goc), ("pc", pc)) if name in record}
    net = b2.Network(mf, grc, goc, pc, *syn, pf_pc, *counters.values(), *recorders.values())
    return InferenceNet(net, mf, grc, goc, pc, pf_pc, counters, recorders, copies, conn, cfg)


def set_inference_weights(pf_pc, cfg: SpikingConfig, weights: np.ndarray, copies: int) -> None:
    """Load PF-PC weights ``(n_grc, n_pc)`` into every copy as effective PSPs ``j_pf (w - w_mli)``."""
    eff = cfg.j_pf_scaled_mv * 1e-3 * (np.asarray(weights, dtype=np.float64).ravel() - cfg.w_mli)
    pf_pc.weff_[:] = np.tile(eff, copies)


@dataclass
class TrainingNet:
    net: object
    mf: object
    grc: object
    pc: object
    io: object
    pf_pc: object
    pc_spikes: object
    grc_count: object
    conn: Connectivity
    cfg: SpikingConfig


def build_training_net(cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, n_samples: int,
                       window_ms: float, dt_ms: float) -> TrainingNet:
    """One copy of the network with climbing-fibre-driven PF-PC plasticity switched on.

    Inputs are given per epoch through two TimedArrays named ``mf_input`` (Hz, shape
    ``(n_samples, n_mf)``) and ``pc_target`` (Hz, ``(n_samples, n_pc)``) indexed by
    ``t - t_call``; see :func:`epoch_namespace`.
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    ns = _namespace(b2, cfg)
    dt = dt_ms * b2.ms
    mf, grc, goc, pc, syn = _core_groups(
        b2, cfg, conn, 1, "mf_uniform(noise_seed, 0, fibre, timestep(t - t_call, dt)) < mf_input(t - t_call, i) * dt",
        "", True, ns, dt)
    sign = 1.0 if cfg.ltd == "cf" else -1.0
    io_ns = dict(ns, cf_sign=sign)
    io = b2.NeuronGroup(conn.n_pc, "r_pc : Hz (linked)\nnoise_seed : integer (shared)\nt_call : second (shared)",
                        threshold="mf_uniform(noise_seed, -1, i, timestep(t - t_call, dt)) < "
                                  "clip(cf_base + cf_sign * cf_gain * (r_pc - pc_target(t - t_call, i)), 0*Hz, cf_max) * dt",
                        dt=dt, namespace=io_ns, name="io")
    io.r_pc = b2.linked_var(pc, "r")
    cf = b2.Synapses(io, pc, on_pre="cf_flag_post = 1", dt=dt, namespace=ns, name="cf")
    cf.connect(j="i")
    pc.run_on_event("cf", "cf_flag = 0")
    if cfg.ltd == "cf":
        pre_dw, cf_dw = cfg.a_ltp, -cfg.a_ltd
    else:
        pre_dw, cf_dw = -cfg.a_ltp, cfg.a_ltd
    syn_ns = dict(ns, pre_dw=pre_dw, cf_dw=cf_dw)
    pf_pc = b2.Synapses(
        grc, pc, "w : 1",
        on_pre="v_post += j_pf * (w - w_mli)\nw = clip(w + pre_dw, 0, w_max)",
        on_post="w = clip(w + cf_dw * x_pf_pre, 0, w_max)",
        on_event={"pre": "spike", "post": "cf"}, dt=dt, namespace=syn_ns, name="pf_pc")
    ii, jj = _dense_pf_pc(conn, 1)
    pf_pc.connect(i=ii, j=jj)
    pf_pc.w_[:] = np.asarray(weights, dtype=np.float64).ravel()
    pc_spikes = b2.SpikeMonitor(pc, name="train_pc_spikes")
    grc_count = b2.SpikeMonitor(grc, record=False, name="train_grc_count")
    net = b2.Network(mf, grc, goc, pc, io, cf, *syn, pf_pc, pc_spikes, grc_count)
    return TrainingNet(net, mf, grc, pc, io, pf_pc, pc_spikes, grc_count, conn, cfg)


def epoch_namespace(b2, x: np.ndarray, targets_hz: np.ndarray, cfg: SpikingConfig, window_ms: float) -> dict:
    """TimedArrays for one epoch: MF rates from inputs ``x`` ``(n, n_mf)`` and PC targets ``(n, n_pc)``."""
    rates = cfg.mf_rate_min_hz + np.asarray(x, dtype=np.float64) * (cfg.mf_rate_max_hz - cfg.mf_rate_min_hz)
    return {
        "mf_input": b2.TimedArray(rates * b2.Hz, dt=window_ms * b2.ms, name="mf_input"),
        "pc_target": b2.TimedArray(np.asarray(targets_hz, dtype=np.float64) * b2.Hz, dt=window_ms * b2.ms, name="pc_target"),
    }
