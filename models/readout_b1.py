"""Batch-size-1 RMSprop training of a linear readout, one compiled loop over the samples.

The seed paper trains the rate model's Purkinje readout with one RMSprop step per sample. The
granule layer is fixed, so its activity is computed once; what remains per sample is a
``classes x width`` matrix-vector product, the running-mean ("LTD") update and the RMSprop
update of every weight. Run as a loop of PyTorch operations, each sample pays a dozen Python and
dispatch overheads and as many passes over the weights; here one C function (compiled with the
system's C compiler on first use and cached under ``CEREB_CACHE``, loaded with :mod:`ctypes`)
does the whole block of samples in one pass over the weights per sample.

The arithmetic is PyTorch's: for sample ``x`` with label ``c``::

    m = beta m + (1 - beta) x;  x~ = x - m          (ltd="ma"; otherwise x~ = x)
    y = P x~ + b;  r = y - onehot(c)                 (loss 1/2 ||r||^2, batch of one)
    g = r x~^T;  v = alpha v + (1 - alpha) g^2;  P -= lr g / (sqrt(v) + eps)   (the same for b)

in float32, as ``torch.optim.RMSprop`` (no momentum, not centred) does it, so the weights equal
those of a per-sample PyTorch loop up to float rounding (tested).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["train_block", "kernel_available"]

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* Sample s's granule vector after the running-mean step: m <- beta m + (1 - beta) x; out = x - m. */
static const float *prepare(const float *xs, int64_t W, float *m, float *out, float beta)
{
    if (!m) return xs;
    for (int64_t j = 0; j < W; j++) {
        m[j] = beta * m[j] + (1.0f - beta) * xs[j];
        out[j] = xs[j] - m[j];
    }
    return out;
}

/* P row . h in a fixed order: eight partial sums (vectorisable without -ffast-math). */
static float dot(const float *row, const float *h, int64_t W)
{
    float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int64_t j = 0;
    for (; j + 8 <= W; j += 8)
        for (int k = 0; k < 8; k++) part[k] += row[j + k] * h[j + k];
    float acc = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    for (; j < W; j++) acc += row[j] * h[j];
    return acc;
}

/* n samples (rows of x, float32, n x W, already in presentation order), labels[n];
   P: C x W row-major; b: C or NULL; vP, vb: RMSprop square averages; m: W or NULL (no LTD);
   scratch: 2 W floats. Returns the summed loss; correct[0] += number of correct arg-max outputs.
   One pass over the weights per sample: the update of row c also accumulates the next sample's
   output of row c from the updated weights (the same values a separate pass would read). */
double rmsprop_b1(int64_t n, int64_t W, int64_t C, const float *x, const int64_t *labels,
                  float *P, float *b, float *vP, float *vb, float *m, float *scratch,
                  float beta, float lr, float alpha, float eps, int64_t *correct)
{
    double loss = 0.0;
    float y[1024], y_next[1024];
    if (n <= 0) return 0.0;
    float *buf[2] = {scratch, scratch + W};
    int cur = 0;
    const float *h = prepare(x, W, m, buf[cur], beta);
    for (int64_t c = 0; c < C; c++) y[c] = dot(P + c * W, h, W) + (b ? b[c] : 0.0f);
    for (int64_t s = 0; s < n; s++) {
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++) if (y[c] > y[best]) best = c;
        if (best == labels[s]) correct[0] += 1;
        const float *hn = s + 1 < n ? prepare(x + (s + 1) * W, W, m, buf[1 - cur], beta) : 0;
        for (int64_t c = 0; c < C; c++) {
            float r = y[c] - (c == labels[s] ? 1.0f : 0.0f);
            loss += 0.5 * (double)r * (double)r;
            float *row = P + c * W;
            float *vrow = vP + c * W;
            float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            int64_t j = 0;
            if (hn) {
                for (; j + 8 <= W; j += 8)
                    for (int k = 0; k < 8; k++) {
                        float g = r * h[j + k];
                        float v = alpha * vrow[j + k] + (1.0f - alpha) * g * g;
                        vrow[j + k] = v;
                        float w = row[j + k] - lr * g / (sqrtf(v) + eps);
                        row[j + k] = w;
                        part[k] += w * hn[j + k];
                    }
            }
            float acc = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
            for (; j < W; j++) {
                float g = r * h[j];
                float v = alpha * vrow[j] + (1.0f - alpha) * g * g;
                vrow[j] = v;
                row[j] -= lr * g / (sqrtf(v) + eps);
                if (hn) acc += row[j] * hn[j];
            }
            if (b) {
                float v = alpha * vb[c] + (1.0f - alpha) * r * r;
                vb[c] = v;
                b[c] -= lr * r / (sqrtf(v) + eps);
            }
            if (hn) y_next[c] = acc + (b ? b[c] : 0.0f);
        }
        if (hn) {
            for (int64_t c = 0; c < C; c++) y[c] = y_next[c];
            h = hn;
            cur = 1 - cur;
        }
    }
    return loss;
}
"""
MAX_CLASSES = 1024
_lock = threading.Lock()
_lib = None


