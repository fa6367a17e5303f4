"""The rate model: granule fan-in, the running-mean LTD, gradients, training, checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import resolve
from core.errors import CheckpointError, ConfigError
from core.runs import load_npz, open_run, read_csv, save_npz
from models.rate import (
    MLP,
    MLPConfig,
    MLPTrainConfig,
    RateConfig,
    RateModel,
    RateTrainConfig,
    ema_scan,
    fit,
    granule_indices,
    load,
    load_checkpoint,
    predict_labels,
    save_checkpoint,
)
from tasks import TaskConfig, load_task


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_connectivity(model: RateModel) -> torch.Tensor:
    """The granule layer's effective matrix G, read off its Jacobian (so every code path is tested)."""
    x = torch.rand(model.n_inputs, dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda v: model.granule.preactivation(v[None])[0], x)


# ----------------------------------------------------------------------------- granule layer
# (granule, k, n_inputs): k=4 of 784 takes the index-gather path, k=60 of 784 the dense cache
FAN_IN_CASES = [("fc", 4, 64), ("local", 4, 784), ("local", 60, 784), ("random", 4, 784), ("random", 60, 784),
                ("random", 64, 64)]


@pytest.mark.parametrize("granule,k,n_inputs", FAN_IN_CASES)
def test_each_granule_cell_has_exactly_its_fan_in(granule, k, n_inputs):
    model = RateModel(RateConfig(granule=granule, width=40, k=k), n_inputs, 10, gen(1)).double()
    G = dense_connectivity(model)
    fan_in = n_inputs if granule == "fc" else k
    assert model.granule.fan_in == fan_in
    assert G.shape == (40, n_inputs)
    assert ((G != 0).sum(dim=1) == fan_in).all()
    if granule == "local":
        for row in G:
            cols = torch.nonzero(row).flatten()
            assert (cols == torch.arange(cols[0], cols[0] + k)).all()  # consecutive inputs
    if granule != "fc":
        # the stored indices are the cells' inputs, and the weights sit at those inputs
        idx = model.granule.index
        assert torch.equal(torch.sort(torch.nonzero(G[0]).flatten()).values, idx[0])
        assert torch.allclose(G.gather(1, idx), model.granule.weight)


def test_random_indices_are_distinct_and_cover_the_inputs():
    idx = granule_indices("random", 20, 5000, 7, gen(3))
    assert idx.shape == (5000, 7)
    assert all(len(set(row.tolist())) == 7 for row in idx)
    counts = torch.bincount(idx.flatten(), minlength=20).float()
    assert counts.min() > 0.8 * counts.mean()  # uniform over inputs (expected 1750 each)
    local = granule_indices("local", 20, 5000, 7, gen(3))
    assert int(local[:, 0].min()) == 0 and int(local[:, -1].max()) == 19


def test_granule_weights_have_the_stated_distribution():
    for granule, fan_in in (("fc", 784), ("random", 4)):
        model = RateModel(RateConfig(granule=granule, width=2000, k=4), 784, 10, gen(2))
        w = model.granule.weight
        assert abs(float(w.std()) * np.sqrt(fan_in) - 1) < 0.05
        assert abs(float(w.mean())) * np.sqrt(fan_in) < 0.05
    uni = RateModel(RateConfig(granule="random", width=2000, k=4, init="uniform"), 784, 10, gen(2)).granule.weight
    assert float(uni.abs().max()) <= 0.5 and float(uni.abs().max()) > 0.49


def test_wide_random_granule_layer_stores_no_dense_matrix():
    model = RateModel(RateConfig(granule="random", width=200_000, k=4), 784, 10, gen(0))
    sizes = {name: t.numel() for name, t in model.granule.state_dict().items()}
    assert sizes == {"weight": 800_000, "index": 800_000}
    out = model(torch.rand(3, 784))
    assert out.shape == (3, 10)
    assert "_dense" not in model.granule.__dict__


def test_granule_layer_is_not_trained():
    model = RateModel(RateConfig(width=30), 64, 10, gen(0))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"readout.weight"}
    assert not model.granule.weight.requires_grad


# ----------------------------------------------------------------------------- LTD
def test_ema_scan_equals_the_sequential_running_mean():
    h = torch.rand(37, 6, dtype=torch.float64)
    m0 = torch.rand(6, dtype=torch.float64)
    running, last = ema_scan(h, m0, 0.9)
    m = m0.clone()
    for i, row in enumerate(h):
        m = 0.9 * m + 0.1 * row
        assert torch.allclose(running[i], m, atol=1e-12)
    assert torch.allclose(last, m, atol=1e-12)


