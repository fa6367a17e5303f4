"""What limits the spiking network's learning: readout ceilings and a rate-level replica of its rule.

``cereb diagnose learning --run DIR`` reads a trained spiking run, simulates its granule, Purkinje
and interneuron spike counts on the task's training and test inputs (frozen noise), and reports:

* the accuracy of the trained network and of its learned weights read out without spike noise
  (argmax of the class-mean PF drive ``x . w``);
* readout ceilings on the same granule counts: ridge (any sign), non-negative weights, and
  non-negative weights with a learned subtractive term proportional to the total PF activity (what
  feed-forward inhibition through interneurons can supply);
* a rate-level replica of the training rule on those counts (linearised Purkinje rate fitted to
  the network, the olive's clipped rate code, LTP per PF spike, LTD per climbing-fibre event), run
  with Poisson climbing fibres as configured, with the olive's expected rate instead (no
  climbing-fibre noise), and with an olive five times faster.

It writes ``learning_diagnosis.csv`` (``quantity, variant, train_accuracy, test_accuracy,
detail``) into the run folder and prints the table. Nothing else in the folder is touched.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scripts.common import module_main

DESCRIPTION = "Diagnose what limits the spiking network's learning (readout ceilings, a replica of its rule)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["learning"], help="what to diagnose")
    p.add_argument("--run", metavar="DIR", required=True, help="a trained spiking run folder")
    p.add_argument("--epochs", type=int, default=None, help="replica epochs (default: the run's train.epochs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the replica's climbing-fibre draws")


def nonneg_readout(x, y, n_classes: int, *, subtractive: bool, lam: float = 30.0, iters: int = 3000):
    """Least-squares one-hot readout ``x w + b (- c sum(x))`` with ``w >= 0`` (and ``c >= 0``),
    ridge ``lam`` on ``w``; projected accelerated gradient. Returns a scoring function."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    scale = x.std() or 1.0
    feats = [x / scale, np.ones((len(x), 1))] + ([-x.sum(1, keepdims=True) / scale] if subtractive else [])
    f = np.hstack(feats)
    t = (np.arange(n_classes)[None, :] == np.asarray(y)[:, None]).astype(np.float64)
    nx = x.shape[1]
    reg = np.zeros(f.shape[1])
    reg[:nx] = lam
    free = np.zeros(f.shape[1], bool)
    free[nx] = True  # the bias has any sign
    lip = 2 * (np.linalg.norm(f, 2) ** 2 + lam)
    w = np.zeros((f.shape[1], n_classes))
    z, k = w.copy(), 1.0
    for _ in range(iters):
        grad = 2 * (f.T @ (f @ z - t)) + 2 * reg[:, None] * z
        w_new = z - grad / lip
        w_new[~free] = np.maximum(w_new[~free], 0)
        k_new = (1 + np.sqrt(1 + 4 * k * k)) / 2
        z = w_new + (k - 1) / k_new * (w_new - w)
        w, k = w_new, k_new

    def score(xq):
        xq = np.asarray(xq, dtype=np.float64)
        parts = [xq / scale, np.ones((len(xq), 1))] + ([-xq.sum(1, keepdims=True) / scale] if subtractive else [])
        return np.hstack(parts) @ w

    return score


