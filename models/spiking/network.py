"""The spiking cerebellum in Brian2: connectivity, equations and network builders.

Populations (per copy of the network)
-------------------------------------
MF   mossy fibres, one per input feature, Poisson: ``rate = r_min + x (r_max - r_min)``.
GrC  granule cells, LIF with delta EPSPs from exactly K mossy fibres and a slow inhibitory
     current from Golgi cells::

         dv/dt  = (v_rest - g_tonic - v - g_inh) / tau_m
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
prediction is the arg-max. Spike counts tie: the prediction is then the lowest tied class index
(numpy's ``argmax``), and an input that silences every Purkinje cell is read as class 0; the
attack suite reports how many adversarials sit on such a tie. (In the real circuit Purkinje cells
inhibit the deep nuclei, so the nuclear output would carry the opposite sign.)

At evaluation the olive is absent (plasticity is off); :func:`simulate_with_olive` runs an input
through the training network with the olive on and plasticity scaled to zero, to show the
climbing-fibre response an input would evoke.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np

from models.spiking.params import SpikingConfig

log = logging.getLogger(__name__)

__all__ = ["Connectivity", "make_connectivity", "initial_weights", "pc_class", "InferenceNet", "build_inference_net",
           "set_inference_weights", "run_inference_chunks", "TrainingNet", "build_training_net", "epoch_namespace",
           "simulate_with_olive"]


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
        "grc_tau": cfg.grc_tau_m_ms * ms, "grc_tonic": cfg.grc_tonic_inh_mv * mV, "grc_vrest": cfg.grc_v_rest_mv * mV,
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
dv/dt = (grc_vrest - grc_tonic - v - g_inh) / grc_tau : volt
dg_inh/dt = -g_inh / inh_tau : volt
"""
GRC_TRACE_EQS = "dx_pf/dt = -x_pf / elig_tau : 1\n"
GOC_EQS = "dv/dt = (goc_vrest + goc_drive - v) / goc_tau : volt\n"
PC_EQS = "dv/dt = (pc_vrest + pc_drive - v) / pc_tau : volt\n"
PC_TRAIN_EQS = """
dr/dt = -r / rate_tau : Hz
cf_flag : 1
"""


def _clocks(b2, dt_ms: float, window_ms: float):
    """The simulation step clock and the presentation-window clock of one network, with fixed names.

    Brian2 names a clock it creates for a group after the clocks already alive in the process
    (``mf_clock``, then ``mf_clock_1``, ...), and the name is part of the generated code, so a
    second network built in one process would compile all its code again. Explicit names keep
    the code of every network the same (Brian2 only requires names to be unique within a network).
    """
    return (b2.Clock(dt=dt_ms * b2.ms, name="cereb_step_clock"),
            b2.Clock(dt=window_ms * b2.ms, name="cereb_window_clock"))