def test_running_mean_moves_only_in_training_mode():
    model = RateModel(RateConfig(width=50, ltd="ma", beta=0.99), 64, 10, gen(0))
    x = torch.rand(8, 64)
    assert torch.count_nonzero(model.ma) == 0
    model.eval()
    before = model.ma.clone()
    model(x)
    assert torch.equal(model.ma, before)  # frozen at evaluation
    model.train()
    model(x)
    h = model.granule(x)
    expected = torch.zeros(50)
    for row in h:
        expected = 0.99 * expected + 0.01 * row
    assert torch.allclose(model.ma, expected, atol=1e-6)
    frozen = model.ma.clone()
    model.eval()
    y = model(x)
    assert torch.equal(model.ma, frozen)
    assert torch.allclose(y, (h - frozen) @ model.readout.weight.T, atol=1e-5)


def test_minibatch_ltd_equals_batch_size_one():
    cfg = RateConfig(width=40, ltd="ma", beta=0.9, granule="random", k=4)
    a = RateModel(cfg, 64, 10, gen(5)).train()
    b = RateModel(cfg, 64, 10, gen(5)).train()
    x = torch.rand(11, 64)
    y_batch = a(x)
    y_single = torch.cat([b(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(y_batch, y_single, atol=1e-6)
    assert torch.allclose(a.ma, b.ma, atol=1e-7)


def test_ltd_none_has_no_running_mean():
    model = RateModel(RateConfig(width=20, ltd="none"), 64, 10, gen(0))
    assert model.ma is None and "ma" not in model.state_dict()


# ----------------------------------------------------------------------------- gradients
MODELS = {
    "fc": lambda: RateModel(RateConfig(granule="fc", width=60, ltd="ma", bias=True), 64, 10, gen(1)),
    "local": lambda: RateModel(RateConfig(granule="local", width=60, k=3), 64, 10, gen(2)),
    "random": lambda: RateModel(RateConfig(granule="random", width=60, k=3, ltd="ma"), 784, 10, gen(3)),
    "mlp": lambda: MLP(MLPConfig(hidden=20), 64, 10, gen(4)),
}


@pytest.mark.parametrize("name", ["fc", "local", "random", "mlp"])
def test_input_gradients_match_finite_differences(name):
    model = MODELS[name]().double().eval()
    if getattr(model, "ma", None) is not None:
        model.ma.copy_(torch.rand(model.ma.shape, dtype=torch.float64) * 0.3)
    x = torch.rand(2, model.n_inputs, dtype=torch.float64, requires_grad=True)
    target = torch.nn.functional.one_hot(torch.tensor([3, 7]), 10).double()

    def loss(v):
        return ((model(v) - target) ** 2).sum()

    (grad,) = torch.autograd.grad(loss(x), x)
    h = 1e-6
    coords = torch.randperm(x.numel(), generator=gen(0))[:40]
    for c in coords.tolist():
        e = torch.zeros(x.numel(), dtype=torch.float64)
        e[c] = h
        e = e.view_as(x)
        with torch.no_grad():
            fd = (loss(x.detach() + e) - loss(x.detach() - e)) / (2 * h)
        assert float(fd) == pytest.approx(float(grad.reshape(-1)[c]), rel=1e-5, abs=1e-8)
    assert float(grad.abs().sum()) > 0


@pytest.mark.parametrize("k,ltd,bias", [(1, "ma", True), (3, "none", False), (3, "ma", False)])
def test_blocked_evaluation_of_a_gather_layer_equals_the_unblocked_one(monkeypatch, k, ltd, bias):
    """In evaluation mode a small-K gather layer runs block by block over the granule cells
    (models.rate._BlockedGatherHead); outputs and the gradients of the input, the readout weights
    and the bias equal those of granule -> running mean -> readout in one piece, over ragged blocks."""
    import models.rate as rate

    monkeypatch.setattr(rate, "GATHER_BLOCK", 7)  # 60 cells: 8 blocks of 7 and one of 4
    model = RateModel(RateConfig(granule="random", width=60, k=k, ltd=ltd, bias=bias), 784, 10, gen(5)).double().eval()
    if model.ma is not None:
        model.ma.copy_(torch.rand(60, dtype=torch.float64) * 0.3)
    x = torch.rand(5, 784, dtype=torch.float64)
    w = torch.randn(5, 10, dtype=torch.float64)

    def grads(f):
        model.zero_grad()
        xr = x.clone().requires_grad_()
        y = f(xr)
        (y * w).sum().backward()
        return [y.detach(), xr.grad] + [p.grad.clone() for p in model.readout.parameters()]

    blocked = grads(model)
    whole = grads(lambda v: model.head(model.granule(v)))
    assert len(blocked) == 3 + bias
    for a, b in zip(blocked, whole):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert float(blocked[1].abs().sum()) > 0
    with torch.no_grad():  # no graph: the same outputs
        torch.testing.assert_close(model(x), whole[0], rtol=1e-12, atol=1e-12)
    # what an attack does: float32, frozen parameters, the gradient of the input alone
    model32 = RateModel(RateConfig(granule="random", width=60, k=k, ltd=ltd, bias=bias), 784, 10, gen(5)).eval()
    model32.load_state_dict({k_: v.float() for k_, v in model.state_dict().items()})
    model32.requires_grad_(False)
    xr = x.float().requires_grad_()
    (g_blocked,) = torch.autograd.grad((model32(xr) * w.float()).sum(), xr)
    torch.testing.assert_close(g_blocked.double(), whole[1], rtol=1e-5, atol=1e-6)
    calls = []
    monkeypatch.setattr(rate._BlockedGatherHead, "apply", lambda *a: calls.append(1))
    model(x)
    assert calls == [1]  # evaluation takes the blocked path ...
    model.train()  # ... training never does (the running mean moves there)
    model(x)
    assert calls == [1]


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def digits():
    return load_task(TaskConfig(name="digits"))


def _fit(root: Path, ds, kind="rate", seed=0, **model_kw):
    model_cfg = RateConfig(**model_kw) if kind == "rate" else MLPConfig(**model_kw)
    train_cfg = RateTrainConfig(epochs=2) if kind == "rate" else MLPTrainConfig(epochs=3)
    with open_run(kind, {"model_kind": kind, "model": model_cfg.__dict__, "seed_marker": seed}, seed, root=root) as run:
        metrics = fit(kind, ds, model_cfg, train_cfg, seed, run)
        run.log_metrics(**metrics)
    return run.path, metrics


@pytest.mark.parametrize("kind,model_kw", [("rate", {"width": 300, "granule": "random", "k": 8, "ltd": "ma"}),
                                           ("rate", {"width": 300, "granule": "fc", "bias": True}),
                                           ("mlp", {})])
def test_fit_writes_a_checkpoint_that_reloads_to_identical_outputs(tmp_path, digits, kind, model_kw):
    path, metrics = _fit(tmp_path, digits, kind, **model_kw)
    assert set(metrics) >= {"train_accuracy", "test_accuracy"}
    assert metrics["test_accuracy"] > 0.8  # digits with a linear readout of random features: ~0.9+
    curve = read_csv(path / "learning_curve.csv")
    assert [r["epoch"] for r in curve] == list(range(len(curve)))
    assert curve[-1]["test_accuracy"] > curve[0]["test_accuracy"]
    model = load(path)
    # the reloaded model reproduces the reported test accuracy exactly
    acc = float((predict_labels(model, digits.x_test) == digits.y_test).mean())
    assert acc == metrics["test_accuracy"]
    # and a second save/load round trip gives bit-identical outputs
    save_checkpoint(tmp_path / "again.npz", kind, model)
    _, again = load_checkpoint(tmp_path / "again.npz")
    x = torch.from_numpy(digits.x_test[:50])
    assert torch.equal(model(x), again(x))
    arrays = load_npz(path / "checkpoint.npz")  # allow_pickle=False
    assert "config_json" in arrays and all(a.dtype != object for a in arrays.values())


def test_fit_is_seeded(tmp_path, digits):
    a, ma = _fit(tmp_path / "a", digits, "rate", seed=3, width=100, granule="random", k=4)
    b, mb = _fit(tmp_path / "b", digits, "rate", seed=3, width=100, granule="random", k=4)
    c, _ = _fit(tmp_path / "c", digits, "rate", seed=4, width=100, granule="random", k=4)
    ca, cb, cc = (load_npz(p / "checkpoint.npz") for p in (a, b, c))
    for name in ca:
        assert np.array_equal(ca[name], cb[name]), name
    assert not np.array_equal(ca["granule.index"], cc["granule.index"])
    assert ma["test_accuracy"] == mb["test_accuracy"]


def test_training_without_the_feature_cache_matches_with_it(tmp_path, digits):
    cfg = RateConfig(width=120, ltd="ma")
    out = []
    for cache in (True, False):
        with open_run("rate", {"cache": cache}, 0, root=tmp_path) as run:
            out.append(fit("rate", digits, cfg, RateTrainConfig(epochs=1, cache_features=cache), 0, run))
    # float16 caching changes the features by ~1e-3 relative: accuracies agree closely
    assert abs(out[0]["test_accuracy"] - out[1]["test_accuracy"]) <= 0.02
    assert out[0]["feature_cache"] == "float16" and out[1]["feature_cache"] == "none"


def test_default_learning_rate_is_half_over_width(tmp_path, digits):
    with open_run("rate", {"lr": 1}, 0, root=tmp_path) as run:
        m = fit("rate", digits, RateConfig(width=250), RateTrainConfig(epochs=1), 0, run)
    assert m["lr"] == pytest.approx(0.5 / 250)


# ----------------------------------------------------------------------------- bad input
def test_model_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="model.width must be >= 1"):
        resolve(RateConfig, {"width": 0})
    with pytest.raises(ConfigError, match="unknown config key 'depth'"):
        resolve(RateConfig, {"depth": 3})
    with pytest.raises(ConfigError, match="must be one of"):
        resolve(RateConfig, {"granule": "dense"})
    with pytest.raises(ConfigError, match="model.k=900 exceeds"):
        RateModel(RateConfig(granule="random", k=900, width=5), 784, 10, gen(0))


def _saved(tmp_path: Path) -> Path:
    model = RateModel(RateConfig(width=30, granule="random", k=3), 64, 10, gen(0))
    return save_checkpoint(tmp_path / "checkpoint.npz", "rate", model)


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_checkpoint_with_a_missing_or_misshapen_array_is_rejected(tmp_path):
    arrays = load_npz(_saved(tmp_path))
    save_npz(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != "readout.weight"})
    with pytest.raises(CheckpointError, match=r"missing \['readout.weight'\]"):
        load_checkpoint(tmp_path / "missing.npz")
    save_npz(tmp_path / "shape.npz", **{**arrays, "granule.weight": arrays["granule.weight"][:, :2]})
    with pytest.raises(CheckpointError, match="granule.weight has shape"):
        load_checkpoint(tmp_path / "shape.npz")
    bad_index = arrays["granule.index"].copy()
    bad_index[0, 0] = 64
    save_npz(tmp_path / "index.npz", **{**arrays, "granule.index": bad_index})
    with pytest.raises(CheckpointError, match="outside the 64 inputs"):
        load_checkpoint(tmp_path / "index.npz")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.npz")


# ----------------------------------------------------------------------------- batch size 1
def _reference_b1(x, labels, P, b, m, *, beta, lr, alpha, eps):
    """A plain per-sample PyTorch loop: autograd, torch.optim.RMSprop, running mean updated first."""
    P = torch.tensor(P, requires_grad=True)
    params = [P] + ([torch.tensor(b, requires_grad=True)] if b is not None else [])
    opt = torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps)
    m = None if m is None else torch.tensor(m)
    for row, c in zip(torch.as_tensor(x), labels):
        if m is not None:
            m.mul_(beta).add_(row, alpha=1 - beta)
            row = row - m
        y = P @ row + (params[1] if b is not None else 0)
        loss = 0.5 * ((y - torch.nn.functional.one_hot(torch.tensor(int(c)), len(y)).float()) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().numpy() for p in params], (None if m is None else m.numpy())