def replica(cfg, x, y, x_test, y_test, pc_model, n_classes: int, epochs: int, lr_decay: float, seed: int,
            *, cf_noise: bool = True, olive_speed: float = 1.0):
    """The training rule at rate level on fixed granule counts; returns test accuracy per epoch.

    With ``cfg.a_inh > 0`` the MLI-PC plasticity is modelled as a learned per-cell subtractive term
    ``-kd u_j sum(x)`` (``u_j >= 0`` from 0), trained by the same olive with the opposite sign.
    """
    import numpy as np

    rng = np.random.default_rng([seed, 17])
    per = cfg.pc_per_class
    b0, kd, ks = pc_model  # b0: (n_pc,) intercepts, kd, ks: slopes shared by all cells
    teach_s = (cfg.window_ms - cfg.teach_delay_ms) * 1e-3
    readout_s = (cfg.window_ms - cfg.readout_start_ms) * 1e-3
    base, gain, cf_max = cfg.cf_base_hz * olive_speed, cfg.cf_gain * olive_speed, cfg.cf_max_hz * olive_speed
    w = np.clip(cfg.w_init + cfg.w_init_jitter * (2 * rng.random((x.shape[1], n_classes * per)) - 1), 0, cfg.w_max)
    targets = np.full((len(x), n_classes * per), cfg.target_hz_off)
    for c in range(n_classes):
        targets[y == c, c * per:(c + 1) * per] = cfg.target_hz_on

    u = np.zeros(n_classes * per)

    def rates(xa, wa):
        return np.maximum(b0 + kd * (xa @ wa) + (ks - kd * u) * xa.sum(1, keepdims=True), 0) / readout_s

    accs = []
    for epoch in range(epochs):
        lr = cfg.a_ltp * lr_decay ** epoch
        for s in rng.permutation(len(x)):
            r = rates(x[s:s + 1], w)[0]
            expected = np.clip(base + gain * (r - targets[s]), 0, cf_max) * teach_s
            events = rng.poisson(expected) if cf_noise else expected
            # LTP per PF spike; LTD per CF event ~ a_ltd * PF trace, with a_ltd balancing LTP at base
            w += lr * (teach_s / (cfg.window_ms * 1e-3)) * x[s][:, None] * (1 - events / (base * teach_s))[None, :]
            np.clip(w, 0, cfg.w_max, out=w)
            if cfg.a_inh > 0:
                u += (cfg.a_inh * lr_decay ** epoch * (teach_s / (cfg.window_ms * 1e-3)) * x[s].mean()
                      * (events / (base * teach_s) - 1))
                np.maximum(u, 0, out=u)
        scores = rates(x_test, w).reshape(len(x_test), n_classes, per).mean(2)
        accs.append(float((scores.argmax(1) == y_test).mean()))
    return accs


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from sklearn.linear_model import LinearRegression, RidgeClassifierCV

    from core.errors import ConfigError
    from core.runs import write_csv
    from models.spiking.engine import SpikingEngine
    from models.spiking.params import EngineConfig
    from models.spiking.train import load_checkpoint
    from tasks import TaskConfig, load_task

    run_dir = Path(args.run)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.json)")
    cfg, conn, w, seed, _ = load_checkpoint(run_dir / "checkpoint.npz")
    config = json.loads((run_dir / "config.json").read_text())
    ds = load_task(TaskConfig(**config["task"]))
    train_cfg = config.get("train", {})
    epochs = args.epochs if args.epochs is not None else int(train_cfg.get("epochs", 10))
    if epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    lr_decay = float(train_cfg.get("lr_decay", 1.0))
    k = ds.n_classes
    with SpikingEngine(cfg, conn, w, EngineConfig(), seed=seed, noise="frozen") as eng:
        tr, te = eng.predict(ds.x_train), eng.predict(ds.x_test)
    x, xt = tr.counts["grc"].astype(np.float64), te.counts["grc"].astype(np.float64)
    y, yt = ds.y_train, ds.y_test
    rows = []

    def add(quantity, variant, acc_train, acc_test, detail=""):
        rows.append({"quantity": quantity, "variant": variant, "train_accuracy": acc_train,
                     "test_accuracy": acc_test, "detail": detail})

    add("network", "trained spiking network", float((tr.labels == y).mean()), float((te.labels == yt).mean()))
    per = cfg.pc_per_class

    def drive_acc(xa, ya):
        return float(((xa @ w).reshape(len(xa), k, per).mean(2).argmax(1) == ya).mean())

    add("network", "learned weights, no spike noise (argmax class-mean x.w)", drive_acc(x, y), drive_acc(xt, yt))
    ridge = RidgeClassifierCV(alphas=np.logspace(-2, 5, 15)).fit(x, y)
    add("ceiling", "ridge (weights of any sign)", float(ridge.score(x, y)), float(ridge.score(xt, yt)),
        f"alpha {ridge.alpha_:g}")
    for subtractive, name in ((False, "non-negative weights"),
                              (True, "non-negative weights + learned subtractive term ~ total PF activity")):
        score = nonneg_readout(x, y, k, subtractive=subtractive)
        add("ceiling", name, float((score(x).argmax(1) == y).mean()), float((score(xt).argmax(1) == yt).mean()))
    # linearised Purkinje count: b0_j + kd * (x . w_j) + ks * sum(x); slopes shared, intercept per
    # cell (intrinsic drives differ), fitted on the training counts with the intercepts projected out
    pc = tr.counts["pc"].astype(np.float64)
    drive = x @ w
    s_col = np.repeat(x.sum(1)[:, None], conn.n_pc, axis=1)
    feats = np.c_[(drive - drive.mean(0)).ravel(), (s_col - s_col.mean(0)).ravel()]
    lin = LinearRegression(fit_intercept=False).fit(feats, (pc - pc.mean(0)).ravel())
    kd, ks = (float(c) for c in lin.coef_)
    b0 = pc.mean(0) - kd * drive.mean(0) - ks * s_col.mean(0)
    pc_model = (b0, kd, ks)
    detail = (f"PC count = b0_j + {kd:.3g} x.w_j + {ks:.3g} sum(x) (b0 mean {b0.mean():.3g}); "
              f"R2 {lin.score(feats, (pc - pc.mean(0)).ravel()):.2f}")
    for variant, kw in (("replica, Poisson climbing fibres (as configured)", {}),
                        ("replica, expected olive rate (no climbing-fibre noise)", {"cf_noise": False}),
                        ("replica, olive 5x faster (base, gain and ceiling x5)", {"olive_speed": 5.0})):
        accs = replica(cfg, x, y, xt, yt, pc_model, k, epochs, lr_decay, args.seed, **kw)
        add("rule", variant, float("nan"), accs[-1], detail + "; test per epoch " + " ".join(f"{a:.3f}" for a in accs))
    out = run_dir / "learning_diagnosis.csv"
    write_csv(out, rows, list(rows[0]))
    for r in rows:
        print(f"{r['quantity']:8s} {r['variant']:70s} train {r['train_accuracy']:.3f} test {r['test_accuracy']:.3f}  {r['detail']}")
    print(f"wrote {out}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
