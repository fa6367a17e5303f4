"""Attacks in the spike domain: the smallest change to the mossy-fibre spike trains that changes the
cerebellum's decision.

Threat model
------------
An experimenter cannot set pixels inside a brain; with optogenetics or microstimulation they can add
spikes to identified mossy fibres or silence them for a while, on top of whatever the fibres fire on
that trial. The mossy fibres' Poisson draw is the network's noise, so an edit is defined without
reference to one draw, and carries over to new trials ("fresh": the same edits on new draws):

``insert``
    spikes delivered on chosen fibres at chosen times (excitation). Budget: ``spike_budget`` spikes
    per image, and a per-fibre rate ceiling: delivered spikes on one fibre lie at least
    ``1000 / spike_max_rate_hz`` ms apart (so at most ``spike_max_rate_hz * window`` of them).
``silence``
    intervals in which a chosen fibre cannot fire (inhibition). Budget: ``silence_budget_ms``
    fibre-milliseconds per image.
``shift`` (frozen-trial diagnostic)
    the spikes of one fixed trial moved in time. Shifts only make sense for that one draw, so its
    rows have no fresh-noise success.

Edits are placed on a grid: delivered spikes on the times ``t_lo + k * gap`` (``gap = 1000 /
spike_max_rate_hz`` ms, ``t_lo = readout_start_ms - spike_lead_ms``, to 1 ms before the window
ends), filled ``spike_block`` at a time in bit-reversed order so a few spikes already spread over
the window; silenced intervals are ``silence_block_ms`` pieces from ``t_lo`` to the end of the
window, taken in the same order. A fibre is either excited or silenced, never both. Budgets are checked exactly by
:func:`budget_violations` on every edit an attack returns.

Decisions
---------
The margin of an image is the true class's Purkinje score minus the best other class's (Hz). An
image is fooled when the margin is negative: a tie at the top is not a change of decision. Only
images the network classifies correctly (margin > 0) on the frozen trial are attacked.

Attacks
-------
``gradient``
    greedy on the surrogate's (:mod:`models.surrogate`) gradient of the margin with respect to each
    fibre's effective rate (delivered spikes raise it, silence lowers it; the surrogate has no time
    axis, so its one time bin is the window): each step takes the move with the largest predicted
    fall of the margin per edited spike, and one network query checks the decision.
``search``
    black-box greedy on the network (frozen trial): every legal move is simulated and the best one
    kept; between full rounds only the ``SEARCH_TOP`` moves of the last full ranking are tried again.
``gradient-eot``
    the same moves, checked (and pruned) on the Purkinje scores averaged over ``spike_eot_trials``
    frozen trials (noise slots 0, 1, ...), every trial a charged query.
``search-eot``
    the search on the Purkinje scores averaged over ``spike_eot_trials`` frozen trials (noise
    slots 0, 1, ...; expectation over the noise, Athalye et al. 2018), every trial a charged query:
    edits that flip one draw by exploiting its particular spikes do not count.
``shift``
    black-box greedy on the frozen trial's own spike trains: every spike of a chosen fibre moves by
    ``shift_ms`` (earlier or later, clipped to the window; spikes that land on another spike of
    their fibre merge and count as deleted).

Every attack has a hard budget of ``spike_queries`` network simulations per image
(:class:`SpikeQueries`), pruning included: once the decision flips, moves are taken back one at a
time while it stays flipped. Success under fresh noise: the fraction of ``fresh_repeats`` new
trials, with the same edits, on which the image is misclassified.

What the edits are compared with: the trial-to-trial variability of the input itself, ``sum_f
|n_f - n'_f|`` over the window for two Poisson draws of the same image
(:func:`natural_variability`), and the spike edits a pixel attack makes on the same frozen trial
(:func:`pixel_equivalent`: the spikes that differ between the clean and the adversarial input's
draws with the same noise).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.decision import QueryBudgetExceeded

log = logging.getLogger(__name__)

__all__ = ["SPIKE_METHODS", "SPIKE_COLUMNS", "VARIABILITY_COLUMNS", "STIMULATION_COLUMNS", "SpikeBudget",
           "EditGrid", "SpikeEdit", "SpikeQueries", "budget_violations", "margins", "attack_image",
           "natural_variability", "pixel_equivalent", "fresh_success", "stimulation_rows", "run_spike_attacks"]

SPIKE_METHODS = ("gradient", "gradient-eot", "search", "search-eot", "shift")
SPIKE_COLUMNS = ["image", "method", "edits", "inserted", "deleted", "shifted_ms", "queries", "fooled_frozen",
                 "success_fresh"]
VARIABILITY_COLUMNS = ["image", "label", "clean_margin_hz", "clean_error_fresh", "mf_spikes", "natural_variability",
                       "natural_variability_sd", "pixel_eps", "pixel_edits", "pixel_expected_edits"]
STIMULATION_COLUMNS = ["image", "method", "fibre", "time_ms", "action", "duration_ms"]
SEARCH_TOP = 16          # moves tried again between full rounds of the black-box search
SEARCH_FULL_EVERY = 8    # a full round every this many rounds


@dataclass(frozen=True)
class SpikeBudget:
    """Per-image budgets: delivered spikes, their per-fibre rate ceiling, silenced fibre-milliseconds."""

    max_inserted: int
    max_rate_hz: float
    silence_ms: float

    @property
    def gap_ms(self) -> float:
        """The least interval between two delivered spikes on one fibre."""
        return 1000.0 / self.max_rate_hz


@dataclass(frozen=True)
class EditGrid:
    """Where edits may go: delivered-spike steps ``insert_steps`` (in filling order) and silenced
    pieces ``chunks`` ``(n_chunks, 2)`` (start, stop steps, in taking order), the same for every fibre."""

    n_mf: int
    n_steps: int
    dt_ms: float
    insert_steps: np.ndarray
    chunks: np.ndarray

    @classmethod
    def build(cls, *, n_mf: int, n_steps: int, dt_ms: float, window_ms: float, t_lo_ms: float, budget: SpikeBudget,
              chunk_ms: float) -> "EditGrid":
        t_hi = window_ms - 1.0
        if not 0 <= t_lo_ms < t_hi:
            raise ValueError(f"edits start at {t_lo_ms:g} ms, outside the window [0, {t_hi:g}) ms")
        gap_steps = int(np.ceil(budget.gap_ms / dt_ms - 1e-9))
        lo = int(np.ceil(t_lo_ms / dt_ms - 1e-9))
        hi = int(np.floor(t_hi / dt_ms + 1e-9))
        grid = np.arange(lo, hi + 1, gap_steps, dtype=np.int64)
        chunk = max(1, int(round(chunk_ms / dt_ms)))
        starts = np.arange(lo, n_steps, chunk, dtype=np.int64)
        chunks = np.stack([starts, np.minimum(starts + chunk, n_steps)], axis=1)
        return cls(n_mf, n_steps, float(dt_ms), grid[_spread_order(len(grid))], chunks[_spread_order(len(chunks))])


def _spread_order(n: int) -> np.ndarray:
    """0..n-1 in bit-reversed (van der Corput) order: every prefix spreads over the range."""
    if n <= 1:
        return np.arange(n)
    bits = int(np.ceil(np.log2(n)))
    keys = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)]
    return np.argsort(keys, kind="stable")


@dataclass
class SpikeEdit:
    """One image's edits: ``inserted`` ``(k, 2)`` (fibre, step) spikes delivered; ``silenced``
    ``(m, 3)`` (fibre, start step, stop step) intervals in which the fibre cannot fire."""

    inserted: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    silenced: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))

    def mask(self, n_steps: int, n_mf: int) -> np.ndarray:
        """The engine's input ``(n_steps, n_mf)`` int8: -1 over silenced intervals, +1 at delivered spikes."""
        m = np.zeros((n_steps, n_mf), dtype=np.int8)
        for f, a, b in self.silenced:
            m[a:b, f] = -1
        if len(self.inserted):
            m[self.inserted[:, 1], self.inserted[:, 0]] = 1
        return m

    def as_protocol(self, dt_ms: float) -> dict:
        """The edit in ms: ``inserted`` ``(fibre, t_ms)`` and ``silenced`` ``(fibre, start_ms, stop_ms)``."""
        return {"inserted": (self.inserted[:, 0].copy(), self.inserted[:, 1] * dt_ms),
                "silenced": (self.silenced[:, 0].copy(), self.silenced[:, 1] * dt_ms, self.silenced[:, 2] * dt_ms)}

    def silenced_ms(self, dt_ms: float) -> float:
        return float((self.silenced[:, 2] - self.silenced[:, 1]).sum() * dt_ms) if len(self.silenced) else 0.0