@pytest.mark.parametrize("ltd,bias", [(False, False), (True, False), (True, True)])
def test_compiled_batch_size_one_loop_equals_a_per_sample_reference(ltd, bias):
    from models.readout_b1 import train_block

    rng = np.random.default_rng(5)
    n, width, classes = 300, 37, 4
    x = np.maximum(rng.normal(size=(n, width)), 0).astype(np.float32)
    labels = rng.integers(0, classes, n)
    P0 = rng.uniform(-0.2, 0.2, (classes, width)).astype(np.float32)
    b0 = rng.uniform(-0.2, 0.2, classes).astype(np.float32) if bias else None
    kw = dict(beta=0.99, lr=0.01, alpha=0.99, eps=1e-8)
    (P_ref, *b_ref), m_ref = _reference_b1(x, labels, P0, b0, np.zeros(width, np.float32) if ltd else None, **kw)
    P, b = P0.copy(), None if b0 is None else b0.copy()
    m = np.zeros(width, np.float32) if ltd else None
    vP, vb = np.zeros_like(P), None if b is None else np.zeros_like(b)
    for s in range(0, n, 64):  # blocks, as fit() feeds them: the state carries over
        train_block(x[s:s + 64], labels[s:s + 64], P, b, vP, vb, m, **kw)
    assert np.abs(P - P0).max() > 0.05  # it moved
    np.testing.assert_allclose(P, P_ref, rtol=1e-4, atol=1e-5)
    if bias:
        np.testing.assert_allclose(b, b_ref[0], rtol=1e-4, atol=1e-5)
    if ltd:
        np.testing.assert_allclose(m, m_ref, rtol=1e-5, atol=1e-6)


