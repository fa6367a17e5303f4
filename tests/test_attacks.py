"""Attacks: losses, Foolbox subclasses, the evaluation loop, and the checks that catch planted bugs."""
from __future__ import annotations

import copy
import json

import foolbox as fb
import numpy as np
import pytest
import torch

import eagerpy as ep
from attacks.config import LOSS_NAMES, AttackConfig
from attacks.evaluate import EVALUATION_COLUMNS, ROBUSTNESS_COLUMNS, check_rows, evaluate_attack
from attacks.foolbox_attacks import FGSM, PGD, TracedPGD, make_attack, uniform_noise
from attacks.losses import LOSSES, margin, score_summary
from attacks.suite import run_suite
from core.config import resolve
from core.errors import CerebError, ConfigError
from core.runs import open_run
from models.rate import RateConfig, RateTrainConfig, fit, load, predict_labels
from tasks import TaskConfig, load_task

EPS = (0.0, 0.05, 0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small rate model trained on digits, its Foolbox wrapper, a predict function and 60 test images."""
    ds = load_task(TaskConfig(name="digits"))
    root = tmp_path_factory.mktemp("runs")
    with open_run("rate", {"model_kind": "rate", "model": RateConfig(width=200).__dict__}, 0, root=root) as run:
        fit("rate", ds, RateConfig(width=200), RateTrainConfig(epochs=2), 0, run)
    model = load(run.path)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    predict = lambda a: predict_labels(model, a)  # noqa: E731
    return model, fmodel, predict, ds.x_test[:60].copy(), ds.y_test[:60].copy()


# ----------------------------------------------------------------------------- losses
def test_losses_match_their_definitions():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]])
    labels = torch.tensor([0, 2])
    t_logits, t_labels = ep.astensor(logits), ep.astensor(labels)
    mse = LOSSES["mse"](t_logits, t_labels).raw
    assert torch.allclose(mse, torch.tensor([1.0 + 0.25 + 1.0, 0.01 + 0.09 + 0.64]))
    ce = LOSSES["ce"](t_logits, t_labels).raw
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
    m = LOSSES["margin"](t_logits, t_labels).raw
    assert torch.allclose(m, torch.tensor([0.5 - 2.0, 0.3 - 0.2]))
    # the margin is positive exactly for correctly classified images
    assert (margin(t_logits, t_labels).raw > 0).tolist() == [True, False]
    assert set(LOSSES) == set(LOSS_NAMES)


@pytest.mark.parametrize("loss", ["mse", "ce", "margin"])
def test_subclassed_attacks_ascend_the_chosen_loss(trained, loss):
    model, fmodel, _, x, y = trained
    xt, yt = torch.from_numpy(x[:5]), torch.from_numpy(y[:5])
    for attack in (PGD(loss=loss), FGSM(loss=loss)):
        fn = attack.get_loss_fn(fmodel, ep.astensor(yt))
        value = float(fn(ep.astensor(xt)).raw)
        expected = float(LOSSES[loss](ep.astensor(model(xt)), ep.astensor(yt)).raw.sum())
        assert value == pytest.approx(expected, rel=1e-6)
        assert f"loss={loss}" in repr(attack)


def test_unknown_loss_or_attack_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown attack loss 'hinge'"):
        PGD(loss="hinge")
    with pytest.raises(ConfigError, match="unknown attack 'cw'"):
        make_attack("cw", "margin")


# ----------------------------------------------------------------------------- evaluation, table-driven
ATTACKS = {
    "noise/none": lambda: uniform_noise(),
    "fgsm/mse": lambda: FGSM(loss="mse"),
    "fgsm/ce": lambda: FGSM(loss="ce"),
    "fgsm/margin": lambda: FGSM(loss="margin"),
    "pgd/mse": lambda: PGD(loss="mse", steps=10, rel_stepsize=0.25),
    "pgd/ce": lambda: PGD(loss="ce", steps=10, rel_stepsize=0.25),
    "pgd/margin": lambda: PGD(loss="margin", steps=10, rel_stepsize=0.25),
}


@pytest.fixture(scope="module")
def table(trained):
    _, fmodel, predict, x, y = trained
    rows, evals = [], {}
    for name, make in ATTACKS.items():
        attack, loss = name.split("/")
        ev = evaluate_attack(make(), fmodel, predict, x, y, EPS, model="rate", attack=attack, loss=loss, seed=1,
                             batch_size=25)
        rows += ev.rows
        evals[name] = ev
    return rows, evals


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_respects_eps_bounds_and_the_clean_accuracy(trained, table, name):
    _, _, predict, x, y = trained
    rows, evals = table
    ev = evals[name]
    clean = float((predict(x) == y).mean())
    assert ev.rows[0]["eps"] == 0 and ev.rows[0]["robust_acc"] == clean
    assert list(ev.rows[0])[: len(EVALUATION_COLUMNS)] == EVALUATION_COLUMNS
    delta = np.abs(ev.adversarial - x[None]).reshape(len(EPS), len(x), -1).max(axis=2)
    for i, eps in enumerate(EPS):
        assert delta[i].max() <= eps + 1e-6
        assert ev.adversarial[i].min() >= 0 and ev.adversarial[i].max() <= 1
        # the recorded outcome is what predict says about the recorded inputs
        assert np.array_equal(ev.correct[i], (predict(ev.adversarial[i]) == y) & ev.clean_correct)
    assert not check_rows(ev.rows)


def test_gradient_attacks_beat_noise_and_pgd_beats_fgsm(table):
    rows, evals = table
    assert check_rows(rows) == []  # includes: PGD never weaker than FGSM at the same eps and loss
    at = {name: ev.rows[-1]["robust_acc"] for name, ev in evals.items()}  # eps = 0.3
    assert at["pgd/margin"] < at["noise/none"]
    assert at["pgd/margin"] <= 0.1


def test_pruned_sweep_carries_fooling_inputs_forward(table):
    _, evals = table
    for ev in evals.values():
        for a, b in zip(ev.correct, ev.correct[1:]):
            assert not (b & ~a).any()  # robust at a larger eps implies robust at the smaller one


def test_no_recheck_gives_the_same_result_for_a_deterministic_model_with_fewer_queries(trained):
    _, fmodel, predict, x, y = trained
    seen = {True: 0, False: 0}

    def counting(flag):
        def f(a):
            seen[flag] += len(a)
            return predict(a)
        return f

    evs = {flag: evaluate_attack(PGD(loss="ce", steps=5, abs_stepsize=0.02), fmodel, counting(flag), x, y,
                                 (0.0, 0.05, 0.1, 0.2), model="m", attack="pgd", loss="ce", seed=3, recheck=flag)
           for flag in (True, False)}
    np.testing.assert_array_equal(evs[True].correct, evs[False].correct)
    np.testing.assert_array_equal(evs[True].adversarial, evs[False].adversarial)
    assert seen[False] < seen[True]


def test_known_fooled_images_are_not_attacked_again_and_are_rechecked(trained):
    """An earlier evaluation's fooled images count as fooled without an attack (the strong
    evaluation after the cheap ones), but only if their input still fools ``predict``: an
    'earlier' input that does not fool (here: the clean image) is attacked as usual."""
    _, fmodel, predict, x, y = trained
    cheap = evaluate_attack(FGSM(loss="ce"), fmodel, predict, x, y, (0.0, 0.1), model="m", attack="fgsm", loss="ce")
    fooled = cheap.clean_correct & ~cheap.correct[1]
    assert 0 < fooled.sum() < cheap.clean_correct.sum()
    lying = copy.deepcopy(cheap)
    liar = np.flatnonzero(fooled)[0]
    lying.adversarial[1][liar] = x[liar]  # claims to fool, does not
    attacked = []

    class Recording(PGD):
        def run(self, model, inputs, criterion, *, epsilon, **kw):
            attacked.append(len(inputs))
            return super().run(model, inputs, criterion, epsilon=epsilon, **kw)

    args = (fmodel, predict, x, y, (0.0, 0.1))
    kw = dict(model="m", attack="pgd", loss="ce", seed=1, batch_size=1000)
    alone = evaluate_attack(Recording(loss="ce", steps=5, abs_stepsize=0.02), *args, **kw)
    n_alone = sum(attacked)
    attacked.clear()
    after = evaluate_attack(Recording(loss="ce", steps=5, abs_stepsize=0.02), *args, **kw, known=[lying])
    assert after.rows[1]["n_known_fooled"] == fooled.sum() - 1
    assert sum(attacked) == n_alone - (fooled.sum() - 1)
    # robust after = robust under both; the skipped images carry the earlier fooling input
    assert not (after.correct[1] & ~cheap.correct[1]).any()
    skipped = np.flatnonzero(fooled & (np.arange(len(y)) != liar))
    np.testing.assert_array_equal(after.adversarial[1][skipped], cheap.adversarial[1][skipped])
    assert after.correct[1][liar] == alone.correct[1][liar]


def test_evaluation_is_deterministic_given_the_seed(trained):
    _, fmodel, predict, x, y = trained
    runs = [evaluate_attack(PGD(loss="ce", steps=5, abs_stepsize=0.02), fmodel, predict, x, y, (0.05, 0.1),
                            model="m", attack="pgd", loss="ce", seed=s) for s in (7, 7, 8)]
    assert np.array_equal(runs[0].adversarial, runs[1].adversarial)
    assert not np.array_equal(runs[0].adversarial, runs[2].adversarial)


def test_restarts_take_the_worst_case_per_image(trained):
    _, fmodel, predict, x, y = trained
    one = evaluate_attack(PGD(loss="ce", steps=3, abs_stepsize=0.01), fmodel, predict, x, y, (0.05,),
                          model="m", attack="pgd", loss="ce", seed=0)
    three = evaluate_attack([PGD(loss="ce", steps=3, abs_stepsize=0.01) for _ in range(3)], fmodel, predict, x, y,
                            (0.05,), model="m", attack="pgd", loss="ce", seed=0)
    assert not (three.correct[0] & ~one.correct[0]).any()  # restart 0 is the same attack, same seed
    assert three.rows[0]["restarts"] == 3


def test_extended_sweep_stops_at_the_target_accuracy(trained):
    _, fmodel, predict, x, y = trained
    ev = evaluate_attack(PGD(loss="margin", steps=10, rel_stepsize=0.1), fmodel, predict, x, y, (0.0, 0.01),
                         model="m", attack="pgd", loss="margin", until_acc=0.0, eps_step=0.05, eps_max=1.0)
    assert ev.epsilons[:2] == [0.0, 0.01]
    assert ev.rows[-1]["robust_acc"] == 0.0
    assert all(r["robust_acc"] > 0 for r in ev.rows[:-1])
    assert ev.eps_at(0.0) == ev.epsilons[-1] > 0.01
    assert np.allclose(np.diff(ev.epsilons[1:]), 0.05)


def test_an_interrupted_sweep_resumes_to_the_numbers_of_an_uninterrupted_one(trained):
    """``on_eps`` hands out the evaluation after every eps; resumed from any of them (the extended
    sweep included), the sweep attacks only the eps after it and ends as a call that never stopped."""
    _, fmodel, predict, x, y = trained
    calls = []

    class Counted(PGD):
        def __call__(self, model, inputs, criterion, *, epsilons):
            calls.append(float(epsilons[0]))
            return super().__call__(model, inputs, criterion, epsilons=epsilons)

    kw = dict(model="m", attack="pgd", loss="margin", seed=3, batch_size=25, until_acc=0.0, eps_step=0.05, eps_max=1.0)
    saved = []
    full = evaluate_attack(Counted(loss="margin", steps=5, rel_stepsize=0.25), fmodel, predict, x, y, (0.0, 0.02, 0.04),
                           on_eps=saved.append, **kw)
    assert len(full.epsilons) > 3 and [len(s.epsilons) for s in saved] == list(range(1, len(full.epsilons) + 1))
    for cut in (1, 3, len(full.epsilons) - 1, len(full.epsilons)):
        calls.clear()
        again = evaluate_attack(Counted(loss="margin", steps=5, rel_stepsize=0.25), fmodel, predict, x, y,
                                (0.0, 0.02, 0.04), resume=saved[cut - 1], **kw)
        assert min(calls, default=np.inf) > full.epsilons[cut - 1]  # nothing before the cut is attacked again
        assert again.epsilons == full.epsilons
        assert np.array_equal(again.correct, full.correct) and np.array_equal(again.adversarial, full.adversarial)
        strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
        assert strip(again.rows) == strip(full.rows)
    with pytest.raises(CerebError, match="has eps 0.02 where this sweep has 0.01"):
        evaluate_attack(PGD(loss="margin", steps=5, rel_stepsize=0.25), fmodel, predict, x, y, (0.0, 0.01),
                        resume=saved[1], **kw)


def test_a_suite_resumes_from_its_checkpoint_folder(trained, tmp_path):
    """``run_suite(checkpoint=...)`` saves every evaluation; a second call takes the finished ones whole
    and an interrupted one from its next eps, with the result of a call that was never interrupted."""
    from attacks.suite import load_evaluation, save_evaluation

    _, fmodel, predict, x, y = trained
    cfg = AttackConfig(n=len(y), eps=(0.0, 0.1, 0.2), pgd_steps=4, pgd_stepsize=0.05, strong_steps=8, strong_restarts=2,
                       strong_rel_stepsize=0.2, apgd=False, trace=False)
    first = run_suite(fmodel, predict, x, y, cfg, model="rate", seed=1, batch_size=30, checkpoint=tmp_path / "cp")
    names = sorted(p.stem for p in (tmp_path / "cp").glob("*.npz"))
    assert names == sorted(k.replace("/", "_") for k in first.evaluations) and first.metrics["resumed"] == {}
    # the strong evaluation interrupted after its first eps, PGD-MSE not begun
    strong, _, wall = load_evaluation(tmp_path / "cp" / "strong.npz")
    cut = type(strong)(strong.rows[:1], strong.epsilons[:1], strong.correct[:1], strong.adversarial[:1],
                       strong.clean_correct)
    save_evaluation(tmp_path / "cp" / "strong.npz", cut, complete=False, wall_s=wall)
    (tmp_path / "cp" / "pgd_mse.npz").unlink()
    labels = []
    second = run_suite(fmodel, predict, x, y, cfg, model="rate", seed=1, batch_size=30, checkpoint=tmp_path / "cp",
                       progress=labels.append)
    assert second.metrics["resumed"] == {k: len(ev.epsilons) for k, ev in first.evaluations.items()
                                         if k not in ("pgd/mse", "strong")} | {"strong": 1}
    strip = lambda rows: json.dumps([{k: v for k, v in r.items() if k != "wall_s"} for r in rows])  # noqa: E731
    assert strip(second.rows) == strip(first.rows) and second.messages == first.messages
    assert len(labels) == sum(len(ev.epsilons) for ev in first.evaluations.values())  # every eps ticks once
    (tmp_path / "cp" / "noise_none.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(CerebError, match="noise_none.npz: not a saved attack evaluation"):
        run_suite(fmodel, predict, x, y, cfg, model="rate", seed=1, batch_size=30, checkpoint=tmp_path / "cp")


# ----------------------------------------------------------------------------- planted bugs
class IgnoresEps:
    """A buggy attack: runs PGD at twice the eps it is given and reports that as the result."""

    def __init__(self):
        self.pgd = PGD(loss="margin", steps=5, rel_stepsize=0.5)

    def __call__(self, model, inputs, criterion, *, epsilons):
        raw, clipped, success = self.pgd(model, inputs, criterion, epsilons=[2 * e for e in epsilons])
        return raw, clipped, success


class LeavesBounds:
    """A buggy attack: adds +-eps without clipping to [0, 1]."""

    def __call__(self, model, inputs, criterion, *, epsilons):
        out = [inputs + e * torch.sign(inputs - 0.5 + 1e-3) for e in epsilons]
        return out, out, None


def test_checks_catch_an_attack_that_ignores_eps(trained):
    _, fmodel, predict, x, y = trained
    ev = evaluate_attack(IgnoresEps(), fmodel, predict, x, y, (0.0, 0.05, 0.1), model="m", attack="pgd", loss="margin")
    messages = check_rows(ev.rows)
    assert any("eps=0.05: perturbation 0.1 exceeds eps" in m for m in messages), messages
    assert any("eps=0.1: perturbation 0.2 exceeds eps" in m for m in messages), messages


def test_checks_catch_inputs_outside_the_unit_interval(trained):
    _, fmodel, predict, x, y = trained
    ev = evaluate_attack(LeavesBounds(), fmodel, predict, x, y, (0.1,), model="m", attack="noise", loss="none")
    messages = check_rows(ev.rows)
    assert any("below 0" in m for m in messages) and any("above 1" in m for m in messages), messages


def _row(attack, loss, eps, acc, n=100):
    return {"model": "m", "attack": attack, "loss": loss, "eps": eps, "seed": 0, "n": n,
            "n_correct": round(acc * n), "robust_acc": acc, "mean_linf": eps, "mean_l2": eps,
            "max_linf": eps, "x_min": 0.0, "x_max": 1.0}


def test_checks_catch_robust_accuracy_rising_with_eps():
    rows = [_row("pgd", "mse", e, a) for e, a in [(0.0, 0.9), (0.1, 0.5), (0.2, 0.6), (0.3, 0.2)]]
    messages = check_rows(rows)
    assert messages == ["m pgd/mse: robust accuracy rises with eps (0.5000 at eps=0.1 -> 0.6000 at eps=0.2)"]


def test_checks_catch_pgd_weaker_than_fgsm_and_strong_weaker_than_pgd():
    rows = [_row("fgsm", "ce", 0.1, 0.30), _row("pgd", "ce", 0.1, 0.35), _row("pgd", "margin", 0.1, 0.2),
            _row("strong", "margin+ce", 0.1, 0.25)]
    assert check_rows(rows) == ["m eps=0.1: pgd/ce is weaker than fgsm/ce (robust accuracy 0.3500 > 0.3000)"]
    messages = check_rows(rows, dominance=(("strong", "pgd"),))
    assert any("strong/margin+ce is weaker than pgd/margin" in m for m in messages)
    assert not any("weaker than pgd/ce" in m for m in messages)  # 0.25 <= 0.35
    rows_ok = [_row("fgsm", "ce", 0.1, 0.30), _row("pgd", "ce", 0.1, 0.30), _row("strong", "margin+ce", 0.1, 0.1)]
    assert check_rows(rows_ok, dominance=(("pgd", "fgsm"), ("strong", "pgd"))) == []


def test_worst_case_rows_take_every_attack_into_account(table, trained):
    from attacks.evaluate import worst_case

    _, _, predict, x, y = trained
    _, evals = table
    rows = worst_case(list(evals.values()), x, model="rate")
    assert [r["eps"] for r in rows] == list(EPS)
    for i, row in enumerate(rows):
        both = np.logical_and.reduce([ev.correct[i] for ev in evals.values()])
        assert row["n_correct"] == both.sum()
        assert row["robust_acc"] <= min(ev.rows[i]["robust_acc"] for ev in evals.values())
        assert row["max_linf"] <= EPS[i] + 1e-6
    assert check_rows(rows) == []


# ----------------------------------------------------------------------------- other models
def test_gradient_attack_on_a_numpy_black_box_explains_itself():
    fmodel = fb.models.NumPyModel(lambda a: np.stack([a.sum(1), -a.sum(1)], 1), bounds=(0, 1))
    x, y = np.full((4, 3), 0.5, np.float32), np.zeros(4, np.int64)
    with pytest.raises(CerebError, match="needs gradients"):
        evaluate_attack(PGD(loss="ce", steps=2), fmodel, lambda a: np.zeros(len(a), np.int64), x, y, (0.1,),
                        model="m", attack="pgd", loss="ce")


def test_evaluation_works_on_a_numpy_black_box():
    """Model-agnostic: a decision-free attack on a numpy model, judged by a numpy predict."""
    w = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    logits = lambda a: a @ w  # noqa: E731
    fmodel = fb.models.NumPyModel(logits, bounds=(0, 1))
    x = np.random.default_rng(1).random((30, 16)).astype(np.float32)
    y = logits(x).argmax(1)
    ev = evaluate_attack(uniform_noise(), fmodel, lambda a: logits(a).argmax(1), x, y, (0.0, 0.2, 0.5),
                         model="linear", attack="noise", loss="none")
    assert ev.rows[0]["robust_acc"] == 1.0 and ev.rows[-1]["robust_acc"] < 1.0
    assert check_rows(ev.rows) == []


# ----------------------------------------------------------------------------- the suite
def test_suite_writes_every_attack_and_records_evidence(trained):
    _, fmodel, predict, x, y = trained
    cfg = AttackConfig(n=len(y), eps=(0.0, 0.1, 0.2), pgd_steps=8, pgd_stepsize=0.05, strong_steps=40, strong_restarts=3, strong_rel_stepsize=0.1,
                       trace_gap=-1.0, trace_images=10)
    res = run_suite(fmodel, predict, x, y, cfg, model="rate", seed=0, batch_size=30)
    combos = {(r["attack"], r["loss"]) for r in res.rows}
    assert combos == {("noise", "none"), ("strong", "margin+ce"), ("apgd", "ce+dlr"), ("worst", "all")} | {
        (a, l) for a in ("fgsm", "pgd") for l in LOSS_NAMES}
    assert res.checks_passed and res.metrics["checks_passed"] is True and res.metrics["check_messages"] == []
    strong = [r for r in res.rows if r["attack"] == "strong"]
    assert strong[-1]["robust_acc"] <= cfg.target_acc or strong[-1]["eps"] == cfg.eps_max
    assert res.metrics["strong_eps_at_target"] == min(
        (r["eps"] for r in strong if r["robust_acc"] <= cfg.target_acc), default=None)
    # trace_gap=-1 forces the evidence: per-step rows for the MSE and margin losses
    assert res.metrics["evidence"] == "pgd_traces.csv"
    steps = [r["step"] for r in res.traces if r["loss"] == "mse"]
    assert steps == list(range(cfg.pgd_steps))
    assert all(r["grad_l2_mean"] >= 0 for r in res.traces)


def test_attack_table_builds_every_attack_from_the_config_and_stamps_one_schema(trained):
    from attacks.spiking import SpikingAttackConfig
    from attacks.specs import ATTACKS, build, spec, stamp

    class Box:  # what the spiking factories need of the black box
        def labels(self, a):
            return np.zeros(len(a), dtype=np.int64)

    rate_cfg = AttackConfig(pgd_steps=7, strong_steps=11, strong_restarts=3, apgd_steps=13, square_iters=17)
    spk_cfg = SpikingAttackConfig(pgd_steps=7, restarts=2, hybrid_steps=9, apgd_steps=13, square_iters=17)
    for (suite, name), s in ATTACKS.items():
        assert s.suite == suite and s.name == name and s.norm in ("linf", "l2")
        if s.factory is None:
            continue
        cfg = rate_cfg if suite == "rate" else spk_cfg
        loss = {"apgd": "ce+dlr", "noise": "none", "square": "none"}.get(name, "margin")
        built = build(suite, name, cfg, loss, bb=Box(), model=suite, batch_size=8)
        for atk in built if isinstance(built, list) else [built]:
            assert callable(atk), (suite, name)
    # the factories read the configuration
    assert build("rate", "pgd", rate_cfg, "mse").steps == 7
    assert [a.steps for a in build("rate", "strong", rate_cfg)] == [11, 11, 11]
    spk_pgd = build("spiking", "pgd", spk_cfg, "margin", model="spiking")
    assert len(spk_pgd) == 3 and type(spk_pgd[-1]).__name__ == "FGSM"  # 2 restarts + FGSM
    assert [type(a).__name__ for a in build("spiking", "hybrid", spk_cfg, "margin", bb=Box())] == ["HybridPGD", "PGD"]
    assert [a.loss for a in build("rate", "apgd", rate_cfg, "ce+dlr")] == ["ce", "dlr"]
    with pytest.raises(ValueError, match="unknown rate attack 'hybrid'"):
        spec("rate", "hybrid")
    with pytest.raises(ValueError, match="has no factory"):
        build("spiking", "hsja-l2", spk_cfg)
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        stamp({}, "rate", "pgd", noise_mode="warm")
    # a rate suite's rows carry every column of the one schema, stamped from the table
    _, fmodel, predict, x, y = trained
    cfg = AttackConfig(n=len(y), eps=(0.0, 0.1), losses=("mse",), pgd_steps=4, pgd_stepsize=0.05, strong=False,
                       apgd=False)
    rows = run_suite(fmodel, predict, x, y, cfg, model="rate").rows
    assert {r["attack"] for r in rows} == {"noise", "fgsm", "pgd", "worst"}
    for r in rows:
        assert set(ROBUSTNESS_COLUMNS) <= set(r), r
        assert r["noise_mode"] == "none" and r["norm"] == "linf" and r["queries"] == 0
        assert r["source"] == {"noise": "none", "worst": "all"}.get(r["attack"], "rate")


def test_headline_metrics_are_written_at_the_configured_eps(trained):
    _, fmodel, predict, x, y = trained
    cfg = AttackConfig(n=len(y), eps=(0.0, 0.05, 0.1), fgsm=False, losses=("mse",), pgd_steps=4, pgd_stepsize=0.05,
                       strong=False, apgd=False, headline_eps=(0.05,))
    m = run_suite(fmodel, predict, x, y, cfg, model="rate").metrics
    assert {"robust_acc_worst_eps0.05", "robust_acc_pgd_mse_eps0.05", "robust_acc_noise_none_eps0.05"} <= set(m)
    assert not [k for k in m if k.endswith(("eps0.1", "eps0.3"))]


def test_suite_reports_failed_checks_instead_of_hiding_them(trained, monkeypatch):
    _, fmodel, predict, x, y = trained
    import attacks.foolbox_attacks as fa  # where the attack table's factories (attacks.specs) find it

    monkeypatch.setattr(fa, "uniform_noise", lambda: IgnoresEps())
    cfg = AttackConfig(n=len(y), eps=(0.0, 0.1), fgsm=False, pgd=False, strong=False)
    res = run_suite(fmodel, predict, x, y, cfg, model="rate")
    assert res.metrics["checks_passed"] is False
    assert any("exceeds eps" in m for m in res.metrics["check_messages"])


def test_traced_pgd_records_one_row_per_step(trained):
    model, fmodel, _, x, y = trained
    atk = TracedPGD(loss="mse", steps=4, abs_stepsize=0.01)
    atk(fmodel, torch.from_numpy(x[:10]), torch.from_numpy(y[:10]), epsilons=[0.1])
    assert [r["step"] for r in atk.trace] == [0, 1, 2, 3]
    assert atk.trace[-1]["loss_mean"] >= atk.trace[0]["loss_mean"]  # the attack climbs its loss
    # the score summary the trace records agrees with its definitions on the model's clean scores
    z = model(torch.from_numpy(x[:10])).detach().numpy().astype(np.float64)
    true = z[np.arange(10), y[:10]]
    summary = score_summary(z, y[:10])
    assert summary["true_score_mean"] == pytest.approx(true.mean())
    assert summary["other_score_mean"] == pytest.approx(((z.sum(1) - true) / 9).mean())
    assert summary["margin_mean"] == pytest.approx(float(margin(ep.astensor(torch.from_numpy(z)),
                                                               ep.astensor(torch.from_numpy(y[:10]))).raw.mean()))
    assert all({"true_score_mean", "other_score_mean"} <= set(r) for r in atk.trace)


@pytest.mark.parametrize("override,message", [
    ({"eps": [0.0, -0.1]}, "attack.eps must be >= 0, got -0.1"),
    ({"losses": ["mse", "hinge"]}, "unknown attack loss 'hinge'"),
    ({"strong_restarts": 0}, "attack.strong_restarts must be >= 1"),
    ({"n": 0}, "attack.n must be >= 1"),
    ({"apgd_losses": ["ce", "margin"]}, "unknown APGD loss 'margin'"),
    ({"apgd_steps": 0}, "attack.apgd_steps must be >= 1"),
    ({"headline_eps": [-0.1]}, "attack.headline_eps must be >= 0, got -0.1"),
])
def test_attack_config_rejects_bad_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(AttackConfig, override)


def test_strong_pgd_fools_every_image_plain_pgd_fools_from_the_same_start(trained):
    from attacks.foolbox_attacks import StrongPGD

    model, fmodel, predict, x, y = trained
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    fooled = {}
    for cls in (PGD, StrongPGD):
        torch.manual_seed(3)  # same random start
        _, clipped, _ = cls(loss="margin", steps=15, rel_stepsize=0.3)(fmodel, xt, yt, epsilons=[0.1])
        adv = clipped[0].numpy()
        assert np.abs(adv - x).max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        fooled[cls] = predict(adv) != y
    assert not (fooled[PGD] & ~fooled[StrongPGD]).any()
    assert fooled[StrongPGD].sum() >= fooled[PGD].sum() > 0


# ----------------------------------------------------------------------------- APGD (AutoAttack's white-box core)
def test_apgd_is_at_least_as_strong_as_plain_pgd_and_respects_eps(trained):
    """APGD-CE and APGD-DLR (ART) with 30 iterations against the paper's 40-step PGD, on the same
    images, paired: APGD must not be significantly weaker (it is the stronger attack in the
    literature), and it must break most images at a budget where PGD does."""
    from attacks.apgd import APGD
    from attacks.stats import mcnemar

    _, fmodel, predict, x, y = trained
    eps = (0.0, 0.05, 0.1)
    pgd = evaluate_attack(PGD(loss="ce", steps=40, abs_stepsize=0.01), fmodel, predict, x, y, eps, model="rate",
                          attack="pgd", loss="ce", seed=3)
    apgd = evaluate_attack([APGD(loss="ce", steps=30), APGD(loss="dlr", steps=30)], fmodel, predict, x, y, eps,
                           model="rate", attack="apgd", loss="ce+dlr", seed=3)
    assert not check_rows(apgd.rows)  # within eps and [0, 1]
    for k in (1, 2):
        t = mcnemar(apgd.correct[k], pgd.correct[k])  # only_a: robust under APGD, fooled by PGD
        assert not (t.only_a > t.only_b and t.p_value < 0.05), (k, t)
    assert apgd.rows[2]["robust_acc"] <= pgd.rows[2]["robust_acc"] + 0.05
    assert apgd.rows[2]["robust_acc"] < 0.5 * apgd.rows[0]["robust_acc"]  # not vacuous: it breaks images


def test_apgd_explains_what_it_cannot_attack(trained):
    from attacks.apgd import APGD

    _, fmodel, _, x, y = trained
    black_box = fb.models.NumPyModel(lambda a: np.zeros((len(a), 10)), bounds=(0, 1))
    with pytest.raises(TypeError, match="PyTorchModel"):
        APGD()(black_box, x[:2], y[:2], epsilons=[0.1])
    with pytest.raises(ValueError, match="loss"):
        APGD(loss="margin")
    two = fb.PyTorchModel(torch.nn.Linear(x.shape[1], 2).eval(), bounds=(0, 1))
    with pytest.raises(ValueError, match="three classes"):
        APGD(loss="dlr")(two, torch.from_numpy(x[:2]), torch.from_numpy(y[:2] % 2), epsilons=[0.1])


def test_suite_skips_apgd_dlr_on_two_classes():
    rng = np.random.default_rng(1)
    net = torch.nn.Linear(6, 2)
    fmodel = fb.PyTorchModel(net.eval(), bounds=(0, 1))
    x = rng.uniform(0.2, 0.8, (20, 6)).astype(np.float32)
    y = net(torch.from_numpy(x)).argmax(1).numpy()
    predict = lambda a: net(torch.tensor(np.asarray(a, np.float32))).argmax(1).numpy()  # noqa: E731
    cfg = AttackConfig(n=20, eps=(0.0, 0.1), fgsm=False, pgd=False, strong=False, apgd_steps=10)
    res = run_suite(fmodel, predict, x, y, cfg, model="rate")
    assert {(r["attack"], r["loss"]) for r in res.rows} >= {("apgd", "ce")}