def budget_violations(edit: SpikeEdit, budget: SpikeBudget, n_steps: int, n_mf: int, dt_ms: float) -> list[str]:
    """Every way ``edit`` breaks the threat model (empty when it keeps to it)."""
    out = []
    ins, sil = np.asarray(edit.inserted, np.int64).reshape(-1, 2), np.asarray(edit.silenced, np.int64).reshape(-1, 3)
    if len(ins) > budget.max_inserted:
        out.append(f"{len(ins)} spikes delivered, budget {budget.max_inserted}")
    if len(ins) and ((ins[:, 0] < 0).any() or (ins[:, 0] >= n_mf).any() or (ins[:, 1] < 0).any()
                     or (ins[:, 1] >= n_steps).any()):
        out.append("a delivered spike lies outside the fibres or the window")
    if len(ins):
        order = np.lexsort((ins[:, 1], ins[:, 0]))
        f, s = ins[order, 0], ins[order, 1]
        same = f[1:] == f[:-1]
        gaps = (s[1:] - s[:-1])[same] * dt_ms
        if len(gaps) and gaps.min() < budget.gap_ms - 1e-9:
            out.append(f"two delivered spikes on one fibre {gaps.min():g} ms apart (ceiling {budget.max_rate_hz:g} Hz: "
                       f">= {budget.gap_ms:g} ms)")
    if len(sil):
        if (sil[:, 1] >= sil[:, 2]).any() or (sil[:, 1] < 0).any() or (sil[:, 2] > n_steps).any() \
                or (sil[:, 0] < 0).any() or (sil[:, 0] >= n_mf).any():
            out.append("a silenced interval is empty or lies outside the fibres or the window")
        order = np.lexsort((sil[:, 1], sil[:, 0]))
        f, a, b = sil[order, 0], sil[order, 1], sil[order, 2]
        if ((f[1:] == f[:-1]) & (a[1:] < b[:-1])).any():
            out.append("silenced intervals of one fibre overlap")
        total = float((sil[:, 2] - sil[:, 1]).sum() * dt_ms)
        if total > budget.silence_ms + 1e-9:
            out.append(f"{total:g} fibre-ms silenced, budget {budget.silence_ms:g}")
        both = sorted(set(sil[:, 0].tolist()) & set(ins[:, 0].tolist()))
        if both:
            out.append(f"fibre {both[0]} is both excited and silenced")
    return out


