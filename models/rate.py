"""The seed paper's rate model of the cerebellum, and its MLP baseline (PyTorch).

Yuezhang, Li & Chen (2021), "Evaluating Adversarial Robustness in Simulated Cerebellum",
arXiv:2012.02976, and its public code (github.com/liuyuezhang/cerebellum). The model maps an
input ``x`` (mossy fibres, ``(n_samples, n_inputs)`` in [0, 1]) through a fixed random granule
layer to a linear Purkinje layer, the only trained part::

    z = G x                        granule pre-activation; G fixed after initialisation
    h = relu(z)                    granule activity, (n_samples, width)
    m_i = beta m_{i-1} + (1 - beta) h_i     "LTD" (ltd="ma"): running mean over training samples
    h~ = h - m                     (m updated only in training mode; frozen at evaluation)
    y = P h~ (+ b)                 Purkinje output, (n_samples, n_classes)

    loss = 1/2 ||y - onehot(label)||^2, minimised over P (and b) by RMSprop (alpha 0.99).

Granule connectivity (``model.granule``):

``fc``      every granule cell sees all ``n_inputs`` inputs (fan-in ``n_inputs``);
``local``   cell j sees K consecutive inputs ``s_j, ..., s_j + K - 1`` of the flattened image,
            ``s_j`` uniform in ``[0, n_inputs - K]`` (the paper's "lc");
``random``  cell j sees K distinct inputs drawn uniformly without replacement (the paper's "rc",
            which drew with replacement; without it every cell has exactly fan-in K).

Granule weights are drawn from N(0, 1/fan-in), i.e. standard deviation ``1/sqrt(fan-in)`` (the
public code drew them from U(-1/sqrt(fan-in), 1/sqrt(fan-in)); ``model.init='uniform'`` gives that).
The readout starts from U(-1/sqrt(width), 1/sqrt(width)) as in the public code. The learning rate
defaults to ``0.5 / width``: the paper's 5e-4 at width 1,000 and 2.5e-6 at width 200,000
(scripts ``train_wide.sh`` and ``train_sparse.sh``: e.g. 8.375e-5 at width 5,970).

Random and local granule layers store only ``(width, K)`` indices and weights and compute ``z`` by
an index gather (``embedding_bag``), so width 200,000 with K = 4 costs 800,000 weights, not a dense
200,000 x 784 matrix.

The MLP baseline (``mlp``) is the paper's non-cerebellar comparison: one hidden ReLU layer of 50
units, trained end to end by backpropagation on the same MSE-to-one-hot loss with RMSprop.

Registry interface (see :mod:`models.registry`): :func:`model_config`, :func:`train_config`,
:func:`fit`; and :func:`load` rebuilds the trained module from a run folder.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "RateConfig",
    "RateTrainConfig",
    "MLPConfig",
    "MLPTrainConfig",
    "GranuleLayer",
    "RateModel",
    "MLP",
    "build_model",
    "granule_indices",
    "ema_scan",
    "model_config",
    "train_config",
    "fit",
    "load",
    "save_checkpoint",
    "load_checkpoint",
    "predict_labels",
]

CHECKPOINT = "checkpoint.npz"
CURVE = "learning_curve.csv"
_FORMAT = 1


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class RateConfig:
    """The ``model.*`` section of the rate model (Yuezhang, Li & Chen 2021).

    Attributes
    ----------
    granule : connectivity of the fixed granule layer: ``fc``, ``local`` or ``random``.
    width : number of granule cells (the paper's ``n_hidden``; its default 5,000).
    k : fan-in of ``local`` and ``random`` granule cells (the paper's default 4); ignored by ``fc``.
    init : granule weight distribution: ``normal`` N(0, 1/fan-in) or ``uniform``
        U(-1/sqrt(fan-in), 1/sqrt(fan-in)) (the public code).
    ltd : ``none``, or ``ma``: subtract a running mean of granule activity (the paper's LTD).
    beta : decay of that running mean per training sample (paper: 0.99).
    bias : give the Purkinje cells a trained bias (paper default: no).
    """

    granule: Literal["fc", "local", "random"] = "fc"
    width: int = 5000
    k: int = 4
    init: Literal["normal", "uniform"] = "normal"
    ltd: Literal["none", "ma"] = "none"
    beta: float = 0.99
    bias: bool = False

    def __post_init__(self):
        if self.width < 1:
            raise ValueError(f"model.width must be >= 1, got {self.width}")
        if self.k < 1:
            raise ValueError(f"model.k must be >= 1, got {self.k}")
        if not 0 <= self.beta < 1:
            raise ValueError(f"model.beta must be in [0, 1), got {self.beta}")


@dataclass(frozen=True)
class RateTrainConfig:
    """The ``train.*`` section of the rate model.

    The paper trained with batch size 1 for 10 epochs (early stop at 99.5% test accuracy). The
    default here is a mini-batch of 16 with the paper's learning rate: on the 8,000/2,000 MNIST
    split it reached within 0.5 percentage points of batch size 1 (width 1,000: 92.3% vs 92.5%
    after 10 epochs) with 16x fewer optimizer steps; larger batches at this rate undertrain in 10
    epochs (batch 64: -1 point) and raising the rate with the batch makes RMSprop oscillate (batch
    64, 4x rate: 86%). ``batch_size=1`` reproduces the paper's protocol exactly, the running mean
    included (see :func:`ema_scan`); with the feature cache it runs as one compiled loop over the
    samples (:mod:`models.readout_b1`), whose epoch ``cereb bench rate`` times against a mini-batch
    epoch. The ``studies/paper_*.yaml`` studies use batch size 1.

    Attributes
    ----------
    epochs : passes over the training set (paper: 10).
    batch_size : samples per RMSprop step (paper: 1).
    lr : learning rate; None means ``lr_scale / model.width``.
    lr_scale : numerator of the default learning rate (paper: 0.5, e.g. 5e-4 at width 1,000).
    alpha : RMSprop smoothing constant (paper: 0.99).
    eps : RMSprop epsilon (paper: 1e-8).
    early_stop_acc : stop once test accuracy reaches this (paper: 0.995).
    cache_features : compute the fixed granule activity once and keep it (float16) for all
        epochs, instead of recomputing it every batch (a cache larger than half of the available
        memory is not built: the activity is then streamed, recomputed block by block, e.g.
        60,000 MNIST images at width 200,000 would need 24 GB); final test accuracy is always computed
        with the exact float32 model.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float | None = None
    lr_scale: float = 0.5
    alpha: float = 0.99
    eps: float = 1e-8
    early_stop_acc: float = 0.995
    cache_features: bool = True

    def __post_init__(self):
        _check_train(self)


@dataclass(frozen=True)
class MLPConfig:
    """The ``model.*`` section of the MLP baseline: one hidden ReLU layer (paper: 50 units)."""

    hidden: int = 50
    bias: bool = True

    def __post_init__(self):
        if self.hidden < 1:
            raise ValueError(f"model.hidden must be >= 1, got {self.hidden}")


@dataclass(frozen=True)
class MLPTrainConfig:
    """The ``train.*`` section of the MLP baseline (MSE to one-hot, RMSprop, end to end).

    Attributes are those of :class:`RateTrainConfig`; ``lr`` is fixed (default 1e-3) because the
    MLP's size does not change.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    alpha: float = 0.99
    eps: float = 1e-8
    early_stop_acc: float = 0.995

    def __post_init__(self):
        _check_train(self)


def _check_train(cfg) -> None:
    if cfg.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.lr is not None and cfg.lr <= 0:
        raise ValueError(f"train.lr must be > 0, got {cfg.lr}")
    if not 0 <= cfg.alpha < 1:
        raise ValueError(f"train.alpha must be in [0, 1), got {cfg.alpha}")


def model_config(kind: str) -> type:
    """The ``model.*`` dataclass of ``kind`` (``rate`` or ``mlp``)."""
    return {"rate": RateConfig, "mlp": MLPConfig}[_check_kind(kind)]


def train_config(kind: str) -> type:
    """The ``train.*`` dataclass of ``kind`` (``rate`` or ``mlp``)."""
    return {"rate": RateTrainConfig, "mlp": MLPTrainConfig}[_check_kind(kind)]


def _check_kind(kind: str) -> str:
    if kind not in ("rate", "mlp"):
        raise ConfigError(f"models.rate provides the kinds 'rate' and 'mlp', not {kind!r}")
    return kind


# ----------------------------------------------------------------------------- pure functions
def gathers(fan_in: int | None, n_inputs: int) -> bool:
    """Whether a granule layer of fan-in ``fan_in`` (None: dense ``fc``) over ``n_inputs`` inputs
    computes by gathering its K inputs (``16 K < n_inputs``) rather than as a dense matrix product.
    The threshold is a rule of thumb for CPUs: a gather reads K scattered inputs per cell at a
    fraction of the rate a dense product multiplies all ``n_inputs``, so above it the dense product
    of the scattered weights is faster. The replication report's cost table and the ``cereb study
    --dry-run`` cost estimate use the same rule."""
    return fan_in is not None and 16 * int(fan_in) < int(n_inputs)


def granule_indices(kind: str, n_inputs: int, width: int, k: int, generator: torch.Generator) -> torch.Tensor | None:
    """Input indices of each granule cell, ``(width, k)`` int64 sorted per row; None for ``fc``.

    ``local``: ``s_j + [0, k)`` with ``s_j`` uniform in ``[0, n_inputs - k]``. ``random``: k
    distinct inputs per cell, uniformly without replacement (the k smallest of ``n_inputs``
    uniform keys), drawn in chunks so memory stays ``O(chunk * n_inputs)``.
    """
    if kind == "fc":
        return None
    if k > n_inputs:
        raise ConfigError(f"model.k={k} exceeds the number of inputs ({n_inputs})")
    if kind == "local":
        start = torch.randint(0, n_inputs - k + 1, (width, 1), generator=generator)
        return start + torch.arange(k)
    if kind == "random":
        chunk = max(1, (1 << 22) // n_inputs)
        parts = []
        for lo in range(0, width, chunk):
            keys = torch.rand(min(chunk, width - lo), n_inputs, generator=generator)
            parts.append(torch.topk(keys, k, dim=1, largest=False, sorted=False).indices)
        return torch.cat(parts).sort(dim=1).values
    raise ConfigError(f"unknown granule connectivity {kind!r} (fc, local or random)")


def ema_scan(h: torch.Tensor, m0: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Running means of the rows of ``h`` in order, exactly as if fed one sample at a time.

    ``m_i = beta * m_{i-1} + (1 - beta) * h_i`` with ``m_{-1} = m0``, so a mini-batch sees the
    same running mean as batch size 1 (the paper's protocol). An in-place loop over the rows: for
    a batch of 16 at width 200,000 it was measured faster (6 ms on one thread) than a blocked
    matrix form, whose transposed result costs a slow strided copy.

    Parameters
    ----------
    h : (n_samples, n_features)
    m0 : (n_features,)

    Returns
    -------
    m : (n_samples, n_features), the running mean after each sample
    last : (n_features,), the running mean after the last sample
    """
    out = torch.empty(h.shape, dtype=h.dtype)
    m = m0.to(h.dtype).clone()
    for i in range(h.shape[0]):
        m.mul_(beta).add_(h[i], alpha=1 - beta)
        out[i] = m
    return out, m


# ----------------------------------------------------------------------------- modules
class GranuleLayer(nn.Module):
    """Fixed granule layer ``h = relu(G x)``; G is a buffer, never trained.

    ``fc`` keeps G dense, ``(width, n_inputs)``. ``local`` and ``random`` keep ``index`` and
    ``weight`` of shape ``(width, k)`` and compute ``z_j = sum_k weight[j, k] x[index[j, k]]``.
    """

    def __init__(self, kind: str, n_inputs: int, width: int, k: int, init: str = "normal",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.kind, self.n_inputs, self.width = kind, n_inputs, width
        self.fan_in = n_inputs if kind == "fc" else k
        if generator is None:  # shapes only: filled by load_state_dict
            index = None if kind == "fc" else torch.zeros(width, k, dtype=torch.int64)
            weight = torch.zeros(width, self.fan_in)
        else:
            index = granule_indices(kind, n_inputs, width, k, generator)
            std = 1.0 / np.sqrt(self.fan_in)
            if init == "normal":
                weight = torch.randn(width, self.fan_in, generator=generator) * std
            elif init == "uniform":
                weight = (torch.rand(width, self.fan_in, generator=generator) * 2 - 1) * std
            else:
                raise ConfigError(f"unknown model.init {init!r} (normal or uniform)")
        self.register_buffer("weight", weight)
        if index is not None:
            self.register_buffer("index", index)
        else:
            self.index = None

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """``z = G x`` for ``x`` of shape (n_samples, n_inputs); returns (n_samples, width).

        For local/random layers with a small fan-in the result is a transposed view of the
        ``(width, n_samples)`` array the index gather produces. With a large fan-in
        (``16 k >= n_inputs``) a gather is slower than a dense product, so a dense copy of G is
        built once and kept as a cache (never saved; at most ``width * n_inputs`` floats, 215 MB
        in the paper's sparseness sweep, whereas K = 4 at width 200,000 stays a gather).
        """
        if self.index is None:
            return x @ self.weight.T
        if not self.gathers:
            return x @ self._dense_weight(x.dtype).T
        z = F.embedding_bag(self.index, x.T, per_sample_weights=self.weight.to(x.dtype), mode="sum")
        return z.T

    @property
    def gathers(self) -> bool:
        """Whether this layer computes by gathering its K inputs (local/random with ``16 K < inputs``);
        otherwise a dense product (``fc``, or a cached dense copy when K is large)."""
        return self.index is not None and gathers(self.fan_in, self.n_inputs)

    def _dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        dense = self.__dict__.get("_dense")
        if dense is None or dense.dtype != dtype:
            dense = torch.zeros(self.width, self.n_inputs, dtype=dtype)
            dense.scatter_(1, self.index, self.weight.to(dtype))
            self.__dict__["_dense"] = dense
        return dense

    def _load_from_state_dict(self, *args, **kwargs):
        self.__dict__.pop("_dense", None)
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.preactivation(x))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, n_inputs={self.n_inputs}, width={self.width}, fan_in={self.fan_in}"


# granule cells per block of the blocked evaluation path (tuned on a 2-core AMD EPYC, 7 Dec 2026: 512-1,024
# fastest at widths 200,000-228,571 with K 1-4 and 175 images per call; a block's activity stays in cache)
GATHER_BLOCK = 512


class _BlockedGatherHead(torch.autograd.Function):
    """``y = W (relu(G x) - shift) + b`` for a gather granule layer, computed block by block over the
    granule cells so that no ``(n_samples, width)`` activity is ever held: at widths of 10^5 the
    activity of an attack batch is hundreds of MB, and every pass over it is bound by memory
    bandwidth. The backward pass recomputes each block's activity (the gather is cheap) and gives
    the gradients of ``x``, ``W`` and ``b`` that autograd asks for; the granule weights, indices and
    the shift are constants. Equal to the unblocked computation up to float32 summation order
    (relative 1e-6, tested)."""

    @staticmethod
    def _block(xT, index, gweight, s, e):
        """``zT`` (cells s..e, n): one gathered input row per fan-in slot, accumulated in place (5x
        faster than a batched matrix product at K = 2, 1.5x at K = 20, on a 2-core AMD EPYC, 7 Dec 2026)."""
        zT = xT.index_select(0, index[s:e, 0]) * gweight[s:e, 0:1]
        for j in range(1, index.shape[1]):
            zT.addcmul_(xT.index_select(0, index[s:e, j]), gweight[s:e, j:j + 1])
        return zT

    @staticmethod
    def forward(ctx, x, index, gweight, weight, bias, shift):
        xT = x.T.contiguous()
        yT = torch.zeros(weight.shape[0], x.shape[0], dtype=x.dtype, device=x.device)
        for s in range(0, index.shape[0], GATHER_BLOCK):
            e = min(index.shape[0], s + GATHER_BLOCK)
            yT.addmm_(weight[:, s:e], _BlockedGatherHead._block(xT, index, gweight, s, e).clamp_min_(0))
        ctx.save_for_backward(x, index, gweight, weight, shift)
        ctx.has_shift = shift is not None
        y = yT.T
        if shift is not None:
            y = y - weight @ shift
        return (y + bias if bias is not None else y).contiguous()

    @staticmethod
    def backward(ctx, gy):
        x, index, gweight, weight, shift = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        xT, gyT = x.T.contiguous(), gy.T.contiguous()
        gxT = torch.zeros_like(xT) if need_x else None
        gw = torch.zeros_like(weight) if need_w else None
        k = index.shape[1]
        for s in range(0, index.shape[0], GATHER_BLOCK):
            e = min(index.shape[0], s + GATHER_BLOCK)
            zT = _BlockedGatherHead._block(xT, index, gweight, s, e)
            if need_w:
                hT = zT.clamp_min(0)
                if ctx.has_shift:
                    hT = hT - shift[s:e, None]
                gw[:, s:e] = gyT @ hT.T
            if need_x:
                gzT = (weight[:, s:e].T @ gyT).mul_(zT > 0)
                for j in range(k):
                    gxT.index_add_(0, index[s:e, j], gzT * gweight[s:e, j:j + 1])
        return gxT.T if need_x else None, None, None, gw, (gy.sum(0) if need_b else None), None


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``h W^T + b``; for a transposed ``h`` computes ``(W h^T)^T`` (the fast BLAS layout)."""
    if not h.is_contiguous() and h.T.is_contiguous():
        y = (weight @ h.T).T
    else:
        y = h @ weight.T
    return y + bias if bias is not None else y


class RateModel(nn.Module):
    """Granule layer -> optional running-mean subtraction ("LTD") -> linear Purkinje readout.

    In training mode every forward call moves the running mean ``ma`` through the batch sample by
    sample (:func:`ema_scan`) and subtracts each sample's updated mean; in evaluation mode ``ma``
    is frozen. Input (n_samples, n_inputs) in [0, 1]; output (n_samples, n_classes).
    """

    def __init__(self, cfg: RateConfig, n_inputs: int, n_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg, self.n_inputs, self.n_classes = cfg, n_inputs, n_classes
        self.granule = GranuleLayer(cfg.granule, n_inputs, cfg.width, cfg.k, cfg.init, generator)
        self.readout = nn.Linear(cfg.width, n_classes, bias=cfg.bias)
        with torch.no_grad():
            bound = 1.0 / np.sqrt(cfg.width)
            for p in self.readout.parameters():
                if generator is None:
                    p.zero_()
                else:
                    p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)
        if cfg.ltd == "ma":
            self.register_buffer("ma", torch.zeros(cfg.width))
        else:
            self.ma = None

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """LTD and readout from granule activity ``h`` (n_samples, width) -> (n_samples, n_classes)."""
        if self.ma is not None:
            if self.training:
                with torch.no_grad():
                    running, last = ema_scan(h.detach(), self.ma, self.cfg.beta)
                    self.ma.copy_(last)
                h = h - running
            else:
                h = h - self.ma
        return _linear(h, self.readout.weight, self.readout.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.granule
        if not self.training and g.gathers:
            # evaluation of a gather layer (small K): blocked over the cells (_BlockedGatherHead)
            return _BlockedGatherHead.apply(x, g.index, g.weight.to(x.dtype), self.readout.weight,
                                            self.readout.bias, self.ma)
        return self.head(self.granule(x))


class MLP(nn.Module):
    """``y = W2 relu(W1 x + b1) + b2``: the paper's backprop baseline (hidden 50)."""

    def __init__(self, cfg: MLPConfig, n_inputs: int, n_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg, self.n_inputs, self.n_classes = cfg, n_inputs, n_classes
        self.hidden = nn.Linear(n_inputs, cfg.hidden, bias=cfg.bias)
        self.readout = nn.Linear(cfg.hidden, n_classes, bias=cfg.bias)
        with torch.no_grad():
            for layer in (self.hidden, self.readout):
                bound = 1.0 / np.sqrt(layer.in_features)
                for p in layer.parameters():
                    if generator is None:
                        p.zero_()
                    else:
                        p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.hidden(x)))


def build_model(kind: str, cfg, n_inputs: int, n_classes: int, generator: torch.Generator | None = None) -> nn.Module:
    """A fresh module of ``kind``; with ``generator=None`` only the shapes (for loading)."""
    if _check_kind(kind) == "rate":
        return RateModel(cfg, n_inputs, n_classes, generator)
    return MLP(cfg, n_inputs, n_classes, generator)


# ----------------------------------------------------------------------------- helpers
def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    init_seed, order_seed = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return (torch.Generator().manual_seed(int(init_seed) >> 1), torch.Generator().manual_seed(int(order_seed) >> 1))


def _chunk(width: int) -> int:
    return int(max(16, min(1024, (1 << 25) // max(width, 1))))


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Outputs of ``model`` in evaluation mode for ``x`` (n_samples, n_inputs), in batches."""
    was_training = model.training
    model.eval()
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = x.copy()
    device = _device_of(model)
    x = torch.as_tensor(x, dtype=torch.float32)
    bs = batch_size or _chunk(getattr(getattr(model, "cfg", None), "width", 1000))
    out = (torch.cat([model(x[i:i + bs].to(device)).cpu() for i in range(0, len(x), bs)]) if len(x)
           else torch.zeros(0, model.n_classes))
    model.train(was_training)
    return out


def _device_of(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def predict_labels(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    """Predicted classes (argmax of the outputs), (n_samples,) int64."""
    return predict_logits(model, x, batch_size).argmax(dim=1).numpy()


@torch.no_grad()
def _granule_cache(model: RateModel, x: torch.Tensor) -> torch.Tensor:
    """Granule activity of every row of ``x`` as float16, (n_samples, width)."""
    out = torch.empty(len(x), model.cfg.width, dtype=torch.float16, device=x.device)
    bs = _chunk(model.cfg.width)
    for i in range(0, len(x), bs):
        out[i:i + bs] = model.granule(x[i:i + bs])
    return out


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run the block with ``n`` torch threads, then restore the previous number.

    The readout-training loop is a long series of small element-wise operations; with two
    threads on a machine whose cores are busy (another simulation), every operation waits for a
    descheduled thread, which was measured to make a training step 10-50x slower (1.4 GB of
    float16 features, width 200,000: 240 ms vs 30 ms per step). One thread avoids that.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cache_budget() -> int:
    """Bytes the float16 granule cache may take: half of the memory available now (Linux
    ``MemAvailable``, which counts reclaimable page cache), else 8 GB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return 8 << 30


def _b1_kernel() -> bool:
    from models.readout_b1 import kernel_available

    return kernel_available()


def _mse(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((y - target) ** 2).sum(dim=1).mean()


@torch.no_grad()
def _score(fn, x: torch.Tensor, labels: torch.Tensor, n_classes: int, bs: int) -> tuple[float, float]:
    """(accuracy, mean MSE loss) of ``fn`` over rows of ``x`` in batches."""
    correct, loss = 0, 0.0
    for i in range(0, len(x), bs):
        y = fn(x[i:i + bs])
        lab = labels[i:i + bs]
        correct += int((y.argmax(1) == lab).sum())
        loss += float(_mse(y, F.one_hot(lab, n_classes).to(y.dtype))) * len(lab)
    return correct / len(x), loss / len(x)


# ----------------------------------------------------------------------------- training
def _end_epoch(epoch, train_loss, train_acc, evaluate_test, curve, bar, started, train_cfg) -> bool:
    """Evaluate, log and record one epoch in ``curve``; True when the early stop is reached."""
    acc, tloss = evaluate_test()
    curve.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                  "test_loss": tloss, "test_accuracy": acc, "wall_s": time.time() - started})
    log.info("epoch %d: train loss %.4f acc %.4f, test acc %.4f", epoch, train_loss, train_acc, acc)
    bar.set_postfix(test_acc=f"{acc:.4f}")
    if acc >= train_cfg.early_stop_acc:
        log.info("early stop: test accuracy %.4f >= %.4f", acc, train_cfg.early_stop_acc)
        return True
    return False


def _train_epochs(model, opt, step_fn, train_in, y_tr, targets, train_cfg, gen_order, bar, curve, evaluate_test,
                  started) -> int:
    """The epoch loop of :func:`fit`; appends to ``curve`` and returns the number of epochs run."""
    bs, n = train_cfg.batch_size, len(y_tr)
    epochs_run = 0
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen_order)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            y = step_fn(train_in[idx])
            loss = _mse(y, targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((y.detach().argmax(1) == y_tr[idx]).sum())
            bar.update(1)
        epochs_run = epoch
        if _end_epoch(epoch, loss_sum / n, correct / n, evaluate_test, curve, bar, started, train_cfg):
            break
    return epochs_run


B1_BLOCK = 256  # rows converted to float32 at a time for the compiled batch-size-1 loop


def _train_epochs_b1(model, features, y_tr, train_cfg, lr, gen_order, bar, curve, evaluate_test, started) -> int:
    """The epoch loop of :func:`fit` at batch size 1 for the rate model: the same sample order and
    arithmetic as :func:`_train_epochs`, one compiled loop per block of samples
    (:mod:`models.readout_b1`) instead of one autograd step per sample. ``features(idx)`` gives
    the float32 granule activity of training rows ``idx`` (from the cache, or computed on the fly
    when the cache would not fit in memory: memory then stays one block)."""
    from models.readout_b1 import train_block

    n = len(y_tr)
    P = model.readout.weight.data.numpy()
    b = model.readout.bias.data.numpy() if model.readout.bias is not None else None
    vP = np.zeros_like(P)
    vb = np.zeros_like(b) if b is not None else None
    m = model.ma.numpy() if model.ma is not None else None
    labels = y_tr.numpy()
    epochs_run = 0
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen_order)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, B1_BLOCK):
            idx = order[i:i + B1_BLOCK]
            with torch.no_grad():
                rows = features(idx).numpy()
            loss, ok = train_block(rows, labels[idx.numpy()], P, b, vP, vb, m,
                                   beta=model.cfg.beta, lr=lr, alpha=train_cfg.alpha, eps=train_cfg.eps)
            loss_sum += loss
            correct += ok
            bar.update(len(idx))
        epochs_run = epoch
        if _end_epoch(epoch, loss_sum / n, correct / n, evaluate_test, curve, bar, started, train_cfg):
            break
    return epochs_run


def fit(kind: str, dataset, model_cfg, train_cfg, seed: int, run, progress: bool = False, device: str = "cpu") -> dict:
    """Train model ``kind`` on ``dataset``; write ``checkpoint.npz`` and ``learning_curve.csv``.

    Returns metrics with ``train_accuracy``, ``test_accuracy``, ``epochs_run``, ``lr`` and
    ``train_wall_s``. Every random choice (weights, connectivity, sample order) follows ``seed``
    (drawn on the CPU, so a GPU run starts from the same network). ``device``: the torch device of
    the model and the data (see :mod:`core.device`); the compiled batch-size-1 loop runs on the
    CPU only, so on a GPU batch size 1 takes the autograd loop.
    """
    from tqdm.auto import tqdm

    _check_kind(kind)
    started = time.time()
    gen_init, gen_order = _generators(seed)
    model = build_model(kind, model_cfg, dataset.n_inputs, dataset.n_classes, gen_init).to(device)
    x_tr, y_tr = torch.from_numpy(dataset.x_train).to(device), torch.from_numpy(dataset.y_train).to(device)
    x_te, y_te = torch.from_numpy(dataset.x_test).to(device), torch.from_numpy(dataset.y_test).to(device)
    targets = F.one_hot(y_tr, dataset.n_classes).float()
    n_classes = dataset.n_classes

    if kind == "rate":
        lr = train_cfg.lr if train_cfg.lr is not None else train_cfg.lr_scale / model_cfg.width
        params = list(model.readout.parameters())
        cached = train_cfg.cache_features
        need = (len(x_tr) + len(x_te)) * model_cfg.width * 2
        if cached and need > _cache_budget():
            log.warning("the float16 granule cache would take %.1f GB (more than half of the available memory): "
                        "granule activity is recomputed block by block instead", need / 1e9)
            cached = False
        eval_bs = _chunk(model_cfg.width)
        if cached:
            t0 = time.time()
            h_tr, h_te = _granule_cache(model, x_tr), _granule_cache(model, x_te)
            log.info("granule activity cached (float16, %.2f GB) in %.1f s",
                     (h_tr.numel() + h_te.numel()) * 2 / 1e9, time.time() - t0)
            train_in, test_in = h_tr, h_te
            step_fn = lambda rows: model.head(rows.float())  # noqa: E731
        else:
            train_in, test_in = x_tr, x_te
            step_fn = model
    else:
        lr = train_cfg.lr
        params = list(model.parameters())
        train_in, test_in, step_fn, eval_bs, cached = x_tr, x_te, model, 1024, False
    opt = torch.optim.RMSprop(params, lr=lr, alpha=train_cfg.alpha, eps=train_cfg.eps)

    def evaluate_test() -> tuple[float, float]:
        model.eval()
        return _score(step_fn, test_in, y_te, n_classes, eval_bs)

    curve = []
    acc0, loss0 = evaluate_test()
    curve.append({"epoch": 0, "train_loss": float("nan"), "train_accuracy": float("nan"),
                  "test_loss": loss0, "test_accuracy": acc0, "wall_s": time.time() - started})
    bs, n = train_cfg.batch_size, len(y_tr)
    steps_per_epoch = (n + bs - 1) // bs
    bar = tqdm(total=train_cfg.epochs * steps_per_epoch, desc=f"train {kind}", unit="step",
               disable=not progress, leave=False)
    compiled = kind == "rate" and bs == 1 and torch.device(device).type == "cpu" and _b1_kernel()
    with _torch_threads(1):
        if compiled:
            features = (lambda idx: train_in[idx].float()) if cached else (lambda idx: model.granule(train_in[idx]))
            epochs_run = _train_epochs_b1(model, features, y_tr, train_cfg, lr, gen_order, bar, curve, evaluate_test,
                                          started)
        else:
            epochs_run = _train_epochs(model, opt, step_fn, train_in, y_tr, targets, train_cfg, gen_order, bar, curve,
                                       evaluate_test, started)
    bar.close()

    model.eval()
    train_acc, train_loss = _score(step_fn, train_in, y_tr, n_classes, eval_bs)
    test_acc_exact = float((predict_labels(model, x_te) == dataset.y_test).mean())
    run.write_csv(CURVE, curve, ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_s"])
    save_checkpoint(run.path / CHECKPOINT, kind, model.cpu())
    metrics = {
        "train_accuracy": train_acc,
        "train_loss": train_loss,
        "test_accuracy": test_acc_exact,
        "test_accuracy_last_epoch": curve[-1]["test_accuracy"],
        "epochs_run": epochs_run,
        "lr": lr,
        "n_parameters_trained": int(sum(p.numel() for p in params)),
        "feature_cache": "float16" if cached else "none",
        "train_loop": "compiled batch-size-1" if compiled else "pytorch",
        "train_wall_s": time.time() - started,
    }
    return metrics


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, kind: str, model: nn.Module) -> Path:
    """Write every tensor of ``model`` plus its configuration (JSON bytes) to an ``.npz``."""
    from core.runs import save_npz

    header = {"format": _FORMAT, "model_kind": kind, "model": asdict(model.cfg),
              "n_inputs": model.n_inputs, "n_classes": model.n_classes}
    arrays = {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}
    arrays["config_json"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    return save_npz(path, **arrays)


def load_checkpoint(path: str | Path) -> tuple[str, nn.Module]:
    """Rebuild ``(kind, module)`` from a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`~core.errors.CheckpointError` naming the file and what is wrong with it.
    """
    from core.runs import load_npz

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        arrays = load_npz(path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if "config_json" not in arrays:
        raise CheckpointError(f"{path} has no config_json array; not a rate/mlp checkpoint")
    try:
        header = json.loads(arrays.pop("config_json").tobytes().decode())
        kind = header["model_kind"]
        cfg = model_config(kind)(**header["model"])
        model = build_model(kind, cfg, int(header["n_inputs"]), int(header["n_classes"]))
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: its configuration cannot be read ({type(exc).__name__}: {exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: arrays do not match a {kind} model (missing {missing}, unexpected {extra})")
    state = {}
    for name, ref in expected.items():
        arr = arrays[name]
        if tuple(arr.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: array {name} has shape {arr.shape}, expected {tuple(ref.shape)}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(ref.dtype)
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: array {name} holds NaN or infinite values")
        state[name] = t
    idx = state.get("granule.index")
    if idx is not None and idx.numel():
        if int(idx.min()) < 0 or int(idx.max()) >= model.n_inputs:
            raise CheckpointError(f"{path}: granule.index points outside the {model.n_inputs} inputs")
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return kind, model


def load(run_path: str | Path) -> nn.Module:
    """The trained module of a completed ``rate`` or ``mlp`` run folder (evaluation mode).

    Raises :class:`~core.errors.CheckpointError` if the checkpoint is missing, corrupt, or does
    not match the run's ``config.json``.
    """
    run_path = Path(run_path)
    cfg_file = run_path / "config.json"
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {cfg_file} ({exc})") from None
    kind, model = load_checkpoint(run_path / CHECKPOINT)
    if config.get("model_kind") != kind:
        raise CheckpointError(f"{run_path}: config.json says model {config.get('model_kind')!r}, checkpoint holds {kind!r}")
    if config.get("model") != asdict(model.cfg):
        raise CheckpointError(f"{run_path}: the checkpoint's model configuration differs from config.json")
    return model
