"""Mechanism verdicts on planted synthetic studies: effects that exist are found, null effects are
called null with their minimal detectable effect, and the multiple-comparison control holds."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import verdicts as vd
from analysis.findings import reference, verdicts

WIDTHS = (500, 1000, 2000, 4000)
KS = (1, 2, 4, 16, 64)
SEEDS = range(5)


def planted(rng, *, ltd_effect=0.0, width_effect=0.0, k_effect=0.0, spiking_offset=0.0, sd=0.03):
    """A one-factor-at-a-time study like studies/answer_digits.yaml with planted effects (fractions):
    ``width_effect`` per doubling of width, ``k_effect`` per halving of K, LTD on - off, and a
    spiking - rate offset; seed-to-seed noise ``sd``."""
    rows = []
    for kind, on in (("spiking", "cf"), ("rate", "ma")):
        base = 0.4 + (spiking_offset if kind == "spiking" else 0.0)
        configs = {(w, 4, on) for w in WIDTHS} | {(2000, k, on) for k in KS} | {(2000, 4, "none")}
        for w, k, ltd in sorted(configs, key=str):
            for s in SEEDS:
                robust = (base + width_effect * math.log2(w / 2000) - k_effect * math.log2(k / 4)
                          + (ltd_effect if ltd != "none" else 0.0) + rng.normal(0, sd))
                rows.append({"model_kind": kind, "width": w, "k": k, "ltd": ltd, "granule": "random",
                             "task": "digits", "seed": s, "robust": robust, "clean": 0.8 + rng.normal(0, 0.01),
                             "attack_run": f"{kind}-{w}-{k}-{ltd}-{s}"})
    return rows


def by(table, kind, mech):
    return next(r for r in table if r["model_kind"] == kind and r["mechanism"] == mech)


def test_reference_is_the_centre_of_the_design():
    rows = planted(np.random.default_rng(0))
    assert reference([r for r in rows if r["model_kind"] == "spiking"]) == (2000, 4, "cf", "random", "digits")
    assert reference([r for r in rows if r["model_kind"] == "rate"]) == (2000, 4, "ma", "random", "digits")


def test_planted_ltd_effect_is_found_and_null_mechanisms_are_called_null():
    rows = planted(np.random.default_rng(1), ltd_effect=0.15)
    table, _ = verdicts(rows)
    for kind in ("spiking", "rate"):
        ltd = by(table, kind, "ltd")
        assert ltd["verdict"].startswith("helps"), ltd
        assert ltd["ci_low"] < 0.15 < ltd["ci_high"]
        assert ltd["n"] == 5 and ltd["p_holm"] < 0.05
        for mech in ("width", "k"):
            r = by(table, kind, mech)
            assert r["verdict"].startswith("no detectable effect"), r
            assert 0 < r["mde"] < 0.2 and f"{100 * r['mde']:.1f} points" in r["verdict"]
    assert by(table, "spiking - rate", "model")["verdict"].startswith("no detectable effect")


def test_planted_width_and_k_effects_have_the_right_sign_and_size():
    rows = planted(np.random.default_rng(2), width_effect=0.05, k_effect=-0.04, spiking_offset=-0.2)
    table, _ = verdicts(rows)
    for kind in ("spiking", "rate"):
        w = by(table, kind, "width")
        # the fitted difference between width 4000 and 500 is 3 doublings x 0.05
        assert w["verdict"].startswith("helps") and w["ci_low"] < 0.15 < w["ci_high"]
        k = by(table, kind, "k")
        # K 1 vs 64: 6 halvings of K at -0.04 each -> sparser hurts by 0.24
        assert k["verdict"].startswith("hurts") and k["ci_low"] < -0.24 < k["ci_high"]
    m = by(table, "spiking - rate", "model")
    # seed noise 0.03 per group of 5: the standard error of the difference is 0.019
    assert m["verdict"].startswith("the spiking network is less robust") and abs(m["effect"] + 0.2) < 0.06


def test_holm_matches_the_hand_computed_step_down():
    assert vd.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = vd.holm([0.2, math.nan, 0.01])
    assert math.isnan(out[1]) and out == pytest.approx([0.2, out[1], 0.02], nan_ok=True)


def test_a_lone_raw_p_below_alpha_is_not_a_verdict_after_holm():
    rows = [vd._row("rate", m, "", "", 5, test="t", effect=0.05, p_value=p, mde=0.1)
            for m, p in (("width", 0.03), ("ltd", 0.5), ("k", 0.6), ("width", 0.7), ("ltd", 0.4), ("k", 0.9))]
    vd.verdict_table(rows)
    assert rows[0]["p_holm"] == pytest.approx(0.18)
    assert rows[0]["verdict"].startswith("no detectable effect")


def test_holm_controls_the_family_wise_error_on_null_studies():
    # 300 null studies of 7 tests each: uncorrected, about 1 - 0.95**7 = 30% of them claim an effect;
    # with Holm at most about 5% (binomial 95% upper bound at 300 studies: ~8%)
    rng = np.random.default_rng(3)
    raw = holm_hits = 0
    n = 300
    for _ in range(n):
        table, _ = verdicts(planted(rng))
        raw += any(r["p_value"] < 0.05 for r in table)
        holm_hits += any(r["verdict"].startswith(("helps", "hurts", "the spiking")) for r in table)
    assert raw / n > 0.15
    assert holm_hits / n <= 0.08


def test_planned_mde_gives_80_percent_power_by_simulation():
    sd, n = 0.05, 5
    effect = vd.planned_mde("paired", sd, n)
    rng = np.random.default_rng(4)
    d = rng.normal(effect, sd, size=(4000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    from scipy import stats

    power = float(np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)))
    assert 0.77 < power < 0.83
    # two-sample and trend designs: monotone in sd and n
    assert vd.planned_mde("two-sample", 0.05, 5) > vd.planned_mde("two-sample", 0.05, 10)
    assert vd.planned_mde("trend", 0.05, 5, levels=WIDTHS) < vd.planned_mde("trend", 0.1, 5, levels=WIDTHS)
    with pytest.raises(ValueError):
        vd.planned_mde("trend", 0.05, 5, levels=(1, 2))


def test_too_few_runs_say_why():
    rows = [r for r in planted(np.random.default_rng(5)) if r["seed"] < 2]
    table, _ = verdicts(rows)
    ltd = by(table, "spiking", "ltd")
    assert ltd["test"] == "" and "have 2" in ltd["note"] and ltd["verdict"].startswith("not tested")


def test_a_control_that_does_not_learn_is_flagged_as_confounded():
    rng = np.random.default_rng(6)
    rows = planted(rng)
    for r in rows:  # LTD off: the network stays at chance, so it is robust on nothing
        if r["ltd"] == "none":
            r["clean"], r["robust"] = 0.12 + rng.normal(0, 0.01), 0.04 + rng.normal(0, 0.01)
    table, _ = verdicts(rows)
    ltd = by(table, "spiking", "ltd")
    assert ltd["confounded"] and "confounded: clean accuracy changes by" in ltd["verdict"]
    from analysis.findings import _answer

    text = _answer(table)
    assert "how well the network classifies at all" in text
    # the closing sentences name the confounded mechanism apart from the clean findings
    closing = text.split("For ")[-1]
    assert closing.startswith("LTD (spiking)") and "robust accuracy moved together with clean accuracy" in closing
    assert "none of the three circuit features made the model measurably more robust" in text
    # a planted LTD effect on robustness alone (clean unchanged) is not flagged
    table, _ = verdicts(planted(np.random.default_rng(7), ltd_effect=0.15))
    assert not by(table, "spiking", "ltd")["confounded"]