class SpikeQueries:
    """Network simulations charged to one image, with a hard budget checked before every call.

    ``net(masks, **kw)`` must return class scores ``(len(masks), n_classes)``, each from
    ``kw.get("trials", 1)`` simulations (all charged); a call that would pass ``max_queries`` raises :class:`~attacks.decision.QueryBudgetExceeded`
    without simulating anything.
    """

    def __init__(self, net, max_queries: int):
        self.net, self.max_queries, self.used = net, int(max_queries), 0

    @property
    def left(self) -> int:
        return self.max_queries - self.used

    def __call__(self, masks: np.ndarray, **kw) -> np.ndarray:
        k = len(masks) * int(kw.get("trials", 1))
        if self.used + k > self.max_queries:
            raise QueryBudgetExceeded(f"{k} more simulations would pass the budget of {self.max_queries} "
                                      f"({self.used} used)")
        self.used += k
        return self.net(masks, **kw)


def margins(scores: np.ndarray, y: int) -> np.ndarray:
    """True class score minus the best other class's, per row of ``scores`` ``(n, n_classes)``."""
    s = np.asarray(scores, dtype=np.float64)
    other = np.delete(s, int(y), axis=1).max(axis=1)
    return s[:, int(y)] - other


# ----------------------------------------------------------------------------- edit state
class _State:
    """Insert / silence moves on the grid: per fibre, how many grid spikes and silenced pieces are taken."""

    def __init__(self, grid: EditGrid, budget: SpikeBudget, block: int):
        self.grid, self.budget, self.block = grid, budget, int(block)
        self.ins = np.zeros(grid.n_mf, np.int64)
        self.sil = np.zeros(grid.n_mf, np.int64)
        self.history: list[tuple[str, int, int]] = []  # (kind, fibre, amount)

    def copy(self) -> "_State":
        s = _State(self.grid, self.budget, self.block)
        s.ins, s.sil, s.history = self.ins.copy(), self.sil.copy(), list(self.history)
        return s

    def _chunk_ms(self, f: int) -> float:
        a, b = self.grid.chunks[self.sil[f]]
        return float((b - a) * self.grid.dt_ms)

    def moves(self) -> list[tuple[str, int, int]]:
        """Every legal next move ``(kind, fibre, amount)``."""
        out = []
        left = self.budget.max_inserted - int(self.ins.sum())
        sil_left = self.budget.silence_ms - self.silenced_ms()
        n_grid, n_chunks = len(self.grid.insert_steps), len(self.grid.chunks)
        for f in range(self.grid.n_mf):
            if self.sil[f] == 0 and left > 0 and self.ins[f] < n_grid:
                out.append(("insert", f, int(min(self.block, left, n_grid - self.ins[f]))))
            if self.ins[f] == 0 and self.sil[f] < n_chunks and self._chunk_ms(f) <= sil_left + 1e-9:
                out.append(("silence", f, 1))
        return out

    def apply(self, move: tuple[str, int, int]) -> None:
        kind, f, k = move
        if kind == "insert":
            self.ins[f] += k
        else:
            self.sil[f] += k
        self.history.append(move)

    def undo(self, i: int) -> "_State":
        """A copy without the ``i``-th move of the history."""
        s = _State(self.grid, self.budget, self.block)
        for j, m in enumerate(self.history):
            if j != i:
                s.apply(m)
        return s

    def silenced_ms(self) -> float:
        return float(sum(self.grid.chunks[:k, 1].sum() - self.grid.chunks[:k, 0].sum()
                         for k in self.sil if k) * self.grid.dt_ms)

    def edit(self) -> SpikeEdit:
        ins = [(f, s) for f in range(self.grid.n_mf) for s in self.grid.insert_steps[:self.ins[f]]]
        sil = [(f, a, b) for f in range(self.grid.n_mf) for a, b in self.grid.chunks[:self.sil[f]]]
        return SpikeEdit(np.array(ins, np.int64).reshape(-1, 2), np.array(sil, np.int64).reshape(-1, 3))

    def mask(self) -> np.ndarray:
        return self.edit().mask(self.grid.n_steps, self.grid.n_mf)

    def with_move(self, move) -> np.ndarray:
        s = self.copy()
        s.apply(move)
        return s.mask()


