"""Spike-domain input and attacks (:mod:`attacks.spikes`):

- explicit mossy-fibre spike trains reproduce the rate path when they are the Poisson draws it makes;
- budgets are enforced exactly (at the budget passes, one over fails);
- every attack keeps its hard query budget, counted on the network itself;
- the stimulation protocol round-trips through the NWB file.
"""
from __future__ import annotations

import numpy as np
import pytest

from attacks.decision import QueryBudgetExceeded
from attacks.spikes import (SPIKE_METHODS, EditGrid, SpikeBudget, SpikeEdit, SpikeQueries, attack_image,
                            budget_violations, margins, natural_variability)
from models.spiking.noise import poisson_trains
from models.spiking.params import SpikingConfig

N_IN, N_CLASSES = 16, 2
CFG = SpikingConfig(width=60, pc_per_class=2, grc_per_goc=20, window_ms=100.0, dt_ms=0.2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net():
    from models.spiking.network import make_connectivity

    conn = make_connectivity(CFG, N_IN, N_CLASSES, seed=1)
    weights = np.random.default_rng(2).random((conn.n_grc, conn.n_pc))
    return conn, weights


def _engine(net, **kw):
    from models.spiking.engine import SpikingEngine

    conn, weights = net
    return SpikingEngine(CFG, conn, weights, workers=1, noise="frozen", seed=11, **kw)


def test_spike_trains_reproduce_the_rate_path_on_matched_draws(net):
    x = np.random.default_rng(0).random((5, N_IN))
    slots = np.array([0, 3, 3, 7, 1])
    with _engine(net, record=("mf", "grc", "pc")) as eng:
        if eng.backend != "kernel":
            pytest.skip("no C compiler: the spike-domain input needs the compiled kernel")
        ref = eng.predict(x, slots=slots)
        draws = np.stack([poisson_trains(11, s, eng.rates_hz(x[q:q + 1])[0], eng.n_steps, eng.dt_ms)
                          for q, s in enumerate(slots)])
        # the mossy fibres fired exactly the draws poisson_trains computes
        for q in range(len(x)):
            i, t = ref.spikes["mf"][q]
            step = np.rint(t / eng.dt_ms).astype(int)
            got = np.zeros_like(draws[q])
            got[step, i] = True
            assert np.array_equal(got, draws[q])
        trains = [(np.nonzero(d)[1], np.nonzero(d)[0] * eng.dt_ms) for d in draws]
        for out in (eng.predict_trains(trains, slots=slots), eng.predict_trains(draws, slots=slots),
                    eng.predict(x, slots=slots, mf_edits=np.zeros((5, eng.n_steps, N_IN), np.int8)),
                    eng.predict(x, slots=slots, mf_edits=draws.astype(np.int8))):  # +1 where it fires anyway
            for pop in ("grc", "goc", "mli", "pc"):
                assert np.array_equal(out.counts[pop], ref.counts[pop]), pop
            assert np.array_equal(out.scores, ref.scores)
        # silencing every fibre leaves the granule layer without input: fewer granule spikes
        silent = eng.predict(x, slots=slots, mf_edits=np.full((5, eng.n_steps, N_IN), -1, np.int8))
        assert silent.counts["grc"].sum() < ref.counts["grc"].sum()
        for bad in ((N_IN, 1.0), (0, -0.05), (0, CFG.window_ms)):
            with pytest.raises(ValueError, match="outside"):
                eng.predict_trains([(np.array([bad[0]]), np.array([bad[1]]))])
        eng.predict_trains([(np.array([0]), np.array([CFG.window_ms - 0.05]))])  # the last step holds it
        with pytest.raises(ValueError, match="shape"):
            eng.predict(x, mf_edits=np.zeros((5, 3, N_IN), np.int8))
    with _engine(net) as eng:  # the batched path (no recording), threads over the queries
        for out in (eng.predict_trains(draws, slots=slots),
                    eng.predict(x, slots=slots, mf_edits=np.zeros((5, eng.n_steps, N_IN), np.int8))):
            for pop in ("grc", "goc", "mli", "pc"):
                assert np.array_equal(out.counts[pop], ref.counts[pop]), pop
        one = np.zeros((5, eng.n_steps, N_IN), np.int8)
        one[2, :, 0] = -1  # the third query's first fibre silenced: only that query can change
        out = eng.predict(x, slots=slots, mf_edits=one)
        keep = np.arange(5) != 2
        assert np.array_equal(out.counts["grc"][keep], ref.counts["grc"][keep])
    with _engine(net, backend="brian2") as eng:
        with pytest.raises(ValueError, match="needs the compiled kernel"):
            eng.predict(x[:1], mf_edits=np.zeros((1, eng.n_steps, N_IN), np.int8))


def test_spike_budgets_are_enforced_exactly():
    budget = SpikeBudget(max_inserted=4, max_rate_hz=500.0, silence_ms=20.0)  # >= 2 ms apart
    dt, n_steps, n_mf = 0.2, 500, 8
    ok = SpikeEdit(np.array([[0, 100], [0, 110], [1, 100], [2, 499]]), np.array([[3, 0, 50], [3, 60, 110]]))
    assert budget_violations(ok, budget, n_steps, n_mf, dt) == []  # 4 spikes, 2 ms apart, 20 fibre-ms: at the budget
    bad = {
        "5 spikes delivered": SpikeEdit(np.array([[0, 100], [0, 110], [1, 100], [2, 499], [4, 7]]), ok.silenced),
        "ms apart": SpikeEdit(np.array([[0, 100], [0, 109]]), ok.silenced),  # 1.8 ms < 2 ms
        "20.2 fibre-ms silenced": SpikeEdit(ok.inserted, np.array([[3, 0, 50], [3, 60, 111]])),
        "overlap": SpikeEdit(ok.inserted, np.array([[3, 0, 50], [3, 49, 60]])),
        "outside": SpikeEdit(np.array([[8, 1]]), ok.silenced),
        "empty": SpikeEdit(ok.inserted, np.array([[3, 50, 50]])),
        "both excited and silenced": SpikeEdit(ok.inserted, np.array([[1, 0, 50]])),
    }
    for what, edit in bad.items():
        problems = budget_violations(edit, budget, n_steps, n_mf, dt)
        assert any(what in p for p in problems), (what, problems)
    # the grid puts delivered spikes exactly one gap apart, from t_lo to 1 ms before the end
    grid = EditGrid.build(n_mf=n_mf, n_steps=n_steps, dt_ms=dt, window_ms=100.0, t_lo_ms=10.0, budget=budget,
                          chunk_ms=10.0)
    steps = np.sort(grid.insert_steps)
    assert steps[0] == 50 and steps[-1] <= 495 and set(np.diff(steps)) == {10}
    assert len(set(grid.insert_steps[:4] // 100)) >= 3  # a block of 4 spreads over the window


class _CountingNet:
    """A stand-in network whose margin falls with the edits on fibre 0 (and silence on fibre 1):
    deterministic, and counting every simulation it is asked for."""

    def __init__(self, n_steps, n_mf, dt_ms, need: int):
        self.n_steps, self.n_mf, self.dt_ms, self.need = n_steps, n_mf, dt_ms, need
        self.rates = np.full(n_mf, 50.0)
        self.simulations = 0
        self.base = poisson_trains(3, 0, self.rates, n_steps, dt_ms)

    def __call__(self, masks, noise="frozen", trains=False, trials=1):
        masks = np.asarray(masks)
        self.simulations += len(masks) * trials
        if trains:  # a shifted raster: spikes of fibre 0 after 50 ms count against the margin
            push = masks[:, self.n_steps // 2:, 0].sum(axis=1) - self.base[self.n_steps // 2:, 0].sum()
            margin = 0.5 - 0.3 * np.abs(push)  # two spikes moved across 50 ms flip it
        else:
            margin = self.need - (masks[:, :, 0] > 0).sum(axis=1) - 0.05 * (masks[:, :, 1] < 0).sum(axis=1) + 0.5
        return np.stack([np.zeros_like(margin, dtype=float), margin.astype(float)], axis=1)

    def frozen_raster(self):
        return self.base


@pytest.mark.parametrize("method", SPIKE_METHODS)
def test_every_spike_attack_keeps_its_query_budget_and_its_spike_budget(method):
    import torch

    from models.surrogate import CerebellumSurrogate  # noqa: F401  (the gradient method's surrogate type)

    budget = SpikeBudget(max_inserted=12, max_rate_hz=500.0, silence_ms=30.0)
    grid = EditGrid.build(n_mf=4, n_steps=500, dt_ms=0.2, window_ms=100.0, t_lo_ms=10.0, budget=budget, chunk_ms=10.0)

    class LinearSurrogate:  # d margin / d rate < 0 on fibre 0 only
        def granule_golgi(self, r):
            return r, None

        def mli_rates(self, r):
            return None

        def pc_rates(self, r, _):
            return r

        def scores_from_pc(self, r):
            return torch.stack([torch.zeros_like(r[:, 0]), 100.0 - r[:, 0]], dim=1)

    # one the attacks can meet, one they cannot, and budgets too small for anything but the clean check
    for max_queries, need in ((40, 5), (7, 50), (1, 5), (2, 5)):
        net = _CountingNet(500, 4, 0.2, need)
        res = attack_image(net, None, 1, method, budget=budget, grid=grid, block=3, max_queries=max_queries,
                           window_ms=100.0, sur=LinearSurrogate(), shift_ms=10.0, eot_trials=3)
        assert net.simulations <= max_queries, (method, net.simulations)
        assert res["queries"] == net.simulations
        if method != "shift":
            assert budget_violations(res["edit"], budget, 500, 4, 0.2) == []
            assert res["inserted"] == len(res["edit"].inserted) <= budget.max_inserted
            if res["fooled_frozen"]:
                m = margins(net(res["edit"].mask(500, 4)[None]), 1)[0]
                assert m < 0  # what it returns does flip the decision
        if need == 50 and method != "shift":
            assert not res["fooled_frozen"]  # 50 delivered spikes on fibre 0 are over the budget of 12
        if max_queries <= 2 and method != "shift":  # at most one move of 3 spikes: not enough
            assert not res["fooled_frozen"]
        if max_queries == 40:
            assert res["fooled_frozen"], method  # 6 spikes on fibre 0 (two blocks of 3) flip it
            if method != "shift":
                assert res["inserted"] == 6 and res["deleted"] == 0  # pruning took the useless moves back
    q = SpikeQueries(_CountingNet(500, 4, 0.2, 1), 5)
    q(np.zeros((5, 500, 4), np.int8))
    with pytest.raises(QueryBudgetExceeded):
        q(np.zeros((1, 500, 4), np.int8))


def test_censored_median_is_inf_only_when_fewer_than_half_reached():
    from analysis.stats import censored_median

    assert censored_median([5, 9, 1, 7], [True, True, False, False]) == 9  # half reached: with <= 9 edits
    assert censored_median([5, 9, 1, 7], [True, False, False, False]) == np.inf
    assert censored_median([5, 9, 1], [True, True, False]) == 9
    assert censored_median([3, 1, 2], [True, True, True]) == 2
    assert np.isnan(censored_median([], []))


def test_natural_variability_is_the_count_difference_of_two_draws():
    rates = np.array([0.0, 20.0, 200.0])
    v = natural_variability(5, rates, 500, 0.2, pairs=200)
    # two independent Poisson counts of mean m differ by E|X - Y|, about sqrt(4m/pi) for large m
    m = rates * 0.1
    expect = np.sqrt(4 * m[2] / np.pi) + 0.0 + np.sqrt(4 * m[1] / np.pi)
    assert abs(v.mean() - expect) < 0.15 * expect
    assert natural_variability(5, np.zeros(3), 500, 0.2, pairs=3).sum() == 0


def test_stimulation_protocol_round_trips_through_nwb(tmp_path):
    pytest.importorskip("pynwb")
    from analysis.nwb import read_nwb, validate_nwb, write_nwb

    edit = SpikeEdit(np.array([[2, 100], [2, 150], [5, 400]]), np.array([[1, 50, 100], [3, 200, 250]]))
    empty = {"i": np.zeros(0, np.int64), "t": np.zeros(0)}
    trials = {"pops": ["mf", "pc"], "n": {"mf": 8, "pc": 4},
              "trains": {"mf": [(np.array([2, 2]), np.array([20.0, 30.0])), (np.array([0]), np.array([5.0]))],
                         "pc": [(empty["i"], empty["t"]), (np.array([1]), np.array([40.0]))]},
              "x": np.zeros((2, 8)), "trial_input": np.arange(2), "trial_repeat": np.zeros(2, np.int64),
              "trial_label": np.array([1, 1]), "trial_predicted": np.array([1, 0]),
              "trial_noise_seed": np.array([0, 0]), "trial_noise_slot": np.zeros(2, np.int64),
              "input_condition": np.array(["clean", "adversarial"]), "window_ms": 100.0, "dt_ms": 0.2,
              "n_classes": 2, "mf_rate_min_hz": 5.0, "mf_rate_max_hz": 300.0,
              "stimulation": [None, edit.as_protocol(0.2)]}
    path = write_nwb(tmp_path / "s.nwb", trials, identifier="t", session_description="test")
    assert validate_nwb(path) == []
    back = read_nwb(path)
    assert len(back["stimulation"]) == 2
    f0, t0 = back["stimulation"][0]["inserted"]
    assert len(f0) == 0 and len(back["stimulation"][0]["silenced"][0]) == 0
    f1, t1 = back["stimulation"][1]["inserted"]
    assert list(f1) == [2, 2, 5] and np.allclose(t1, [20.0, 30.0, 80.0])
    sf, sa, sb = back["stimulation"][1]["silenced"]
    assert list(sf) == [1, 3] and np.allclose(sa, [10.0, 40.0]) and np.allclose(sb, [20.0, 50.0])
    assert list(back["trial_condition"]) == ["clean", "adversarial"]