def test_batch_size_one_fit_uses_the_compiled_loop_and_matches_the_pytorch_loop(tmp_path, digits, monkeypatch):
    import models.rate as rate

    cfg, tcfg = RateConfig(width=60, ltd="ma"), RateTrainConfig(epochs=1, batch_size=1)
    with open_run("rate", {"b1": "compiled"}, 0, root=tmp_path) as run:
        fast = fit("rate", digits, cfg, tcfg, 0, run)
        fast_dir = run.path
    monkeypatch.setattr(rate, "_b1_kernel", lambda: False)
    with open_run("rate", {"b1": "torch"}, 0, root=tmp_path) as run:
        slow = fit("rate", digits, cfg, tcfg, 0, run)
        slow_dir = run.path
    assert fast["train_loop"] == "compiled batch-size-1" and slow["train_loop"] == "pytorch"
    a, b = load_npz(fast_dir / "checkpoint.npz"), load_npz(slow_dir / "checkpoint.npz")
    np.testing.assert_allclose(a["readout.weight"], b["readout.weight"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a["ma"], b["ma"], rtol=1e-4, atol=1e-6)
    assert abs(fast["test_accuracy"] - slow["test_accuracy"]) <= 0.01


def test_bad_input_to_the_compiled_loop_is_one_clear_error():
    from models.readout_b1 import train_block

    P = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match="labels must lie"):
        train_block(np.zeros((2, 5), np.float32), np.array([0, 3]), P, None, np.zeros_like(P), None, None,
                    beta=0.9, lr=0.1, alpha=0.99, eps=1e-8)
    with pytest.raises(ValueError, match="float32"):
        train_block(np.zeros((2, 5), np.float32), np.array([0, 1]), P.astype(np.float64), None,
                    np.zeros_like(P), None, None, beta=0.9, lr=0.1, alpha=0.99, eps=1e-8)


