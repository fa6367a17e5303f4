"""Parameters of the spiking cerebellum, with their sources.

Every default is a plain float whose name carries its unit. Values come from measured biology
where one exists; where a value was tuned here, the comment says *tuned* and to what (the
physiological ranges below, checked at the defaults by :mod:`models.spiking.biology`).
Conductances written ``g_*`` are dimensionless, in units of the cell's leak conductance, so
``tau_m dv/dt = (E_L - v) + g (E_syn - v) + ...``; EPSPs written ``w_*_mv`` are voltage jumps.

Published ranges the defaults are checked against (``biology.csv``)
-------------------------------------------------------------------
- Granule cells nearly silent at rest in vivo (~0.5 Hz; Chadderton, Margrie & Häusser 2004,
  Nature 428:856) and sparse when driven: coding levels of 5-20 % (Billings et al. 2014,
  Neuron 83:960; Litwin-Kumar et al. 2017, Neuron 93:1153).
- Golgi cells pacemake at a few Hz in slices and fire ~1-30 Hz in vivo (Dieudonné 1998,
  J Physiol 510:845; Forti et al. 2006, J Physiol 574:711); about one Golgi cell per several
  hundred granule cells (Korbo et al. 1993, J Comp Neurol 328:341).
- Purkinje simple spikes: tonic, 40-100 Hz spontaneous, modulated up and down by input
  (Häusser & Clark 1997, Neuron 19:665).
- Molecular-layer interneurons (stellate and basket cells): spontaneous ~5-30 Hz, driven by
  parallel fibres, inhibiting Purkinje cells (Häusser & Clark 1997; Jörntell & Ekerot 2003,
  J Neurosci 23:9620).
- Climbing fibres (complex spikes): ~1 Hz, rarely above ~10 Hz (Armstrong & Rawson 1979,
  J Physiol 289:425).

Other sources
-------------
- D'Angelo et al. (1995) J Physiol 484:397: granule membrane, fast time constant, rest near -70 mV.
- Brickley, Cull-Candy & Farrant (1996) J Physiol 497:753; Hamann, Rossi & Attwell (2002)
  Neuron 33:625: tonic GABA-A conductance of granule cells, comparable to the leak, reversing
  near E_Cl (about -75 mV): it shunts and cannot drive the membrane below its reversal.
- Rossi & Hamann (1998) Neuron 20:783: Golgi-granule inhibition has a slow spillover
  component (tens of ms).
- Eccles, Ito & Szentágothai (1967); Jakab & Hámori (1988): four granule dendrites (K = 4).
- Ito (2001) Physiol Rev 81:1143; Coesmans et al. (2004) Neuron 44:691: parallel fibre +
  climbing fibre gives LTD; parallel fibre alone gives LTP, and climbing-fibre activity
  decides between the two.
- Wang, Denk & Häusser (2000) Nat Neurosci 3:1266: the PF-CF pairing window is ~100 ms.
- Schonewille et al. (2011) Neuron 70:43: mice without PF-PC LTD still learn, so a circuit
  without climbing-fibre LTD must still learn by another route (the ``ltd='none'`` control).
- Marr (1969); Albus (1971): expansion recoding and the error-driven PF-PC readout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["SpikingConfig", "SpikingTrainConfig", "EngineConfig", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "cereb-spiking-v3"   # v3: learned MLI-PC weights; v2: conductance inhibition, MLIs, calibration
MAX_DEFAULT_COPIES = 200      # default engine batch: the fastest measured on the default network ...
GRC_PER_NETWORK = 400_000     # ... and at most this many granule cells per simulated network (memory)


@dataclass(frozen=True)
class SpikingConfig:
    """Structure and neuron parameters of the spiking cerebellum (``model.*`` keys).

    The three mechanisms of the seed paper are ``width`` (granule cells), ``ltd`` and ``k``
    (mossy fibres per granule cell, 1 up to all inputs; the granule excitability is calibrated
    per network so that the evoked coding level is ``grc_coding_level`` whatever K and width).

    ``ltd='cf'``: a climbing-fibre event depresses every PF-PC synapse in proportion to its
    PF eligibility trace (LTD), and PF spikes alone potentiate (LTP). ``ltd='none'``: no
    climbing fibre ever depresses a PF-PC synapse; the climbing fibre instead *vetoes* PF-alone
    LTP for ``tau_veto_ms`` after it fires (Coesmans et al. 2004: climbing-fibre activity decides
    whether PF activity potentiates), and weights decay towards 0 with ``tau_decay_s`` (passive
    decay of unconsolidated potentiation: the weights can fall without any depression event). Everything
    else (network, olive, targets, LTP) is the same.

    In both settings the MLI-PC inhibitory weights learn from the same climbing fibres with the
    opposite sign (``a_inh``; CF-triggered rebound potentiation, Kano et al. 1992): the learned,
    signed part of the readout. A climbing-fibre event potentiates inhibition; it never depresses a
    PF-PC synapse in the control.

    **The control does not learn under a physiological olive** (measured on digits, seed 0, 2-core
    AMD, December 2026; chance is 0.10): 0.139 test accuracy with ``tau_decay_s`` 100 (Purkinje
    cells run away to 160 Hz, CF 6.3 Hz), 0.164 with 20 s (4 epochs; 107 Hz, CF 4.1 Hz), 0.128
    after one epoch with ``tau_veto_ms`` 300 and ``tau_decay_s`` 50; and 0.139 with the PF-PC
    synapses frozen (``a_ltp=0``: the MLI-PC route alone, whose weights all reach ``w_inh_max``
    because the olive stays above baseline). The reason is the olive's rate: at 1-5 Hz it fires in
    8-33 % of the 80 ms teaching periods, so a veto removes only ~3-16 % of a presentation's LTP,
    and with 10 classes the labelled class is 10 % of the samples: the class-specific part of the
    learned weights is ~1 % of the common part. CF-triggered LTD carries the error because one rare
    event changes a weight by ``a_ltd x`` (20 times ``a_ltp`` per unit trace); a rule without
    CF-triggered depression has no per-event change that large unless it potentiates on a CF
    event, which with the olive's sign mirrored is the same expected drift (not a control).
    """

    # --- the three mechanisms
    width: int = 2000                 # granule cells
    k: int = 4                        # MF synapses per GrC (anatomy: 4 dendrites)
    ltd: Literal["cf", "none"] = "cf"
    # --- simulation
    window_ms: float = 100.0          # presentation time per sample
    dt_ms: float = 0.2                # step (exponential Euler for the conductance terms); tuned: spike counts
                                      # within ~1 % of dt 0.1 ms on the default network
    grc_state_dtype: Literal["float32", "float64"] = "float32"  # granule state: the largest, so float32 halves
                                      # its memory traffic
    warmup_ms: float = 400.0          # background-only simulation (every MF at mf_rate_min_hz) whose end state is
                                      # the start of every presentation: the network's steady state, not a reset
    # --- mossy fibres (Poisson): rate = mf_rate_min_hz + x (mf_rate_max_hz - mf_rate_min_hz)
    mf_rate_min_hz: float = 5.0       # background MF rate (a few Hz in vivo; Chadderton et al. 2004)
    mf_rate_max_hz: float = 300.0     # sensory-driven MF rates reach hundreds of Hz (Rancz et al. 2007); tuned
    # --- granule cells (LIF with conductance-based inhibition; D'Angelo 1995; Brickley 1996)
    grc_tau_m_ms: float = 10.0        # leak time constant (the tonic conductance halves the effective one)
    grc_e_leak_mv: float = -70.0
    grc_e_gaba_mv: float = -75.0      # GABA-A reversal (Brickley et al. 1996)
    grc_g_tonic: float = 1.0          # tonic GABA-A conductance, in leak units (comparable to the leak; Hamann 2002)
    grc_v_thresh_mv: float = -50.0
    grc_v_reset_mv: float = -70.0
    w_mf_grc_mv: float = 4.0          # mean EPSP per MF spike before calibration (several coincident MF EPSPs fire
                                      # a GrC; Chadderton 2004); replaced by the calibrated value, see grc_coding_level
    w_mf_grc_cv: float = 0.5          # synapse-to-synapse variability of MF-GrC EPSPs (log-normal, mean 1); tuned:
                                      # gives a dense (K = all) granule layer distinct cells
    grc_coding_level: float | None = 0.10  # evoked coding level the granule excitability is calibrated to (per
                                      # network: task, K, width); None keeps w_mf_grc_mv as given
    # --- Golgi cells (adaptive LIF pacemakers; Dieudonné 1998; Forti 2006)
    grc_per_goc: int = 400            # granule cells per Golgi cell (several hundred; Korbo et al. 1993)
    goc_tau_m_ms: float = 20.0
    goc_v_rest_mv: float = -65.0
    goc_v_thresh_mv: float = -50.0
    goc_v_reset_mv: float = -60.0
    goc_drive_mv: float = 16.5        # intrinsic drive: resting target 1.5 mV above threshold, so the cell pacemakes
    goc_tau_ahp_ms: float = 100.0     # slow after-hyperpolarisation (Dieudonné 1998; Forti 2006)
    goc_ahp_mv: float = 5.0           # AHP per spike: pacemaking at a few Hz, evoked rates <= ~40 Hz; tuned
    mf_per_goc: int = 16              # MF inputs per Golgi cell (feed-forward)
    w_mf_goc_mv: float = 0.25         # tuned with goc_ahp_mv to the evoked Golgi range (<= ~40 Hz)
    pf_per_goc: int = 100             # PF inputs per Golgi cell (feedback)
    w_grc_goc_mv: float = 0.5         # tuned
    goc_per_grc: int = 4              # Golgi cells inhibiting each GrC (one per glomerulus/dendrite)
    g_goc_grc: float = 0.5            # GABA-A conductance jump per Golgi spike, leak units; tuned (coding level)
    tau_goc_grc_ms: float = 20.0      # slow (spillover) GABA-A inhibition (Rossi & Hamann 1998)
    # --- molecular-layer interneurons (stellate/basket cells: adaptive LIF pacemakers)
    mli_per_pc: int = 4               # interneurons per Purkinje cell in the model (anatomy: more; cost)
    mli_tau_m_ms: float = 10.0
    mli_v_rest_mv: float = -65.0
    mli_v_thresh_mv: float = -50.0
    mli_v_reset_mv: float = -60.0
    mli_drive_mv: float = 16.0        # pacemaking at ~10 Hz without PF input (Häusser & Clark 1997); tuned
    mli_tau_ahp_ms: float = 50.0
    mli_ahp_mv: float = 4.0           # tuned: spontaneous ~10 Hz, evoked <= ~60 Hz
    pf_per_mli: int = 200             # PF inputs per interneuron (random)
    w_pf_mli_mv: float = 0.6          # EPSP per PF spike; tuned so that MLI rates track the PF input
    mli_to_pc: int = 8                # interneurons converging on each Purkinje cell (random)
    g_mli_pc: float = 0.25            # GABA-A conductance jump per MLI spike, PC leak units; tuned: feed-forward
                                      # inhibition grows with the PF input while the PC population stays asynchronous
                                      # (stronger phasic inhibition entrains PCs to MLI volleys: chi > 0.5 at 1.0,
                                      # measured December 2026). Weaker costs class modulation: trained with 0.2
                                      # and pc_drive_jitter_mv 4, digits seeds 0/1 gave evoked chi 0.26/0.28 (0.30/0.33
                                      # here) but modulation 4.5/4.8 Hz (5.1/5.6) and accuracy 0.705/0.735 (0.752/
                                      # 0.749); 2-core AMD, December 2026
    tau_mli_pc_ms: float = 5.0        # fast GABA-A IPSCs of the MLI-PC synapse (Häusser & Clark 1997)
    # --- Purkinje cells (LIF pacemakers with conductance-based inhibition; Häusser & Clark 1997)
    pc_per_class: int = 30            # Purkinje cells per class (a microzone each); tuned: 30 averaged the
                                      # climbing-fibre noise better than 10 (0.685 against 0.663 test accuracy on digits,
                                      # seed 0, 2-core AMD machine, December 2026)
    pc_tau_m_ms: float = 10.0
    pc_e_leak_mv: float = -68.0
    pc_e_gaba_mv: float = -75.0
    pc_v_thresh_mv: float = -55.0
    pc_v_reset_mv: float = -65.0
    pc_drive_mv: float = 17.0         # intrinsic drive: tonic simple spikes (~55 Hz spontaneous, MLIs included); tuned
    pc_drive_jitter_mv: float = 3.0   # cell-to-cell spread of the intrinsic drive (uniform +-): heterogeneous
                                      # intrinsic rates, no population-wide synchrony; tuned
    j_pf_mv: float = 0.4              # EPSP of a PF at full weight (w = 1) for width 2000; scaled by 2000 / width
    w_init: float = 0.5               # initial PF-PC weight
    w_init_jitter: float = 0.05       # uniform jitter around w_init
    # --- climbing fibres / inferior olive (training only)
    cf_base_hz: float = 1.0           # olive baseline (Armstrong & Rawson 1979: ~1 Hz)
    cf_gain: float = 0.08             # Hz of CF per Hz of PC rate error; tuned (mean CF <= 3 Hz in training)
    cf_max_hz: float = 10.0           # ceiling of the olive's rate (complex spikes rarely above ~10 Hz)
    pc_rate_tau_ms: float = 20.0      # PC rate trace seen by the olive (via the nucleo-olivary loop)
    target_hz_on: float = 110.0       # desired PC rate for the labelled class; tuned within the PC range
    target_hz_off: float = 30.0       # desired PC rate for the other classes; tuned
    teach_delay_ms: float = 20.0      # olive and plasticity on from this time after sample onset (one rate_tau)
    readout_start_ms: float = 20.0    # Purkinje spikes are counted from here to the end of the window (the
                                      # period the olive trains: the first 20 ms carry the granule latency)
    # --- PF-PC plasticity (Ito 2001; Coesmans 2004; Wang et al. 2000)
    a_ltp: float = 2e-3               # LTP per PF spike without CF (weights in [0, w_max]); tuned
    tau_elig_ms: float = 50.0         # PF eligibility trace: ~100 ms window for CF pairing
    w_max: float = 1.0
    tau_veto_ms: float = 100.0        # ltd='none' only: a CF blocks PF-alone LTP for this long (pairing window)
    tau_decay_s: float = 100.0        # ltd='none' only: weights decay to 0 with this time constant of presentation
                                      # time (a decay to w_init could not bring the PCs below their w_init rate)
    # a_ltd = a_ltp / (cf_base_hz * tau_elig): at baseline CF rate LTP and LTD balance, so the
    # net change is a spiking delta rule: dw ~ a_ltp * nu_pf * (r_target - r) * cf_gain / cf_base_hz
    # --- MLI-PC plasticity (both ltd settings): the learned, signed part of the readout
    a_inh: float = 2e-3               # depression of an MLI-PC inhibitory weight per MLI spike; a CF event
                                      # potentiates it by a_rp x_mli (rebound potentiation of PC GABA-A responses
                                      # after climbing-fibre depolarisation: Kano et al. 1992), a_rp balancing a_inh
                                      # at the baseline CF rate, so inhibition grows where the PC fires above its
                                      # target; tuned: rate-level replica of the rule on the digits default's
                                      # granule counts, 0.62 -> 0.83 test accuracy (2-core AMD, December 2026); 0: off
    w_inh_max: float = 1.5            # MLI-PC weight (multiplier of g_mli_pc, initially 1) lies in [0, w_inh_max]; tuned
                                      # to the Purkinje range (digits seed 0, 2-core AMD, December 2026): the weights
                                      # end near the bound; at 4 the inhibition slowed spontaneous firing to 34 Hz and
                                      # entrained the PCs (evoked chi 0.48), at 2 evoked chi was 0.34 (> 0.3)

    def __post_init__(self):
        if self.window_ms <= 0 or self.dt_ms <= 0 or abs(round(self.window_ms / self.dt_ms) * self.dt_ms - self.window_ms) > 1e-9:
            raise ValueError("model.window_ms must be a positive whole number of model.dt_ms steps")
        if not 0 <= self.readout_start_ms < self.window_ms or not 0 <= self.teach_delay_ms < self.window_ms:
            raise ValueError("model.readout_start_ms and model.teach_delay_ms must lie in [0, model.window_ms)")
        if self.grc_state_dtype not in ("float32", "float64"):
            raise ValueError(f"model.grc_state_dtype must be 'float32' or 'float64', got {self.grc_state_dtype!r}")
        if self.ltd not in ("cf", "none"):
            raise ValueError(f"model.ltd must be 'cf' or 'none', got {self.ltd!r}")
        if self.width < 1:
            raise ValueError(f"model.width must be >= 1, got {self.width}")
        if self.k < 1:
            raise ValueError(f"model.k must be >= 1, got {self.k}")
        for name in ("pc_per_class", "grc_per_goc", "pf_per_goc", "mf_per_goc", "mli_per_pc", "pf_per_mli", "mli_to_pc"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1")
        if self.goc_per_grc < 0:
            raise ValueError("model.goc_per_grc must be >= 0")
        if not self.mf_rate_max_hz >= self.mf_rate_min_hz >= 0:
            raise ValueError("model.mf_rate_max_hz >= model.mf_rate_min_hz >= 0 is required")
        if self.grc_coding_level is not None and not 0 < self.grc_coding_level < 1:
            raise ValueError("model.grc_coding_level must lie in (0, 1) (or be null: no calibration)")
        for name in ("grc_tau_m_ms", "goc_tau_m_ms", "pc_tau_m_ms", "mli_tau_m_ms", "tau_goc_grc_ms", "tau_mli_pc_ms",
                     "pc_rate_tau_ms", "tau_elig_ms", "goc_tau_ahp_ms", "mli_tau_ahp_ms", "tau_veto_ms", "tau_decay_s",
                     "w_mf_grc_mv"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be > 0")
        for name in ("grc_g_tonic", "g_goc_grc", "g_mli_pc", "w_mf_grc_cv", "warmup_ms", "goc_ahp_mv", "mli_ahp_mv",
                     "pc_drive_jitter_mv", "cf_gain", "a_inh"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0")
        if not 0 <= self.w_init <= self.w_max or self.w_max <= 0:
            raise ValueError("model.w_init must lie in [0, model.w_max] and w_max > 0")
        if self.w_inh_max < 1:
            raise ValueError("model.w_inh_max must be >= 1 (the MLI-PC weights start at 1)")
        if self.a_ltp < 0 or self.cf_base_hz <= 0 or self.cf_max_hz < self.cf_base_hz:
            raise ValueError("model.a_ltp >= 0 and 0 < model.cf_base_hz <= model.cf_max_hz are required")

    # --- derived sizes and constants (one formula each)
    @property
    def n_goc(self) -> int:
        return max(1, -(-self.width // self.grc_per_goc))

    def n_mli(self, n_pc: int) -> int:
        return self.mli_per_pc * n_pc

    @property
    def a_ltd(self) -> float:
        return self.a_ltp / (self.cf_base_hz * self.tau_elig_ms * 1e-3)

    @property
    def a_rp(self) -> float:
        """Rebound potentiation of an MLI-PC weight per CF event and unit MLI trace."""
        return self.a_inh / (self.cf_base_hz * self.tau_elig_ms * 1e-3)

    @property
    def j_pf_scaled_mv(self) -> float:
        return self.j_pf_mv * 2000.0 / self.width

    def mf_rates_hz(self, x) -> np.ndarray:
        """Mossy-fibre rates (Hz) for inputs ``x`` in [0, 1]: the one place this formula lives."""
        return self.mf_rate_min_hz + np.asarray(x, dtype=np.float64) * (self.mf_rate_max_hz - self.mf_rate_min_hz)


@dataclass(frozen=True)
class SpikingTrainConfig:
    """How the network is trained in the simulation (``train.*`` keys)."""

    epochs: int = 12
    lr_decay: float = 0.9             # LTP and LTD amplitudes are scaled by lr_decay ** (epoch - 1)
    eval_every: int = 1               # evaluate the learning curve every N epochs
    n_eval: int | None = None         # test samples for the learning curve (None: all)
    shuffle: bool = True
    n_calibration: int = 200          # training inputs on which the coding level is calibrated

    def __post_init__(self):
        if self.epochs < 0 or self.eval_every < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError("train.epochs >= 0, train.eval_every >= 1 and 0 < train.lr_decay <= 1 are required")
        if self.n_calibration < 10:
            raise ValueError("train.n_calibration must be >= 10")


@dataclass(frozen=True)
class EngineConfig:
    """The batched inference engine (``engine.*`` keys)."""

    batch_size: int | None = None     # most copies simulated in one network; None: min(200, 400,000 granule
                                      # cells / width); shorter requests run on smaller networks
    chunks_per_run: int = 10          # chunks of batch_size queries per Brian2 run
    workers: int = 2                  # processes (brian2 backend) or threads (kernel backend); use both cores
    noise: Literal["frozen", "fresh"] = "frozen"
    backend: Literal["kernel", "brian2"] = "kernel"  # kernel: the compiled network of models.spiking.kernel
                                      # (the Brian2 build's statements and order, its spike counts exactly; 880
                                      # vs 353 samples/s, cereb bench spiking, 2-core AMD EPYC, 3 Dec 2026);
                                      # brian2: the batched Brian2 build. Both record spike trains (the same).

    def __post_init__(self):
        if (self.batch_size is not None and self.batch_size < 1) or self.workers < 1 or self.chunks_per_run < 1:
            raise ValueError("engine.batch_size, engine.chunks_per_run and engine.workers must be >= 1")
        if self.backend not in ("kernel", "brian2"):
            raise ValueError(f"engine.backend must be 'kernel' or 'brian2', got {self.backend!r}")
        if self.noise not in ("frozen", "fresh"):
            raise ValueError(f"engine.noise must be 'frozen' or 'fresh', got {self.noise!r}")

    def copies(self, width: int) -> int:
        """``batch_size``, or its default for a network of ``width`` granule cells."""
        if self.batch_size is not None:
            return self.batch_size
        return max(1, min(MAX_DEFAULT_COPIES, GRC_PER_NETWORK // max(1, width)))