def _offsets(i: np.ndarray, j: np.ndarray, n_pre: int, n_post: int, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicate one copy's synapses ``copies`` times with index offsets per copy."""
    b = np.arange(copies, dtype=np.int64)[:, None]
    return (i[None, :] + b * n_pre).ravel(), (j[None, :] + b * n_post).ravel()


MF_EQS = """
slot : integer
fibre : integer (constant)
noise_seed : integer (shared)
t_call : second (shared)
"""


def _core_groups(b2, cfg: SpikingConfig, conn: Connectivity, copies: int, mf_threshold: str, mf_model: str,
                 train: bool, ns: dict, clock, inference: bool = False):
    """MF, GrC, GoC, PC groups and the fixed synapses, ``copies`` independent copies.

    A mossy fibre spikes when ``mf_uniform(noise_seed, slot, fibre, step) < rate dt`` (see
    :mod:`models.spiking.noise`); ``t_call`` marks step 0 of the current call.
    """
    mf = b2.NeuronGroup(conn.n_mf * copies, MF_EQS + mf_model, threshold=mf_threshold, reset="", clock=clock, namespace=dict(ns), name="mf")
    mf.fibre = np.tile(np.arange(conn.n_mf), copies)
    inf_eqs = "nspk : integer\nscratch : 1\nt_call : second (shared)\n" if inference else ""
    grc_eqs = GRC_EQS + (GRC_TRACE_EQS if train else "") + inf_eqs
    grc_reset = "v = grc_vreset" + ("; x_pf += 1" if train else "") + ("; nspk += 1; scratch = pf_to_pc(i, n_grc_copy, n_pc_copy)" if inference else "")
    grc_dtype = {"v": np.dtype(cfg.grc_state_dtype), "g_inh": np.dtype(cfg.grc_state_dtype)}
    grc = b2.NeuronGroup(conn.n_grc * copies, grc_eqs, threshold="v > grc_vth", reset=grc_reset,
                         method="exact", clock=clock, namespace=dict(ns), name="grc", dtype=grc_dtype)
    goc = b2.NeuronGroup(conn.n_goc * copies, GOC_EQS + inf_eqs, threshold="v > goc_vth",
                         reset="v = goc_vreset" + ("; nspk += 1" if inference else ""),
                         method="exact", clock=clock, namespace=dict(ns), name="goc")
    pc_eqs = PC_EQS + (PC_TRAIN_EQS if train else "") + inf_eqs
    pc_kw = {"events": {"cf": "cf_flag > 0.5"}} if train else {}
    pc = b2.NeuronGroup(conn.n_pc * copies, pc_eqs, threshold="v > pc_vth",
                        reset="v = pc_vreset" + ("; r += 1 / rate_tau" if train else "")
                        + ("; nspk += int(timestep(t - t_call, dt) % chunk_steps >= readout_steps)" if inference else ""),
                        method="exact", clock=clock, namespace=dict(ns), name="pc", **pc_kw)
    grc.resetter["spike"].order = -1  # PF input lands before a PC reset of the same step, as with Synapses
    for g, vr in ((grc, cfg.grc_v_rest_mv), (goc, cfg.goc_v_rest_mv), (pc, cfg.pc_v_rest_mv)):
        g.v = vr * b2.mV
    syn = []
    for name, pre, post, i, j, n_pre, n_post, code in (
        ("mf_grc", mf, grc, conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, conn.n_grc, "v_post += w_mf_grc"),
        ("mf_goc", mf, goc, conn.mf_goc_i, conn.mf_goc_j, conn.n_mf, conn.n_goc, "v_post += w_mf_goc"),
        ("grc_goc", grc, goc, conn.grc_goc_i, conn.grc_goc_j, conn.n_grc, conn.n_goc, "v_post += w_grc_goc"),
        ("goc_grc", goc, grc, conn.goc_grc_i, conn.goc_grc_j, conn.n_goc, conn.n_grc, "g_inh_post += w_goc_grc"),
    ):
        s = b2.Synapses(pre, post, on_pre=code, clock=clock, namespace=ns, name=name)
        ii, jj = _offsets(i, j, n_pre, n_post, copies)
        if len(ii):
            s.connect(i=ii, j=jj)
        else:
            s.active = False  # e.g. goc_per_grc = 0: Brian2 refuses to run a Synapses object without synapses
        syn.append(s)
    return mf, grc, goc, pc, syn


def _dense_pf_pc(conn: Connectivity, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """All-to-all PF-PC indices (GrC-major, then PC), replicated per copy."""
    i = np.repeat(np.arange(conn.n_grc, dtype=np.int64), conn.n_pc)
    j = np.tile(np.arange(conn.n_pc, dtype=np.int64), conn.n_grc)
    return _offsets(i, j, conn.n_grc, conn.n_pc, copies)


# Compiled helpers of the inference network. Sizes are arguments (constants of the calling
# group's namespace), never part of the code, so one compiled module serves every network size
# and every number of copies.
PF_PC_CYTHON = """
cdef double pf_to_pc(int i, int n_grc, int n_pc):
    global _namespace_pfpc_weff, _namespace_pfpc_v
    cdef int copy = i // n_grc
    cdef int k
    cdef double *w = _namespace_pfpc_weff + (i - copy * n_grc) * n_pc
    cdef double *v = _namespace_pfpc_v + copy * n_pc
    for k in range(n_pc):
        v[k] += w[k]
    return 0.0
"""

STASH_CYTHON = """
cdef double stash_%POP%(int i, int chunk, int n, int row, int max_chunks):
    global _namespace_counts_%POP%
    if chunk >= 0 and chunk < max_chunks:  # bounds-checked: a stale t_call must not write out of range
        _namespace_counts_%POP%[chunk * row + i] = n
    return 0.0
"""

RATE_LOOKUP_CYTHON = """
cdef double mf_rate_lookup(int i, int chunk, int row, int max_chunks):
    global _namespace_mf_rate_table
    if chunk < 0 or chunk >= max_chunks:
        return 0.0
    return _namespace_mf_rate_table[chunk * row + i]
"""

SLOT_LOOKUP_CYTHON = """
cdef int mf_slot_lookup(int i, int chunk, int copies, int n_mf, int max_chunks):
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


@dataclass
class InferenceNet:
    """A built inference network of ``copies`` copies, simulating up to ``max_chunks`` chunks of
    ``copies`` queries per ``run`` (plasticity off).

    Buffers shared with the compiled code: ``rate_table`` ``(max_chunks, copies * n_mf)`` Hz,
    ``slot_table`` ``(max_chunks, copies)``, ``counts[pop]`` ``(max_chunks, copies * n_pop)``,
    ``pf_weff`` ``(n_grc * n_pc,)`` volt.
    """

    net: object
    groups: dict
    rate_table: np.ndarray
    slot_table: np.ndarray
    counts: dict
    pf_weff: np.ndarray
    recorders: dict
    copies: int
    max_chunks: int
    window_ms: float
    conn: Connectivity
    cfg: SpikingConfig


def build_inference_net(cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, copies: int, dt_ms: float,
                        window_ms: float, max_chunks: int = 10, record: tuple[str, ...] = ()) -> InferenceNet:
    """Build ``copies`` copies of the trained network for evaluation (plasticity off).

    One ``run`` of ``n_chunks * window_ms`` simulates ``n_chunks`` chunks back to back: at each
    chunk boundary a ``run_regularly`` operation stores the spike counts of the chunk that ended,
    resets every membrane and synaptic state to rest, and loads the next chunk's mossy-fibre
    rates and noise slots. The PF-PC projection is :func:`_pf_pc_projection`. Spike trains are
    recorded (``SpikeMonitor``) only for the populations named in ``record``.
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    ns = _namespace(b2, cfg)
    ns["chunk_dt"] = window_ms * b2.ms
    # PC spikes count from this step of each chunk on; whole steps, because a float test like
    # (t - t_call) % chunk_dt >= readout_start flips with rounding at the boundary step, so the
    # same query would get other counts in another chunk or call
    ns["readout_steps"] = int(np.ceil(cfg.readout_start_ms / dt_ms - 1e-9))
    ns["chunk_steps"] = int(round(window_ms / dt_ms))  # noise step counts from each chunk's start
    if abs(ns["chunk_steps"] * dt_ms - window_ms) > 1e-9:
        raise ValueError(f"window_ms={window_ms} must be a whole number of steps of dt_ms={dt_ms}")
    clock, window_clock = _clocks(b2, dt_ms, window_ms)
    chunk = "int((t - t_call) / chunk_dt + 0.5)"
    mf, grc, goc, pc, syn = _core_groups(
        b2, cfg, conn, copies, "mf_uniform(noise_seed, slot, fibre, timestep(t - t_call, dt) % chunk_steps) < rate * dt",
        "rate : Hz", False, ns, clock, inference=True)
    groups = {"mf": mf, "grc": grc, "goc": goc, "pc": pc}
    sizes = {"grc": conn.n_grc, "goc": conn.n_goc, "pc": conn.n_pc}
    rate_table = np.zeros((max_chunks, copies * conn.n_mf))
    slot_table = np.zeros((max_chunks, copies), dtype=np.int32)
    counts = {pop: np.zeros((max_chunks, copies * n), dtype=np.int32) for pop, n in sizes.items()}
    pf_weff = np.zeros(conn.n_grc * conn.n_pc)
    sizes_ns = {"max_chunks": max_chunks, "n_copies": copies, "n_mf_copy": conn.n_mf, "mf_row": copies * conn.n_mf,
                "n_grc_copy": conn.n_grc, "n_pc_copy": conn.n_pc}
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
    grc.namespace["pf_to_pc"] = _cython_function(
        b2, "pf_to_pc", PF_PC_CYTHON, {"_pfpc_weff": pf_weff, "_pfpc_v": pc.variables["v"].get_value()},
        ints("i", "n_grc", "n_pc"), "float")
    rest = {"grc": "v = grc_vrest\ng_inh = 0*volt", "goc": "v = goc_vrest", "pc": "v = pc_vrest"}
    for pop, n in sizes.items():
        g = groups[pop]
        g.namespace[f"{pop}_row"] = copies * n
        g.namespace[f"stash_{pop}"] = _cython_function(
            b2, f"stash_{pop}", STASH_CYTHON.replace("%POP%", pop), {f"_counts_{pop}": counts[pop].reshape(-1)},
            ints("i", "chunk", "n", "row", "max_chunks"), "float")
        g.run_regularly(f"scratch = stash_{pop}(i, {chunk} - 1, nspk, {pop}_row, max_chunks)\nnspk = 0\n{rest[pop]}",
                        clock=window_clock, when="start", name=f"{pop}_chunk")
    recorders = {name: b2.SpikeMonitor(groups[name], name=f"spikes_{name}") for name in groups if name in record}
    net = b2.Network(*groups.values(), *syn, *recorders.values())
    inet = InferenceNet(net, groups, rate_table, slot_table, counts, pf_weff, recorders, copies, max_chunks,
                        window_ms, conn, cfg)
    set_inference_weights(inet, weights)
    return inet


def set_inference_weights(inet: "InferenceNet", weights: np.ndarray) -> None:
    """Load PF-PC weights ``(n_grc, n_pc)`` as effective PSPs ``j_pf (w - w_mli)`` (volt)."""
    cfg = inet.cfg
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (inet.conn.n_grc, inet.conn.n_pc):
        raise ValueError(f"weights must have shape {(inet.conn.n_grc, inet.conn.n_pc)}, got {w.shape}")
    inet.pf_weff[:] = cfg.j_pf_scaled_mv * 1e-3 * (w.ravel() - cfg.w_mli)


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
    for grp in g.values():
        grp.t_call_[:] = t0
    g["mf"].noise_seed_[:] = int(noise_seed) % (2**31)
    nspk = {k: len(m.i) for k, m in inet.recorders.items()}
    inet.net.run(n_chunks * inet.window_ms * b2.ms)
    sizes = {"grc": conn.n_grc, "goc": conn.n_goc, "pc": conn.n_pc}
    counts = {}
    for pop, size in sizes.items():
        c = inet.counts[pop]
        c[n_chunks - 1] = g[pop].nspk_[:]  # the last chunk has no boundary after it
        counts[pop] = c[:n_chunks].reshape(n_chunks * B, size)[:n].copy()
    spikes = {}
    for pop, mon in inet.recorders.items():
        i = np.asarray(mon.i[:])[nspk[pop]:]
        t = (np.asarray(mon.t_[:])[nspk[pop]:] - t0) * 1000.0
        size = sizes.get(pop, conn.n_mf)
        chunk_of = np.minimum((t // inet.window_ms).astype(np.int64), n_chunks - 1)
        query = chunk_of * B + i // size
        t_in = t - chunk_of * inet.window_ms
        spikes[pop] = [(i[query == q] - (q % B) * size, t_in[query == q]) for q in range(n)]
    return counts, spikes


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

    Samples are presented back to back for ``window_ms`` each; every sample starts from rest
    (as in evaluation). The olive and PF-alone LTP are active from ``teach_delay_ms`` after
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
    clock, window_clock = _clocks(b2, dt_ms, window_ms)
    mf, grc, goc, pc, syn = _core_groups(
        b2, cfg, conn, 1, "mf_uniform(noise_seed, 0, fibre, timestep(t - t_call, dt)) < mf_input(t - t_call, i) * dt",
        "", True, ns, clock)
    # every sample starts from rest, as in evaluation
    sample = dict(clock=window_clock, when="start")
    grc.run_regularly("v = grc_vrest\ng_inh = 0*volt\nx_pf = 0", name="grc_sample_reset", **sample)
    goc.run_regularly("v = goc_vrest", name="goc_sample_reset", **sample)
    pc.run_regularly("v = pc_vrest\nr = 0*Hz\ncf_flag = 0", name="pc_sample_reset", **sample)
    teaching = "int(t % sample_dt >= teach_delay)"  # a training run always starts at t = 0
    sign = 1.0 if cfg.ltd == "cf" else -1.0
    io_ns = dict(ns, cf_sign=sign)
    io = b2.NeuronGroup(conn.n_pc, "r_pc : Hz (linked)\nnoise_seed : integer (shared)\nt_call : second (shared)",
                        threshold=f"mf_uniform(noise_seed, -1, i, timestep(t - t_call, dt)) < {teaching} * "
                                  "clip(cf_base + cf_sign * cf_gain * (r_pc - pc_target(t - t_call, i)), 0*Hz, cf_max) * dt",
                        reset="", clock=clock, namespace=io_ns, name="io")
    io.r_pc = b2.linked_var(pc, "r")
    cf = b2.Synapses(io, pc, on_pre="cf_flag_post = 1", clock=clock, namespace=ns, name="cf")
    cf.connect(j="i")
    pc.run_on_event("cf", "cf_flag = 0")
    if cfg.ltd == "cf":
        pre_dw, cf_dw = cfg.a_ltp, -cfg.a_ltd
    else:
        pre_dw, cf_dw = -cfg.a_ltp, cfg.a_ltd
    syn_ns = dict(ns, pre_dw=pre_dw, cf_dw=cf_dw)
    pf_pc = b2.Synapses(
        grc, pc, "w : 1\nlr_scale : 1 (shared)",
        on_pre=f"v_post += j_pf * (w - w_mli)\nw = clip(w + lr_scale * pre_dw * {teaching}, 0, w_max)",
        on_post="w = clip(w + lr_scale * cf_dw * x_pf_pre, 0, w_max)",
        on_event={"pre": "spike", "post": "cf"}, clock=clock, namespace=syn_ns, name="pf_pc")
    ii, jj = _dense_pf_pc(conn, 1)
    pf_pc.connect(i=ii, j=jj)
    pf_pc.w_[:] = np.asarray(weights, dtype=np.float64).ravel()
    pf_pc.lr_scale = 1.0  # scales LTP and LTD together (an annealing schedule across epochs)
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


def simulate_with_olive(cfg: SpikingConfig, conn: Connectivity, weights: np.ndarray, x: np.ndarray, y: np.ndarray,
                        noise_seed: int) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Spike trains of every population, climbing fibres included, for each input presented alone
    with the inferior olive on and plasticity off.

    The network is the training network (:func:`build_training_net`) with the olive teaching
    towards label ``y[q]`` (target rates as in training) and both plasticity amplitudes scaled by
    zero, so the climbing fibres fire as they would during training but no weight changes. Each
    input is its own simulation from rest, whose mossy-fibre noise is that of noise slot 0 of the
    inference engine with the same ``noise_seed``: the mossy fibre, granule, Golgi and Purkinje
    spikes are those of ``SpikingEngine.predict(x, slots=0, seed=noise_seed)`` in frozen mode.

    Parameters
    ----------
    x : ``(n, n_mf)`` inputs in [0, 1]; y : ``(n,)`` labels the olive teaches towards.

    Returns
    -------
    One dict per input: population (``mf``, ``grc``, ``goc``, ``pc``, ``cf``) -> ``(i, t_ms)``,
    ``t_ms`` from the onset of the input.
    """
    from models.spiking.brian import get_brian2

    b2 = get_brian2()
    x = np.asarray(x, dtype=np.float64)
    out = []
    for xq, yq in zip(x, np.asarray(y)):
        tnet = build_training_net(cfg, conn, weights, 1, cfg.window_ms, cfg.dt_ms)
        targets = np.where(pc_class(conn) == int(yq), cfg.target_hz_on, cfg.target_hz_off)[None, :]
        ns = epoch_namespace(b2, xq[None, :], targets, cfg, cfg.window_ms)
        tnet.mf.namespace["mf_input"] = ns["mf_input"]
        tnet.io.namespace["pc_target"] = ns["pc_target"]
        tnet.pf_pc.lr_scale = 0.0
        tnet.mf.noise_seed = int(noise_seed) % (2**31)
        tnet.io.noise_seed = int(noise_seed) % (2**31)
        groups = {"mf": tnet.mf, "grc": tnet.grc, "goc": tnet.net["goc"], "io": tnet.io}
        monitors = {pop: b2.SpikeMonitor(g, name=f"olive_spikes_{pop}") for pop, g in groups.items()}
        tnet.net.add(*monitors.values())
        tnet.net.run(cfg.window_ms * b2.ms)
        w_after = np.asarray(tnet.pf_pc.w_[:]).reshape(conn.n_grc, conn.n_pc)
        if not np.array_equal(w_after, np.asarray(weights, dtype=np.float64)):
            raise RuntimeError("PF-PC weights changed with plasticity scaled to zero")
        trains = {pop: (np.asarray(m.i[:], dtype=np.int32), np.asarray(m.t_[:]) * 1000.0) for pop, m in monitors.items()}
        trains["pc"] = (np.asarray(tnet.pc_spikes.i[:], dtype=np.int32), np.asarray(tnet.pc_spikes.t_[:]) * 1000.0)
        trains["cf"] = trains.pop("io")
        out.append(trains)
    return out
