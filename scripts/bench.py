"""Benchmarks measured side by side in one run (never by timed unit tests)."""
from __future__ import annotations

import argparse
import sys
import time

from scripts.common import module_main

DESCRIPTION = "Benchmark the batched spiking engine against a naive loop of single-sample runs."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=["spiking"], help="what to benchmark")
    p.add_argument("--run", metavar="DIR", help="a trained spiking run (default: an untrained default digits network)")
    p.add_argument("--n", type=int, default=4000, help="queries for the batched engine (default 4000: whole chunks)")
    p.add_argument("--naive-n", type=int, default=30, help="queries for the naive loop (default 30)")
    p.add_argument("--workers", type=int, default=2, help="engine worker processes (default 2)")
    p.add_argument("--batch-size", type=int, default=None, help="copies per network (default: engine default)")
    p.add_argument("--training", action="store_true", help="also time one training epoch on digits")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
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
    print(f"network: {conn.n_mf} MF, {conn.n_grc} GrC (K={cfg.k}), {conn.n_goc} GoC, {conn.n_pc} PC; "
          f"{cfg.window_ms:g} ms per sample at dt {cfg.dt_ms:g} ms")

    # naive: one Brian2 run per sample, one copy (same compiled code, warm cache)
    with SpikingEngine(cfg, conn, w, batch_size=1, chunks_per_run=1,
                       workers=1, seed=args.seed) as naive:
        naive.predict(x[:2])  # build and warm up
        t0 = time.perf_counter()
        for q in rng.choice(len(x), args.naive_n, replace=False):
            naive.predict(x[q:q + 1])
        naive_s = time.perf_counter() - t0
    naive_rate = args.naive_n / naive_s
    print(f"naive loop   : {args.naive_n} samples in {naive_s:.2f} s = {naive_rate:.1f} samples/s")

    with SpikingEngine(cfg, conn, w, batch_size=batch,
                       chunks_per_run=e.chunks_per_run, workers=args.workers, seed=args.seed) as eng:
        eng.predict(x[: batch * args.workers])  # build (workers start) and warm up
        t0 = time.perf_counter()
        eng.predict(x)
        batched_s = time.perf_counter() - t0
    rate = args.n / batched_s
    print(f"batched      : {args.n} samples in {batched_s:.2f} s = {rate:.1f} samples/s "
          f"(batch {batch}, {e.chunks_per_run} chunks per run, {args.workers} workers)")

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
