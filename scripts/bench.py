"""Benchmarks measured side by side in one run (never by timed unit tests)."""
from __future__ import annotations

import argparse
import sys
import time

from scripts.common import module_main

DESCRIPTION = ("Benchmark the batched spiking engine against a naive loop of single-sample runs (spiking), or "
               "batch-size-1 rate-model training against mini-batch training (rate).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=["spiking", "rate"], help="what to benchmark")
    p.add_argument("--widths", default="5000,200000", help="rate: granule widths (default 5000,200000)")
    p.add_argument("--samples", type=int, default=2000,
                   help="rate: training samples per timed epoch (default 2000; times are also given per 8,000)")
    p.add_argument("--run", metavar="DIR", help="a trained spiking run (default: an untrained default digits network)")
    p.add_argument("--n", type=int, default=4000, help="queries for the batched engine (default 4000: whole chunks)")
    p.add_argument("--naive-n", type=int, default=30, help="queries for the naive loop (default 30)")
    p.add_argument("--workers", type=int, default=2, help="engine worker processes (default 2)")
    p.add_argument("--batch-size", type=int, default=None, help="copies per network (default: engine default)")
    p.add_argument("--training", action="store_true", help="also time one training epoch on digits")
    p.add_argument("--no-reference", action="store_true",
                   help="spiking: skip the batched run of the reference build (and the agreement line)")
    p.add_argument("--seed", type=int, default=0)


def machine() -> str:
    """CPU model, cores and SIMD flags of this machine (Linux /proc/cpuinfo; platform otherwise)."""
    import os
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    return f"{model}, {os.cpu_count()} cores, SIMD {' '.join(simd) or 'unknown'}"


def run_rate(args: argparse.Namespace) -> int:
    """One epoch of mini-batch (16) PyTorch training and one of compiled batch-size-1 training of
    the rate model's readout, on the same cached granule activity, side by side per width."""
    import numpy as np
    import torch

    from core.errors import ConfigError
    from models import rate

    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise ConfigError(f"--widths must be comma-separated integers, got {args.widths!r}") from None
    if args.samples < 1 or any(w < 1 for w in widths):
        raise ConfigError("--samples and every width must be >= 1")
    if not rate._b1_kernel():
        raise ConfigError("the compiled batch-size-1 loop cannot be built here (no C compiler)")
    print(f"machine: {machine()}")
    n, per = args.samples, 8000 / args.samples
    ratio = float("nan")

    class _Bar:
        def update(self, *_):
            pass

        def set_postfix(self, **_):
            pass

    for width in widths:
        gen = torch.Generator().manual_seed(args.seed)
        cfg = rate.RateConfig(granule="random", width=width, k=4, ltd="ma")
        h = torch.relu(torch.randn(n, width, generator=gen)).to(torch.float16)  # granule-like activity
        y = torch.randint(0, 10, (n,), generator=gen)
        times = {}
        for bs in (16, 1):
            model = rate.RateModel(cfg, 784, 10, torch.Generator().manual_seed(args.seed))
            tcfg = rate.RateTrainConfig(epochs=1, batch_size=bs, early_stop_acc=2.0)
            lr = tcfg.lr_scale / width
            opt = torch.optim.RMSprop(model.readout.parameters(), lr=lr, alpha=tcfg.alpha, eps=tcfg.eps)
            targets = torch.nn.functional.one_hot(y, 10).float()
            order = torch.Generator().manual_seed(args.seed)
            with rate._torch_threads(1):
                t0 = time.perf_counter()
                if bs == 1:
                    rate._train_epochs_b1(model, lambda idx: h[idx].float(), y, tcfg, lr, order, _Bar(), [],
                                           lambda: (0.0, 0.0), t0)
                else:
                    rate._train_epochs(model, opt, lambda rows: model.head(rows.float()), h, y, targets, tcfg, order,
                                       _Bar(), [], lambda: (0.0, 0.0), t0)
                times[bs] = time.perf_counter() - t0
        ratio = times[1] / times[16]
        print(f"width {width}: mini-batch 16 (PyTorch) {times[16]:.2f} s, batch 1 (compiled) {times[1]:.2f} s per "
              f"{n}-sample epoch ({times[16] * per:.1f} s / {times[1] * per:.1f} s per 8,000); ratio {ratio:.2f}")
    print(f"b1_over_minibatch={ratio:.2f}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.target == "rate":
        return run_rate(args)
    import numpy as np

    from core.errors import ConfigError
    from models.spiking.engine import SpikingEngine
    from models.spiking.network import initial_weights, make_connectivity
    from models.spiking.params import EngineConfig, SpikingConfig, SpikingTrainConfig
    from models.spiking.train import load_checkpoint, train_network
    from tasks import load_task

    if args.n < 1 or args.naive_n < 1 or args.workers < 1:
        raise ConfigError("--n, --naive-n and --workers must be >= 1")
    ds = load_task("digits")
    if args.run:
        from pathlib import Path

        cfg, conn, w, seed, _ = load_checkpoint(Path(args.run) / "checkpoint.npz")
    else:
        cfg = SpikingConfig()
        conn = make_connectivity(cfg, ds.n_inputs, ds.n_classes, args.seed)
        w = initial_weights(cfg, conn, args.seed)
    e = EngineConfig()
    batch = args.batch_size or e.copies(cfg.width)
    rng = np.random.default_rng(args.seed)
    x = np.concatenate([ds.x_test] * (args.n // len(ds.x_test) + 1))[: args.n]
    print(f"machine: {machine()}")
    print(f"network: {conn.n_mf} MF, {conn.n_grc} GrC (K={cfg.k}), {conn.n_goc} GoC, {conn.n_pc} PC; "
          f"{cfg.window_ms:g} ms per sample at dt {cfg.dt_ms:g} ms")

    # naive: one Brian2 run per sample, one copy of the reference build (Brian2's own integration and
    # Synapses, as the engine was before its own step), same compiled code, warm cache: the fixed reference
    with SpikingEngine(cfg, conn, w, batch_size=1, chunks_per_run=1, workers=1, seed=args.seed,
                       reference=True) as naive:
        naive.predict(x[:2])  # build and warm up
        t0 = time.perf_counter()
        for q in rng.choice(len(x), args.naive_n, replace=False):
            naive.predict(x[q:q + 1])
        naive_s = time.perf_counter() - t0
    naive_rate = args.naive_n / naive_s
    print(f"naive loop   : {args.naive_n} samples in {naive_s:.2f} s = {naive_rate:.1f} samples/s "
          f"(reference build, one copy, one run per sample)")

    steps = int(round(cfg.window_ms / cfg.dt_ms))
    results = {}
    rate = float("nan")
    # the reference build batched (Brian2's own integration and Synapses), the batched Brian2 build
    # of the engine, and the engine's default backend, the compiled kernel (models.spiking.kernel)
    for name, reference, backend in (("reference", True, "brian2"), ("brian2", False, "brian2"),
                                     ("kernel", False, "kernel")):
        if name == "reference" and args.no_reference:
            continue
        with SpikingEngine(cfg, conn, w, batch_size=batch, chunks_per_run=e.chunks_per_run, workers=args.workers,
                           seed=args.seed, reference=reference, backend=backend) as eng:
            eng.predict(x[: batch * args.workers])  # build (workers start) and warm up
            t0 = time.perf_counter()
            pred = eng.predict(x)
            elapsed = time.perf_counter() - t0
            used = eng.backend
        results[name] = pred
        ns_step = elapsed * args.workers / (args.n * conn.n_grc * steps) * 1e9
        how = (f"{args.workers} threads, one query at a time" if used == "kernel" else
               f"batch {batch}, {e.chunks_per_run} chunks per run, {args.workers} workers")
        label = {"reference": "reference   ", "brian2": "brian2 batch", "kernel": "kernel      "}[name]
        print(f"{label} : {args.n} samples in {elapsed:.2f} s = {args.n / elapsed:.1f} samples/s, "
              f"{ns_step:.2f} ns per granule-cell step per core ({how}{', reference build' if reference else ''})")
        if name == "kernel":
            if used != "kernel":
                print("kernel       : not available here (no C compiler): the line above is the Brian2 build")
            rate = args.n / elapsed
    if "reference" in results:
        a = results["reference"]
        for name in ("brian2", "kernel"):
            b = results[name]
            agree = float(np.mean(a.labels == b.labels))
            corr = {pop: float(np.corrcoef(a.counts[pop].ravel(), b.counts[pop].ravel())[0, 1]) for pop in ("grc", "pc")}
            same = float(np.mean(np.all(a.counts["pc"] == b.counts["pc"], axis=1)))
            print(f"agreement    : {name} vs reference: decisions {agree:.4f}, spike-count correlation grc {corr['grc']:.4f} "
                  f"pc {corr['pc']:.4f}, identical Purkinje counts on {same:.4f} of queries (same frozen noise)")

    if args.training:
        tcfg = SpikingTrainConfig(epochs=1)
        t0 = time.perf_counter()
        _, _, curve, _ = train_network(ds.x_train, ds.y_train, cfg, tcfg, args.seed, n_classes=ds.n_classes)
        total = time.perf_counter() - t0
        print(f"training     : one digits epoch ({len(ds.x_train)} samples x {cfg.window_ms:g} ms) in "
              f"{curve[0]['train_s']:.2f} s after the build ({total:.1f} s including the build)")
    print(f"speedup={rate / naive_rate:.1f} samples_per_s={rate:.1f}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