# ----------------------------------------------------------------------------- attacks
def _prune(state: _State, margin: float, queries: SpikeQueries, y: int, trials: int = 1) -> tuple[_State, float]:
    """Take moves back, oldest first, while the decision stays flipped (one query each, within the
    budget); returns the state and its margin (the frozen trial is deterministic)."""
    i = 0
    while i < len(state.history) and queries.left >= trials:
        trial = state.undo(i)
        m = float(margins(queries(trial.mask()[None], trials=trials), y)[0])
        if m < 0:
            state, margin = trial, m
        else:
            i += 1
    return state, margin


def _search(queries: SpikeQueries, state: _State, y: int, m0: float, trials: int = 1) -> tuple[_State, float]:
    """Black-box greedy on the network (see the module docstring); returns the last state and margin.
    Moves are named by (kind, fibre) in the ranking; their size follows the state."""
    current, ranking, rounds = m0, [], 0
    while current >= 0:
        moves = state.moves()
        if not moves:
            break
        full = rounds % SEARCH_FULL_EVERY == 0 or not ranking
        if full:
            cands = moves
        else:
            legal = {m[:2]: m for m in moves}
            cands = [legal[k] for k in ranking if k in legal][:SEARCH_TOP] or moves
        cands = cands[:max(0, queries.left) // trials]
        if not cands:
            break
        m = margins(queries(np.stack([state.with_move(c) for c in cands]), trials=trials), y)
        order = np.argsort(m, kind="stable")
        if full:
            ranking = [cands[j][:2] for j in order]
        state.apply(cands[int(order[0])])
        current = float(m[order[0]])
        rounds += 1
    return state, current


def _surrogate_gradient(sur, r_eff: np.ndarray, y: int) -> np.ndarray:
    """d margin / d rate (per Hz) of the surrogate at mossy-fibre rates ``r_eff`` ``(n_mf,)``."""
    import torch

    r = torch.tensor(r_eff[None], dtype=torch.float64, requires_grad=True)
    r_grc, r_goc = sur.granule_golgi(r)
    r_pc = sur.pc_rates(r_grc, sur.mli_rates(r_grc))
    s = sur.scores_from_pc(r_pc)[0]
    other = torch.cat([s[:y], s[y + 1:]]).max()
    (s[y] - other).backward()
    return r.grad[0].detach().numpy().astype(np.float64)


def _gradient(queries: SpikeQueries, state: _State, y: int, m0: float, sur, rates_hz: np.ndarray,
              window_ms: float, trials: int = 1) -> tuple[_State, float]:
    """Greedy on the surrogate's rate gradient, one network check (``trials`` simulations) per move
    (module docstring)."""
    current = m0
    dt = state.grid.dt_ms
    while current >= 0 and queries.left >= trials:
        moves = state.moves()
        if not moves:
            break
        sil_ms = np.array([state.grid.chunks[:k, 1].sum() - state.grid.chunks[:k, 0].sum() for k in state.sil]) * dt
        r_eff = rates_hz * (1 - sil_ms / window_ms) + state.ins * 1000.0 / window_ms
        g = _surrogate_gradient(sur, r_eff, y)
        best, best_val = None, 0.0
        for kind, f, k in moves:
            if kind == "insert":
                d_rate, cost = k * 1000.0 / window_ms, k
            else:
                a, b = state.grid.chunks[state.sil[f]]
                d_rate = -rates_hz[f] * (b - a) * dt / window_ms
                cost = max(rates_hz[f] * (b - a) * dt / 1000.0, 1e-3)  # expected spikes removed
            val = g[f] * d_rate / cost
            if val < best_val:
                best, best_val = (kind, f, k), val
        if best is None:  # the surrogate predicts no move lowers the margin
            break
        state.apply(best)
        current = float(margins(queries(state.mask()[None], trials=trials), y)[0])
    return state, current


def _shift(queries: SpikeQueries, base: np.ndarray, y: int, m0: float, shift_steps: int, max_moves: int
           ) -> tuple[np.ndarray, float, int]:
    """Black-box greedy over per-fibre time shifts of one trial's spikes ``base`` ``(n_steps, n_mf)``."""
    n_steps, n_mf = base.shape
    offsets = np.zeros(n_mf, np.int64)

    def raster(off):
        out = np.zeros_like(base)
        for f in range(n_mf):
            s = np.nonzero(base[:, f])[0]
            out[np.clip(s + off[f], 0, n_steps - 1), f] = True
        return out

    current, moves = m0, 0
    while current >= 0 and moves < max_moves and queries.left > 0:
        cands = [(f, d) for f in range(n_mf) if base[:, f].any() for d in (-shift_steps, shift_steps)]
        cands = cands[:queries.left]
        if not cands:
            break
        rasters = []
        for f, d in cands:
            off = offsets.copy()
            off[f] += d
            rasters.append(raster(off))
        m = margins(queries(np.stack(rasters).astype(np.int8), trains=True), y)
        j = int(np.argmin(m))
        offsets[cands[j][0]] += cands[j][1]
        current, moves = float(m[j]), moves + 1
    return offsets, current, moves


def attack_image(net, x: np.ndarray, y: int, method: str, *, budget: SpikeBudget, grid: EditGrid, block: int,
                 max_queries: int, window_ms: float, sur=None, shift_ms: float = 10.0, eot_trials: int = 5) -> dict:
    """Attack one image on the frozen trial. ``net(masks, trains=False)`` returns class scores for
    edits ``masks`` ``(k, n_steps, n_mf)`` on top of ``x``'s draw (``trains=True``: the masks are
    the whole spike rasters). Returns the edit (``SpikeEdit``, or the shifted raster), the
    ``SPIKE_COLUMNS`` values except ``image``, ``success_fresh``, and the query count."""
    queries = SpikeQueries(net, max_queries)
    empty = np.zeros((1, grid.n_steps, grid.n_mf), np.int8)
    m0 = float(margins(queries(empty), y)[0])
    out: dict[str, Any] = {"method": method, "clean_margin": m0, "shifted_ms": 0.0, "edit": SpikeEdit(),
                           "raster": None}
    if method in ("search", "search-eot", "gradient", "gradient-eot"):
        state = _State(grid, budget, block)
        if method.startswith("gradient") and sur is None:
            raise ValueError(f"the {method} method needs the surrogate")
        if method in ("search", "gradient"):
            if method == "search":
                state, m = _search(queries, state, y, m0)
            else:
                state, m = _gradient(queries, state, y, m0, sur, net.rates, window_ms)
            if m < 0:
                state, m = _prune(state, m, queries, y)
        else:  # on the margin of the scores averaged over the frozen trials 0 .. eot_trials - 1
            queries.max_queries -= 1  # kept for the frozen trial's verdict on the result
            m_avg = float(margins(queries(empty, trials=eot_trials), y)[0]) if queries.left >= eot_trials else 0.0
            if method == "search-eot":
                state, m_avg = _search(queries, state, y, m_avg, trials=eot_trials)
            else:
                state, m_avg = _gradient(queries, state, y, m_avg, sur, net.rates, window_ms, trials=eot_trials)
            if m_avg < 0:
                state, m_avg = _prune(state, m_avg, queries, y, trials=eot_trials)
            queries.max_queries += 1
            # the frozen trial's verdict (no edit: the clean margin); the reserved query covers it
            m = float(margins(queries(state.mask()[None]), y)[0]) if state.history else m0
        edit = state.edit()
        problems = budget_violations(edit, budget, grid.n_steps, grid.n_mf, grid.dt_ms)
        assert not problems, problems  # the moves keep the budget by construction
        base = net.frozen_raster()
        deleted = int(sum(base[a:b, f].sum() for f, a, b in edit.silenced))
        inserted = len(edit.inserted)
        out.update(edit=edit, inserted=inserted, deleted=deleted, edits=inserted + deleted, fooled_frozen=bool(m < 0),
                   margin=m)
    elif method == "shift":
        base = net.frozen_raster()
        steps = max(1, int(round(shift_ms / grid.dt_ms)))
        offsets, m, _ = _shift(queries, base, y, m0, steps, max_moves=max_queries)
        raster = np.zeros_like(base)
        moved = 0
        shifted_ms = 0.0
        for f in range(grid.n_mf):
            s = np.nonzero(base[:, f])[0]
            new = np.clip(s + offsets[f], 0, grid.n_steps - 1)
            raster[new, f] = True
            moved += int((new != s).sum())  # clipping at an edge can leave a spike where it was
            shifted_ms += float(np.abs(new - s).sum() * grid.dt_ms)
        deleted = int(base.sum() - raster.sum())
        out.update(raster=raster, inserted=0, deleted=deleted, edits=moved, shifted_ms=shifted_ms,
                   fooled_frozen=bool(m < 0), margin=m)
    else:
        raise ValueError(f"unknown spike-domain method {method!r} (known: {', '.join(SPIKE_METHODS)})")
    out["queries"] = queries.used
    return out


# ----------------------------------------------------------------------------- comparisons
def natural_variability(seed: int, rates_hz: np.ndarray, n_steps: int, dt_ms: float, pairs: int) -> np.ndarray:
    """``sum_f |n_f - n'_f|`` over the window for ``pairs`` pairs of independent Poisson draws of one
    input (noise slots ``2k`` and ``2k + 1`` of a seed the attacks never use)."""
    from models.spiking.noise import poisson_trains

    out = np.zeros(pairs)
    for k in range(pairs):
        a = poisson_trains(seed, 2 * k, rates_hz, n_steps, dt_ms).sum(0)
        b = poisson_trains(seed, 2 * k + 1, rates_hz, n_steps, dt_ms).sum(0)
        out[k] = np.abs(a.astype(np.int64) - b).sum()
    return out


def pixel_equivalent(seed: int, slot: int, r_clean: np.ndarray, r_adv: np.ndarray, n_steps: int, dt_ms: float
                     ) -> tuple[int, float]:
    """Spike edits a pixel attack makes on one frozen trial: the (fibre, step) cells whose spike
    differs between the clean and the adversarial rates' draws with the same noise, and its
    expectation over draws, ``sum_f |r_adv - r_clean| * window``."""
    from models.spiking.noise import poisson_trains

    a = poisson_trains(seed, slot, r_clean, n_steps, dt_ms)
    b = poisson_trains(seed, slot, r_adv, n_steps, dt_ms)
    return int((a != b).sum()), float(np.abs(np.asarray(r_adv) - np.asarray(r_clean)).sum() * n_steps * dt_ms / 1000.0)


def fresh_success(net, y: int, mask: np.ndarray, repeats: int, *, trains: bool = False) -> float:
    """Fraction of ``repeats`` fresh-noise trials with edits ``mask`` on which the image is misclassified."""
    if repeats <= 0:
        return float("nan")
    s = net(np.repeat(mask[None], repeats, axis=0), noise="fresh", trains=trains)
    return float((margins(s, y) < 0).mean())


def stimulation_rows(image: int, method: str, edit: SpikeEdit, dt_ms: float) -> list[dict]:
    """The edit as a stimulation protocol: one row per delivered spike and per silenced interval."""
    rows = [{"image": image, "method": method, "fibre": int(f), "time_ms": round(float(s * dt_ms), 6),
             "action": "insert", "duration_ms": 0.0} for f, s in edit.inserted]
    rows += [{"image": image, "method": method, "fibre": int(f), "time_ms": round(float(a * dt_ms), 6),
              "action": "silence", "duration_ms": round(float((b - a) * dt_ms), 6)} for f, a, b in edit.silenced]
    return sorted(rows, key=lambda r: (r["time_ms"], r["fibre"]))


# ----------------------------------------------------------------------------- the experiment
class _ImageNet:
    """One image on the engine: class scores for edits on its frozen (or fresh) trials."""

    def __init__(self, engine, x: np.ndarray, seed: int, slot: int = 0):
        self.engine, self.x, self.seed, self.slot = engine, np.asarray(x, np.float64), int(seed), int(slot)
        self.rates = engine.rates_hz(self.x[None])[0]
        self.simulations = 0

    def __call__(self, masks: np.ndarray, noise: str = "frozen", trains: bool = False, trials: int = 1) -> np.ndarray:
        if trials > 1:  # Purkinje scores averaged over the frozen trials slot .. slot + trials - 1
            k = len(masks)
            rep = np.repeat(np.asarray(masks), trials, axis=0)
            slots = np.tile(self.slot + np.arange(trials, dtype=np.int64), k)
            self.simulations += len(rep)
            s = self.engine.predict(np.repeat(self.x[None], len(rep), axis=0), noise="frozen", slots=slots,
                                    seed=self.seed, mf_edits=rep).scores
            return s.reshape(k, trials, -1).mean(axis=1)
        k = len(masks)
        self.simulations += k
        slots = np.full(k, self.slot, np.int64) if noise == "frozen" else np.arange(k, dtype=np.int64)
        seed = self.seed if noise == "frozen" else None
        if trains:
            return self.engine.predict_trains(np.asarray(masks).astype(bool), noise=noise, slots=slots, seed=seed).scores
        return self.engine.predict(np.repeat(self.x[None], k, axis=0), noise=noise, slots=slots, seed=seed,
                                   mf_edits=masks).scores

    def frozen_raster(self) -> np.ndarray:
        from models.spiking.noise import poisson_trains

        return poisson_trains(self.seed, self.slot, self.rates, self.engine.n_steps, self.engine.dt_ms)


def run_spike_attacks(engine, sur, x: np.ndarray, y: np.ndarray, acfg, *, seed: int = 0, progress=None) -> dict:
    """Every spike-domain method of ``acfg`` (``attack.spike_*``) on images ``x``, ``y`` of the network
    in ``engine`` (frozen trial: noise slot 0 at the network's seed). Returns ``rows``
    (:data:`SPIKE_COLUMNS`), ``variability`` (:data:`VARIABILITY_COLUMNS`), ``stimulation``
    (:data:`STIMULATION_COLUMNS`), ``examples`` (per method, the edits and rasters of the first images
    flipped) and ``metrics``."""
    import foolbox as fb
    import torch

    cfg = engine.cfg
    budget = SpikeBudget(acfg.spike_budget, acfg.spike_max_rate_hz, acfg.silence_budget_ms)
    t_lo = max(0.0, cfg.readout_start_ms - acfg.spike_lead_ms)
    grid = EditGrid.build(n_mf=engine.n_inputs, n_steps=engine.n_steps, dt_ms=engine.dt_ms, window_ms=engine.window_ms,
                          t_lo_ms=t_lo, budget=budget, chunk_ms=acfg.silence_block_ms)
    tick = progress or (lambda label: None)
    rows, var_rows, stim, examples = [], [], [], {}
    started = time.time()
    times = {m: 0.0 for m in acfg.spike_methods}
    # pixel attack on the same frozen trial: surrogate PGD (margin loss) at each eps, the smallest that flips
    eps = sorted(e for e in acfg.eps if e > 0)
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    pix_adv = {}
    if eps:
        from attacks.specs import build

        sur.eval()
        fm = fb.PyTorchModel(sur, bounds=(0, 1), device="cpu")
        atk = build("spiking", "pgd", acfg, "margin", model="spiking")
        atk = atk[0] if isinstance(atk, list) else atk
        torch.manual_seed(seed)
        _, clipped, _ = atk(fm, torch.tensor(x32), torch.tensor(np.asarray(y, np.int64)), epsilons=eps)
        pix_adv = {e: c.numpy() for e, c in zip(eps, clipped)}
    var_seed = (int(engine.seed) + 7919) % (2**31)
    for i in range(len(y)):
        net = _ImageNet(engine, x[i], engine.seed)
        yi = int(y[i])
        clean_margin = float(margins(net(np.zeros((1, engine.n_steps, engine.n_inputs), np.int8)), yi)[0])
        base = net.frozen_raster()
        nat = natural_variability(var_seed, net.rates, engine.n_steps, engine.dt_ms, acfg.spike_variability_pairs)
        clean_err = fresh_success(net, yi, np.zeros((engine.n_steps, engine.n_inputs), np.int8), acfg.fresh_repeats)
        p_eps, p_edits, p_exp = float("nan"), float("nan"), float("nan")
        for e in eps:
            xa = pix_adv[e][i].astype(np.float64)
            s = engine.predict(xa[None], noise="frozen", slots=np.zeros(1, np.int64), seed=engine.seed).scores
            if margins(s, yi)[0] < 0:
                p_eps = e
                p_edits, p_exp = pixel_equivalent(engine.seed, 0, net.rates, engine.rates_hz(xa[None])[0],
                                                  engine.n_steps, engine.dt_ms)
                break
        var_rows.append({"image": i, "label": yi, "clean_margin_hz": round(clean_margin, 4),
                         "clean_error_fresh": clean_err, "mf_spikes": int(base.sum()),
                         "natural_variability": float(nat.mean()), "natural_variability_sd": float(nat.std(ddof=1))
                         if len(nat) > 1 else float("nan"), "pixel_eps": p_eps, "pixel_edits": p_edits,
                         "pixel_expected_edits": p_exp})
        if clean_margin <= 0:
            tick(f"image {i}: misclassified, not attacked")
            continue
        for method in acfg.spike_methods:
            t0 = time.time()
            res = attack_image(net, x[i], yi, method, budget=budget, grid=grid, block=acfg.spike_block,
                               max_queries=acfg.spike_queries, window_ms=engine.window_ms, sur=sur,
                               shift_ms=acfg.shift_ms, eot_trials=acfg.spike_eot_trials)
            if method == "shift":
                success = float("nan")  # a frozen-trial diagnostic: shifts of one draw do not exist on another
            else:
                success = fresh_success(net, yi, res["edit"].mask(engine.n_steps, engine.n_inputs), acfg.fresh_repeats)
            times[method] += time.time() - t0
            rows.append({"image": i, "method": method, "edits": int(res["edits"]), "inserted": int(res["inserted"]),
                         "deleted": int(res["deleted"]), "shifted_ms": round(res["shifted_ms"], 6),
                         "queries": int(res["queries"]), "fooled_frozen": bool(res["fooled_frozen"]),
                         "success_fresh": success})
            if method != "shift" and res["fooled_frozen"] and len(stim) < 10 ** 6:
                stim.extend(stimulation_rows(i, method, res["edit"], engine.dt_ms))
            if res["fooled_frozen"] and len(examples.setdefault(method, [])) < acfg.spike_export:
                examples[method].append({"image": i, "label": yi, "edit": res["edit"], "raster": res["raster"]})
        tick(f"image {i}")
    metrics = _summary(rows, var_rows, acfg)
    metrics.update({f"spike_{m}_wall_s": round(t, 2) for m, t in times.items()})
    metrics["spike_wall_s"] = round(time.time() - started, 2)
    metrics["spike_grid_insert_slots"] = int(len(grid.insert_steps))
    metrics["spike_grid_t_lo_ms"] = float(t_lo)
    return {"rows": rows, "variability": var_rows, "stimulation": stim, "examples": examples, "metrics": metrics,
            "grid": grid, "budget": budget}


def _censored_median(values: list[float], flipped: list[bool]) -> float:
    """Over every attacked image, an image not flipped counting as infinitely many edits
    (:func:`analysis.stats.censored_median`: ``inf`` when fewer than half were flipped)."""
    from analysis.stats import censored_median

    return censored_median(values, flipped)


def _summary(rows: list[dict], var_rows: list[dict], acfg) -> dict:
    m: dict[str, Any] = {"spike_images": len(var_rows), "spike_attacked": len({r["image"] for r in rows})}
    nat = np.array([r["natural_variability"] for r in var_rows if r["clean_margin_hz"] > 0], float)
    m["natural_variability_median"] = float(np.median(nat)) if len(nat) else float("nan")
    pix = [r for r in var_rows if r["clean_margin_hz"] > 0]
    m["pixel_edits_median"] = _censored_median([r["pixel_edits"] for r in pix],
                                               [bool(np.isfinite(r["pixel_eps"])) for r in pix]) \
        if any(e > 0 for e in acfg.eps) else float("nan")  # no pixel attack without a positive eps
    for method in acfg.spike_methods:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        m[f"spike_{method}_fooled_frozen"] = float(np.mean([r["fooled_frozen"] for r in sel]))
        m[f"spike_{method}_median_edits_frozen"] = _censored_median([r["edits"] for r in sel],
                                                                    [r["fooled_frozen"] for r in sel])
        if method != "shift":
            fresh = [bool(r["success_fresh"] > 0.5) for r in sel]
            m[f"spike_{method}_success_fresh_mean"] = float(np.nanmean([r["success_fresh"] for r in sel]))
            m[f"spike_{method}_median_edits_fresh"] = _censored_median([r["edits"] for r in sel], fresh)
        m[f"spike_{method}_queries_median"] = float(np.median([r["queries"] for r in sel]))
    return m
