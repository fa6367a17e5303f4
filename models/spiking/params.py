"""Parameters of the spiking cerebellum, with their sources.

Every default is a plain float whose name carries its unit. Values come from measured biology
where one exists, otherwise from earlier cerebellar models; where a value was tuned here (so
that the network meets the coding-level and spontaneous-rate ranges below) the docstring says so.

Sources
-------
- Chadderton, Margrie & Häusser (2004) Nature 428:856 — granule cells in vivo: ~4 mossy
  fibre inputs, several coincident EPSPs needed to fire, sparse firing.
- D'Angelo et al. (1995) J Physiol 484:397 — granule membrane: fast time constant (a few ms),
  resting potential around -70 mV.
- Eccles, Ito & Szentágothai (1967); Jakab & Hámori (1988) — each granule cell has four
  dendrites (K = 4), one mossy fibre each.
- Rossi & Hamann (1998) Neuron 20:783 — Golgi-cell inhibition of granule cells, phasic and
  slow spillover components (tens of ms).
- Holtzman et al. (2006) J Physiol 574:491 — Golgi cells fire spontaneously at a few Hz.
- Häusser & Clark (1997) Neuron 19:665 — Purkinje cells fire spontaneously at 30-120 Hz.
- Ito (2001) Physiol Rev 81:1143; Coesmans et al. (2004) Neuron 44:691 — parallel fibre +
  climbing fibre gives LTD, parallel fibre alone gives LTP.
- Wang, Denk & Häusser (2000) Nat Neurosci 3:1266; Safo & Regehr (2008) — the eligibility
  window of PF-CF pairing is ~100 ms (cf. the sin-exp kernels of CerebNEST/EDLUT models).
- Armstrong & Rawson (1979); Ito (2001) — climbing fibres fire at ~1-5 Hz spontaneously.
- Marr (1969); Albus (1971) — expansion recoding and the error-driven PF-PC readout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SpikingConfig", "SpikingTrainConfig", "EngineConfig"]

MAX_DEFAULT_COPIES = 200      # default engine batch: the fastest measured on the default network ...
GRC_PER_NETWORK = 400_000     # ... and at most this many granule cells per simulated network (memory)


@dataclass(frozen=True)
class SpikingConfig:
    """Structure and neuron parameters of the spiking cerebellum (``model.*`` keys).

    The three mechanisms of the seed paper are ``width`` (granule cells), ``ltd`` (``cf``:
    climbing-fibre-triggered LTD with PF-alone LTP; ``none``: the documented control in which
    the same olivary error signal is carried by climbing-fibre-triggered *LTP*, with PF-alone
    LTD, so no synapse is ever depressed by a climbing fibre) and ``k`` (mossy fibres per
    granule cell, 1 up to all inputs).
    """

    # --- the three mechanisms
    width: int = 2000                 # granule cells
    k: int = 4                        # MF synapses per GrC (anatomy: 4 dendrites)
    ltd: Literal["cf", "none"] = "cf"
    # --- simulation
    window_ms: float = 100.0          # presentation time per sample (100 ms beat 60 ms by 8 points in a trial)
    dt_ms: float = 0.2                # step; 25 steps per granule membrane time constant, exact integration.
                                      # 0.1 ms gives the same coding level within ~1 point at twice the cost
    grc_state_dtype: Literal["float32", "float64"] = "float32"  # granule v and g_inh: the largest state, so
                                      # float32 halves its memory traffic (+15-20% engine throughput measured);
                                      # on the default digits network all 359 test labels and 99.9997% of the
                                      # granule spike counts were the same as with float64
    # --- mossy fibres (Poisson): rate = mf_rate_min_hz + x (mf_rate_max_hz - mf_rate_min_hz)
    mf_rate_min_hz: float = 5.0       # tonic MF background (Chadderton 2004: a few Hz to tens)
    mf_rate_max_hz: float = 300.0     # sensory-driven MF rates reach hundreds of Hz (up to ~700 Hz; Rancz et al. 2007); tuned
    # --- granule cells (LIF, current-based; D'Angelo 1995)
    grc_tau_m_ms: float = 10.0
    grc_v_rest_mv: float = -70.0
    grc_v_thresh_mv: float = -50.0
    grc_v_reset_mv: float = -70.0
    grc_tonic_inh_mv: float = 80.0    # tonic GABA-A inhibition (extrasynaptic a6/delta receptors; Brickley et al. 1996),
                                      # as its steady voltage equivalent; with w_mf_grc it sets the coding level; tuned
    w_mf_grc_mv: float = 14.0         # EPSP jump per MF spike; several coincident active MFs fire a GrC (Chadderton 2004); tuned
    # --- Golgi cells (LIF) and their inhibition of granule cells (Rossi & Hamann 1998)
    grc_per_goc: int = 100            # one Golgi cell per 100 granule cells (n_goc = ceil(width / grc_per_goc))
    goc_tau_m_ms: float = 20.0
    goc_v_rest_mv: float = -65.0
    goc_v_thresh_mv: float = -50.0
    goc_v_reset_mv: float = -65.0
    goc_drive_mv: float = 8.0         # tonic depolarisation: a few Hz spontaneous firing (Holtzman 2006); tuned
    p_mf_goc: float = 0.2             # fraction of MFs contacting a Golgi cell
    w_mf_goc_mv: float = 1.0
    pf_per_goc: int = 100             # PF inputs per Golgi cell (p = pf_per_goc / width)
    w_grc_goc_mv: float = 0.3
    goc_per_grc: int = 4              # Golgi cells inhibiting each GrC (one per glomerulus/dendrite)
    w_goc_grc_mv: float = 6.0         # inhibitory current jump per Golgi spike; tuned for 5-30% coding level
    tau_goc_grc_ms: float = 20.0      # slow (spillover) GABA-A inhibition (Rossi & Hamann 1998)
    # --- Purkinje cells (LIF with tonic drive; Häusser & Clark 1997)
    pc_per_class: int = 10
    pc_tau_m_ms: float = 10.0
    pc_v_rest_mv: float = -68.0
    pc_v_thresh_mv: float = -55.0
    pc_v_reset_mv: float = -65.0
    pc_drive_mv: float = 15.5         # tonic drive: ~60 Hz spontaneous firing without PF input
    j_pf_mv: float = 0.8              # PSP of a PF at full weight (w = 1) for width 2000; scaled by 2000 / width
    w_mli: float = 0.5                # feed-forward MLI inhibition per PF spike, in units of the PF weight:
                                      # each PF spike moves the PC by j_pf (w - w_mli): a signed readout
    w_init: float = 0.5               # initial PF-PC weight (net zero drive)
    w_init_jitter: float = 0.05       # uniform jitter around w_init
    # --- climbing fibres / inferior olive (training only)
    cf_base_hz: float = 5.0           # olive baseline while a stimulus is on (Armstrong & Rawson 1979: 1-5 Hz)
    cf_gain: float = 0.3              # Hz of CF per Hz of PC rate error
    cf_max_hz: float = 50.0
    pc_rate_tau_ms: float = 20.0      # PC rate trace seen by the olive (via the nucleo-olivary loop)
    target_hz_on: float = 150.0       # desired PC rate for the labelled class
    target_hz_off: float = 20.0       # desired PC rate for the other classes
    teach_delay_ms: float = 20.0      # olive and plasticity on from this time after sample onset (one rate_tau)
    readout_start_ms: float = 20.0    # Purkinje spikes are counted from here to the end of the window (the
                                      # period the olive trains), skipping the onset transient
    # --- PF-PC plasticity (Ito 2001; Coesmans 2004; Wang et al. 2000)
    a_ltp: float = 2e-3               # LTP per PF spike without CF (weights in [0, w_max])
    tau_elig_ms: float = 50.0         # PF eligibility trace: ~100 ms window for CF pairing
    w_max: float = 1.0
    # a_ltd = a_ltp / (cf_base_hz * tau_elig): at baseline CF rate LTP and LTD balance, so the
    # net change is a spiking delta rule: dw ~ a_ltp * nu_pf * (r_target - r) * cf_gain / cf_base_hz

    def __post_init__(self):
        if self.window_ms <= 0 or self.dt_ms <= 0 or abs(round(self.window_ms / self.dt_ms) * self.dt_ms - self.window_ms) > 1e-9:
            raise ValueError("model.window_ms must be a positive whole number of model.dt_ms steps")
        if not 0 <= self.readout_start_ms < self.window_ms or not 0 <= self.teach_delay_ms < self.window_ms:
            raise ValueError("model.readout_start_ms and model.teach_delay_ms must lie in [0, model.window_ms)")
        if self.grc_state_dtype not in ("float32", "float64"):
            raise ValueError(f"model.grc_state_dtype must be 'float32' or 'float64', got {self.grc_state_dtype!r}")
        if self.width < 1:
            raise ValueError(f"model.width must be >= 1, got {self.width}")
        if self.k < 1:
            raise ValueError(f"model.k must be >= 1, got {self.k}")
        if self.pc_per_class < 1 or self.grc_per_goc < 1 or self.goc_per_grc < 0 or self.pf_per_goc < 1:
            raise ValueError("model.pc_per_class, grc_per_goc, pf_per_goc >= 1 and goc_per_grc >= 0")
        if not self.mf_rate_max_hz >= self.mf_rate_min_hz >= 0:
            raise ValueError("model.mf_rate_max_hz >= model.mf_rate_min_hz >= 0 is required")
        for name in ("p_mf_goc",):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"model.{name} must be in [0, 1]")
        for name in ("grc_tau_m_ms", "goc_tau_m_ms", "pc_tau_m_ms", "tau_goc_grc_ms", "pc_rate_tau_ms", "tau_elig_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be > 0")
        if not 0 <= self.w_init <= self.w_max or self.w_max <= 0:
            raise ValueError("model.w_init must lie in [0, model.w_max] and w_max > 0")
        if self.a_ltp < 0 or self.cf_base_hz <= 0:
            raise ValueError("model.a_ltp >= 0 and model.cf_base_hz > 0 are required")

    @property
    def n_goc(self) -> int:
        return max(1, -(-self.width // self.grc_per_goc))

    @property
    def a_ltd(self) -> float:
        return self.a_ltp / (self.cf_base_hz * self.tau_elig_ms * 1e-3)

    @property
    def j_pf_scaled_mv(self) -> float:
        return self.j_pf_mv * 2000.0 / self.width


@dataclass(frozen=True)
class SpikingTrainConfig:
    """How the network is trained in the simulation (``train.*`` keys)."""

    epochs: int = 12
    lr_decay: float = 0.8             # LTP and LTD amplitudes are scaled by lr_decay ** (epoch - 1)
    eval_every: int = 1               # evaluate the learning curve every N epochs
    n_eval: int | None = None         # test samples for the learning curve (None: all)
    shuffle: bool = True

    def __post_init__(self):
        if self.epochs < 0 or self.eval_every < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError("train.epochs >= 0, train.eval_every >= 1 and 0 < train.lr_decay <= 1 are required")


@dataclass(frozen=True)
class EngineConfig:
    """The batched inference engine (``engine.*`` keys)."""

    batch_size: int | None = None     # most copies simulated in one network; None: min(200, 400,000 granule
                                      # cells / width). Measured on the default digits network (2 workers):
                                      # 50 -> 596, 100 -> 652, 200 -> 677 samples/s; shorter requests run on
                                      # smaller networks (see models.spiking.engine)
    chunks_per_run: int = 10          # chunks of batch_size queries per Brian2 run
    workers: int = 2                  # processes, each holding its own networks (use both cores)
    noise: Literal["frozen", "fresh"] = "frozen"

    def __post_init__(self):
        if (self.batch_size is not None and self.batch_size < 1) or self.workers < 1 or self.chunks_per_run < 1:
            raise ValueError("engine.batch_size, engine.chunks_per_run and engine.workers must be >= 1")

    def copies(self, width: int) -> int:
        """``batch_size``, or its default for a network of ``width`` granule cells."""
        if self.batch_size is not None:
            return self.batch_size
        return max(1, min(MAX_DEFAULT_COPIES, GRC_PER_NETWORK // max(1, width)))