def _compile() -> ctypes.CDLL:
    from core.paths import cache_dir

    digest = hashlib.sha256(C_SOURCE.encode()).hexdigest()[:16]
    folder = cache_dir("readout_b1")
    so = folder / f"rmsprop_b1_{digest}.so"
    if not so.exists():
        src = folder / f"rmsprop_b1_{digest}.c"
        src.write_text(C_SOURCE)
        tmp = so.with_suffix(".so.tmp")
        # no -ffast-math: the float32 arithmetic stays IEEE (-fno-math-errno only lets sqrtf vectorise)
        cmd = [os.environ.get("CC") or shutil.which("cc") or "gcc", "-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC", str(src), "-o", str(tmp), "-lm"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"compiling the batch-size-1 readout kernel failed: {res.stderr.strip()[:500]}")
        tmp.replace(so)  # atomic: a concurrent process sees either no file or a whole one
    lib = ctypes.CDLL(str(so))
    f = lib.rmsprop_b1
    ptr = ctypes.c_void_p
    f.argtypes = [ctypes.c_int64] * 3 + [ptr] * 8 + [ctypes.c_float] * 4 + [ptr]
    f.restype = ctypes.c_double
    return lib


def _kernel():
    global _lib
    with _lock:
        if _lib is None:
            _lib = _compile()
    return _lib.rmsprop_b1


def kernel_available() -> bool:
    """Whether the compiled loop can be built here (a C compiler is on the PATH)."""
    try:
        _kernel()
        return True
    except (OSError, RuntimeError) as exc:
        log.warning("batch-size-1 kernel unavailable (%s); the PyTorch per-sample loop is used", exc)
        return False


def _f32(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype != np.float32 or not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous float32 array")
    return a


def train_block(x: np.ndarray, labels: np.ndarray, P: np.ndarray, b: np.ndarray | None, vP: np.ndarray,
                vb: np.ndarray | None, m: np.ndarray | None, *, beta: float, lr: float, alpha: float,
                eps: float) -> tuple[float, int]:
    """One RMSprop step per row of ``x`` ``(n, width)`` float32, in row order, updating in place
    ``P`` ``(classes, width)``, ``b`` ``(classes,)`` or None, their square averages ``vP``/``vb``
    and the running mean ``m`` ``(width,)`` (None: no LTD). Returns (summed loss, correct)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    n, width = x.shape
    classes = P.shape[0]
    if P.shape != (classes, width) or vP.shape != P.shape or labels.shape != (n,):
        raise ValueError("shapes of x, labels, P and vP do not agree")
    if classes > MAX_CLASSES:
        raise ValueError(f"at most {MAX_CLASSES} classes")
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError("labels must lie in [0, classes)")
    for a, name in ((P, "P"), (vP, "vP")) + (((b, "b"), (vb, "vb")) if b is not None else ()) + \
            (((m, "m"),) if m is not None else ()):
        _f32(a, name)
    xt = np.empty(2 * width, dtype=np.float32)
    correct = np.zeros(1, dtype=np.int64)
    addr = lambda a: None if a is None else a.ctypes.data  # noqa: E731
    loss = _kernel()(n, width, classes, addr(x), addr(labels), addr(P), addr(b), addr(vP), addr(vb), addr(m),
                     addr(xt), float(beta), float(lr), float(alpha), float(eps), addr(correct))
    return float(loss), int(correct[0])