def test_bench_rate_prints_the_machine_both_epochs_and_the_ratio(capsys):
    from scripts.cli import main

    assert main(["bench", "rate", "--widths", "40,80", "--samples", "30"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("machine: ") and "cores" in out[0]
    assert [line.split(":")[0] for line in out[1:3]] == ["width 40", "width 80"]
    assert "mini-batch 16 (PyTorch)" in out[1] and "batch 1 (compiled)" in out[1]
    assert out[-1].startswith("b1_over_minibatch=") and float(out[-1].split("=")[1]) > 0
    assert main(["bench", "rate", "--widths", "4x"]) == 2


def test_batch_size_one_streams_granule_activity_when_the_cache_would_not_fit(tmp_path, digits, monkeypatch):
    """A cache over the memory budget is not built: batch-size-1 training recomputes the granule
    activity block by block (float32) and learns the same readout as with the float16 cache."""
    import models.rate as rate

    cfg, tcfg = RateConfig(width=60, ltd="ma"), RateTrainConfig(epochs=1, batch_size=1)
    with open_run("rate", {"b1": "cached"}, 0, root=tmp_path) as run:
        cached = fit("rate", digits, cfg, tcfg, 0, run)
        cached_dir = run.path
    monkeypatch.setattr(rate, "_cache_budget", lambda: 0)
    with open_run("rate", {"b1": "streamed"}, 0, root=tmp_path) as run:
        streamed = fit("rate", digits, cfg, tcfg, 0, run)
        streamed_dir = run.path
    assert cached["feature_cache"] == "float16" and streamed["feature_cache"] == "none"
    assert streamed["train_loop"] == "compiled batch-size-1"
    a, b = load_npz(cached_dir / "checkpoint.npz"), load_npz(streamed_dir / "checkpoint.npz")
    np.testing.assert_allclose(a["readout.weight"], b["readout.weight"], rtol=0.05, atol=2e-3)  # float16 vs float32
    assert abs(cached["test_accuracy"] - streamed["test_accuracy"]) <= 0.02
