"""A cohort's local SGD step for convolutional networks, without autograd or optimizers.

The vectorized engine's general path (``vmap(functional_call)``) turns a convolution with
per-client weights into a grouped convolution, which PyTorch's CPU kernels run slower than the
sequential engine's per-client loop. This module trains the FL CNNs
(:class:`privfl.models.CNNConfig`, and any ``nn.Sequential`` of the same layers) for ``k``
clients at once:

- the layers before ``Flatten`` (convolutions, activations, pooling) run client by client
  with PyTorch's own kernels on channels-last ``(B, C, H, W)`` tensors: ``F.conv2d`` forward,
  ``aten.convolution_backward`` for the input gradient (skipped for the first layer) and the
  weight and bias gradients in one call, ``max_pool2d_with_indices`` and its backward (so ties
  go where autograd sends them), ``threshold_backward`` for ReLU. At FL batch sizes PyTorch's
  (oneDNN's) convolution runs near the GEMM rate, where im2col + ``bmm`` over the cohort (this
  kernel's first version) and one grouped convolution do not; a client's maps stay small enough
  to be reused by the allocator and to stay in cache, where the cohort's ``(k, B, C, H, W)``
  maps cost a fresh allocation (page faults) and a trip through memory per operation. What the
  loop saves against the sequential engine is the rest of a step: autograd, the optimizer,
  the dense head, the loss and the Python around them;
- an affine ``GroupNorm`` runs client by client on ``aten.native_group_norm`` and its
  backward (autograd's own kernels, channels-last kept) with each client's own scale and
  shift; DP-SGD takes each example's scale and shift gradients as they are (``C`` numbers
  each: ``sum_hw g * x_hat`` and ``sum_hw g``, GroupNorm normalizing each example by itself);
- a ReLU directly before a max-pool is applied after it instead (the same function and the
  same gradient, since ReLU is monotone and zero where the max is not positive, on a 4x
  smaller map);
- ``Flatten`` writes each client's features, in the sequential model's NCHW order, into one
  ``(k, B, features)`` tensor; the dense head, loss and masks run batched over the cohort with
  :mod:`privfl.engine.batched_mlp`'s per-client and deferred low-rank weights; SGD updates a
  client's conv weights in place right after its backward.

For DP-SGD, :meth:`BatchedCNN.clipped_gradient_sums` computes per-example gradient norms layer
by layer with the "mixed ghost clipping" rule of Bu et al. 2022 ("Scalable and Efficient
Training of Large Convolutional Neural Networks with Differential Privacy", NeurIPS 2022,
arXiv:2205.10683): for a layer with ``T`` output positions, input width ``D = kh*kw*Cin`` and
output width ``p``, the ghost norm ``<A A^T, G G^T>`` (two ``T x T`` Gram matrices per example)
when ``2 T^2 <= p D``, otherwise the per-example gradient ``A^T G`` (``p D`` numbers) is formed
(the rule as released in the authors' code, ``use_gc = 2*T**2 <= D*p``). Those need each
example's patches ``A`` (im2col, :func:`_im2col`), formed from the saved layer inputs.

The arithmetic is SGD's, with PyTorch's own kernels for the spatial layers, so equal to the
sequential engine to float rounding; ``tests/engine/test_batched_cnn.py`` checks it against
``torch.func``, plain SGD, the sequential engine and Opacus' per-sample gradients. Written by
hand because no library offers a client-batched convolution with per-client weights that runs
near GEMM speed on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from privfl.engine.batched_mlp import _Activation, _Deferred, _Dense, _Linear, cohort_rows
from privfl.engine.gemm import fused_conv_weights
from privfl.engine.groups import side_by_side

Params = dict[str, torch.Tensor]

#: Activations supported, each with its derivative written in terms of its output ``y``.
_DERIVATIVES = {
    nn.ReLU: lambda y: (y > 0).to(y.dtype),
    nn.Tanh: lambda y: 1 - y * y,
    nn.Sigmoid: lambda y: y * (1 - y),
}


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class _Conv:
    weight: str
    bias: str | None
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
        )
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (
            w + 2 * pw - dw * (kw - 1) - 1
        ) // sw + 1


@dataclass(frozen=True)
class _Pool:
    module: nn.Module


@dataclass(frozen=True)
class _Flatten:
    pass


@dataclass(frozen=True)
class _Norm:
    """An affine ``GroupNorm`` (each client its own scale and shift)."""

    weight: str
    bias: str
    groups: int
    eps: float


_Layer = _Conv | _Linear | _Activation | _Pool | _Flatten | _Norm


def _group_norm(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: _Norm
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's own GroupNorm of one client's ``(B, C, H, W)`` map (channels-last kept):
    the output and the per-group mean and reciprocal deviation its backward needs."""
    b, c = h.shape[:2]
    return torch.ops.aten.native_group_norm(
        h, weight, bias, b, c, h[0, 0].numel(), norm.groups, norm.eps
    )


def _group_norm_backward(
    g: torch.Tensor,
    saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
    norm: _Norm,
    *,
    input_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The input, scale and shift gradients of :func:`_group_norm` (autograd's own kernel;
    ``input_only``: the input's alone, the others None)."""
    h, mean, rstd = saved
    b, c = h.shape[:2]
    return torch.ops.aten.native_group_norm_backward(
        g,
        h,
        mean,
        rstd,
        weight,
        b,
        c,
        h[0, 0].numel(),
        norm.groups,
        [True, not input_only, not input_only],
    )


def _group_norm_per_example(
    g: torch.Tensor, saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's own scale and shift gradients ``(B, C)`` of a GroupNorm from its output
    gradient ``g``: ``sum_hw g * x_hat`` and ``sum_hw g`` (GroupNorm normalizes each example
    by itself, so example ``j``'s gradient is its own terms)."""
    h, mean, rstd = saved
    b, c = h.shape[:2]
    groups = mean.shape[1]
    by_group = (b, groups, c // groups, *h.shape[2:])
    x_hat = (h.view(by_group) - mean.view(b, groups, 1, 1, 1)) * rstd.view(b, groups, 1, 1, 1)
    return (g.view(by_group) * x_hat).sum((3, 4)).view(b, c), g.sum((2, 3))


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` ``(B, C, H, W)`` with channels-last strides. PyTorch infers a map's layout from its
    strides, and a one-channel map in row-major strides counts as NCHW even though its memory
    is the same, so ``contiguous(memory_format=channels_last)`` leaves it as is and every
    kernel after it runs NCHW (a 1x28x28 CNN's round took 0.86-0.92 s against 0.51-0.60 s):
    it gets channels-last strides on the same memory instead."""
    if t.shape[1] == 1:
        t = t.contiguous()
        b, _, h, w = t.shape
        return t.as_strided(t.shape, (h * w, 1, w, 1))
    return t.contiguous(memory_format=torch.channels_last)


def _conv_weight(m: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``(k, kh*kw*Cin, Cout)`` matrices (the column order of :func:`_im2col`) as
    ``(k, Cout, Cin, kh, kw)`` conv weights."""
    cout, cin, kh, kw = shape
    return m.view(len(m), kh, kw, cin, cout).permute(0, 4, 3, 1, 2).contiguous()


def _im2col(h: torch.Tensor, conv: _Conv) -> torch.Tensor:
    """``(k, B, C, H, W)`` -> the patches ``(k, B*Ho*Wo, kh*kw*C)``, columns ordered
    ``(kh, kw, C)`` (DP-SGD's per-example norms need them; training does not)."""
    h = h.permute(0, 1, 3, 4, 2)  # channels-last
    k, b, hh, ww, c = h.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel, conv.stride, conv.padding, conv.dilation
    hp = F.pad(h, (0, 0, pw, pw, ph, ph)) if ph or pw else h
    hp = hp.contiguous()
    ho, wo = conv.out_size(hh, ww)
    s = hp.stride()
    view = hp.as_strided(
        (k, b, ho, wo, kh, kw, c),
        (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw, s[4]),
        hp.storage_offset(),
    )
    return view.reshape(k, b * ho * wo, kh * kw * c)


def _ghost_norm_pays(t: int, p: int, d: int) -> bool:
    """Bu et al. 2022's layerwise choice for a layer with ``t`` output positions, ``p`` outputs
    and ``d`` inputs per position: the ghost norm (two ``t x t`` Gram matrices per example)
    when ``2 t^2 <= p d``, else the per-example gradient (``p d`` numbers)."""
    return 2 * t * t <= p * d


def _conv_args(conv: _Conv) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    return conv.stride, conv.padding, conv.dilation


def _pool(m: Any, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PyTorch's pooling of ``h`` ``(B, C, H, W)``, with the argmax indices of a max-pool."""
    if isinstance(m, nn.MaxPool2d):
        return F.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
    return m(h), None


def _pool_backward(
    m: Any, g: torch.Tensor, h: torch.Tensor, idx: torch.Tensor | None
) -> torch.Tensor:
    """The gradient of :func:`_pool`'s input ``h`` from its output's ``g``: PyTorch's own
    backward kernels, so ties go where autograd sends them."""
    if idx is not None:
        return torch.ops.aten.max_pool2d_with_indices_backward(
            g,
            h,
            _pair(m.kernel_size),
            _pair(m.stride or m.kernel_size),
            _pair(m.padding),
            _pair(m.dilation),
            m.ceil_mode,
            idx,
        )
    return torch.ops.aten.avg_pool2d_backward(
        g,
        h,
        _pair(m.kernel_size),
        _pair(m.stride or m.kernel_size),
        _pair(m.padding),
        m.ceil_mode,
        m.count_include_pad,
        m.divisor_override,
    )


def _activation_backward(m: nn.Module, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of an activation's input from its output ``y`` and output gradient."""
    if type(m) is nn.ReLU:
        return torch.ops.aten.threshold_backward(g, y, 0)  # autograd's own ReLU backward
    return g * _DERIVATIVES[type(m)](y)


def _patch_weight_grad(
    conv: _Conv, g: torch.Tensor, a: torch.Tensor, shape: torch.Size, bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One client's conv weight (and bias) gradient from its output gradient ``g``
    ``(B, Cout, Ho, Wo)`` and input ``a`` ``(B, Cin, H, W)``: the patches' product
    ``A^T G`` (:func:`_im2col`), as a ``(Cout, Cin, kh, kw)`` view."""
    cout, cin, kh, kw = shape
    patches = _im2col(a.unsqueeze(0), conv)[0]  # (B*T, kh*kw*Cin)
    gm = g.permute(0, 2, 3, 1).reshape(-1, cout)  # a view when g is channels-last
    gw = (patches.t() @ gm).view(kh, kw, cin, cout).permute(3, 2, 0, 1)
    return gw, (gm.sum(0) if bias else None)


def _for_each_client(k: int, x: torch.Tensor, work: Callable[[int], None]) -> None:
    """``work(i)`` for clients ``0 .. k-1``. On the CPU with ``n > 1`` torch threads the
    clients are dealt into ``n`` groups (``g, g + n, ...``) run side by side, each
    single-threaded inside torch (:func:`privfl.engine.groups.side_by_side`)."""
    groups = min(torch.get_num_threads(), k) if x.device.type == "cpu" else 1
    if groups <= 1:
        for i in range(k):
            work(i)
        return

    def run(group: int) -> None:
        for i in range(group, k, groups):
            work(i)

    side_by_side(groups, run)


class BatchedCNN:
    """Forward and backward passes of an ``nn.Sequential`` CNN (``Conv2d``, activations,
    ``MaxPool2d``/``AvgPool2d``, one ``Flatten``, then ``Linear`` layers with activations) for
    ``k`` clients at once, each with its own parameters stacked along a leading axis.

    Build it with :meth:`of`, which returns None for any other model (:meth:`unsupported` says
    why).
    """

    def __init__(self, layers: list[_Layer], shapes: dict[str, torch.Size]) -> None:
        self._layers = layers
        self._shapes = shapes  # parameter shapes of the conv weights

    @staticmethod
    def unsupported(model: nn.Module) -> str | None:
        """Why :meth:`of` does not take ``model``, or None when it does."""
        if type(model) is not nn.Sequential:
            return f"the model is a {type(model).__name__}, not an nn.Sequential"
        spatial, convs = True, 0
        for name, m in model.named_children():
            t = type(m)
            if t is nn.Conv2d:
                if not spatial:
                    return f"layer {name}: a convolution after Flatten"
                if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                    return (
                        f"layer {name}: only Conv2d with groups = 1 and numeric zero padding is "
                        "batched"
                    )
                convs += 1
            elif t in (nn.MaxPool2d, nn.AvgPool2d):
                if not spatial:
                    return f"layer {name}: pooling after Flatten"
                if t is nn.MaxPool2d and m.return_indices:
                    return f"layer {name}: a MaxPool2d that returns indices"
            elif t is nn.GroupNorm:
                if not spatial:
                    return f"layer {name}: GroupNorm after Flatten"
                if not m.affine:
                    return f"layer {name}: only GroupNorm with affine = True is batched"
            elif t is nn.Flatten:
                if not spatial or (m.start_dim, m.end_dim) != (1, -1):
                    return f"layer {name}: only one Flatten(1, -1) is batched"
                spatial = False
            elif t is nn.Linear:
                if spatial:
                    return f"layer {name}: a Linear layer before Flatten"
            elif t not in _DERIVATIVES:
                return f"layer {name} ({t.__name__}) has no batched CNN kernel"
        if convs == 0:
            return "the model has no convolution"
        if spatial:
            return "the model does not end in Flatten and Linear layers"
        if not isinstance(list(model.children())[-1], nn.Linear):
            return "the model does not end with a Linear layer (the logits)"
        return None

    @classmethod
    def of(cls, model: nn.Module) -> BatchedCNN | None:
        """The kernel for ``model``, or None unless :meth:`unsupported` finds nothing."""
        if cls.unsupported(model) is not None:
            return None
        layers: list[_Layer] = []
        shapes: dict[str, torch.Size] = {}
        for name, m in model.named_children():
            bias = None if getattr(m, "bias", None) is None else f"{name}.bias"
            if type(m) is nn.Conv2d:
                layers.append(
                    _Conv(
                        f"{name}.weight",
                        bias,
                        _pair(m.kernel_size),
                        _pair(m.stride),
                        _pair(m.padding),  # type: ignore[arg-type]  # str padding: refused above
                        _pair(m.dilation),
                    )
                )
                shapes[f"{name}.weight"] = m.weight.shape
            elif type(m) is nn.Linear:
                layers.append(_Linear(f"{name}.weight", bias))
            elif type(m) is nn.Flatten:
                layers.append(_Flatten())
            elif type(m) is nn.GroupNorm:
                layers.append(_Norm(f"{name}.weight", f"{name}.bias", m.num_groups, m.eps))
            elif type(m) in _DERIVATIVES:
                layers.append(_Activation(m))
            else:
                pool = _Pool(m)
                prev = layers[-1] if layers else None
                if (
                    type(m) is nn.MaxPool2d
                    and isinstance(prev, _Activation)
                    and type(prev.module) is nn.ReLU
                ):
                    layers[-1:] = [pool, prev]  # relu(maxpool(x)) == maxpool(relu(x)), cheaper
                else:
                    layers.append(pool)
        return cls(layers, shapes)

    @property
    def weighted_layers(self) -> list[_Conv | _Linear]:
        return [layer for layer in self._layers if isinstance(layer, _Conv | _Linear)]

    @property
    def norm_layers(self) -> list[_Norm]:
        """The GroupNorm layers (each client its own scale and shift)."""
        return [layer for layer in self._layers if isinstance(layer, _Norm)]

    def _stacked_weights(self, params: Params) -> dict[str, torch.Tensor | _Dense]:
        weights: dict[str, torch.Tensor | _Dense] = {
            layer.weight: (
                params[layer.weight] if isinstance(layer, _Conv) else _Dense(params[layer.weight])
            )
            for layer in self.weighted_layers
        }
        return weights | {norm.weight: params[norm.weight] for norm in self.norm_layers}

    def _stacked_biases(self, params: Params) -> Params:
        biases = {layer.bias: params[layer.bias] for layer in self.weighted_layers if layer.bias}
        return biases | {norm.bias: params[norm.bias] for norm in self.norm_layers}

    def gradients(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[Params, torch.Tensor]:
        """Each client's gradient of its mean cross-entropy, and that loss.

        Args:
            params: each ``(k, *shape)``, the first ``k`` clients' parameters.
            x: ``(k, B, C, H, W)``; y: ``(k, B)`` labels.
            mask: ``(k, B)``, 1 for real examples, 0 for padding; None when none is padded.
        Returns:
            ``(grads, loss)``: grads with the shapes of ``params``; loss float32 ``(k,)``.
        """
        k = len(y)
        grads: Params = {}
        weights = self._stacked_weights(params)
        biases = self._stacked_biases(params)
        for layer in [*self.weighted_layers, *self.norm_layers]:
            if isinstance(layer, _Conv | _Norm):  # written client by client (take_conv)
                grads[layer.weight] = params[layer.weight].new_empty(params[layer.weight].shape)
                if layer.bias is not None:
                    grads[layer.bias] = params[layer.bias].new_empty(params[layer.bias].shape)

        def take(layer: _Conv | _Linear, g: torch.Tensor, a: torch.Tensor) -> None:
            grads[layer.weight] = weights[layer.weight].gradient(g, a)  # type: ignore[union-attr]
            if layer.bias is not None:
                grads[layer.bias] = g.sum(1)

        def take_conv(
            layer: _Conv | _Norm, i: int, gw: torch.Tensor, gb: torch.Tensor | None
        ) -> None:
            grads[layer.weight][i].copy_(gw)
            if gb is not None:
                grads[layer.bias][i].copy_(gb)  # type: ignore[index]

        loss = self._pass(weights, biases, x, y, mask, take, take_conv)
        return {n: g[:k] for n, g in grads.items()}, loss

    def _feature_map(self, spatial: list[_Layer], size: torch.Size) -> torch.Size:
        """The ``(C, H, W)`` map that the layers before ``Flatten`` make of one ``size``
        input (worked out on the meta device, no arithmetic)."""
        h = torch.empty((1, *size), device="meta")
        for layer in spatial:
            if isinstance(layer, _Conv):
                w = torch.empty(self._shapes[layer.weight], device="meta")
                h = F.conv2d(h, w, None, *_conv_args(layer))
            elif isinstance(layer, _Pool):
                h = _pool(layer.module, h)[0]
        return h.shape[1:]

    def _pass(
        self,
        weights: Mapping[str, torch.Tensor | _Dense | _Deferred],
        biases: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
        take: Callable[[_Conv | _Linear, torch.Tensor, torch.Tensor], None],
        take_conv: Callable[[_Conv, int, torch.Tensor, torch.Tensor | None], None] | None = None,
        *,
        per_example: bool = False,
    ) -> torch.Tensor:
        """Forward, loss and backward for the first ``k = len(y)`` clients.

        The layers before ``Flatten`` run client by client with PyTorch's own kernels
        (channels-last), their outputs written into one ``(k, B, features)`` tensor; the dense
        head runs batched over the cohort. Each Linear layer's output gradient ``g``
        ``(k, B, out)`` and input ``a`` ``(k, B, in)`` go to ``take``, after the gradient for
        the layer below was computed from its weights as they were. Client ``i``'s conv
        weight and bias gradients go to ``take_conv(layer, i, gw, gb)``, after its input
        gradient was computed; without ``take_conv``, ``take`` gets each conv layer's output
        gradients ``(k, B, Cout, Ho, Wo)`` and inputs ``(k, B, Cin, H, W)`` once all clients
        are done. Returns the losses.

        ``per_example``: differentiate each example's own cross-entropy (``mask`` ignored) and
        return the ``(k, B)`` per-example losses, instead of each client's masked mean."""
        k, b = y.shape
        flat = next(j for j, la in enumerate(self._layers) if isinstance(la, _Flatten))
        spatial, head = self._layers[:flat], self._layers[flat + 1 :]
        first = next(j for j, la in enumerate(spatial) if isinstance(la, _Conv))
        kept: list[list[object]] = [[] for _ in range(k)]  # per client, for the backward
        shape = (b, *self._feature_map(spatial, x.shape[2:]))
        feats = x.new_empty((k, b, math.prod(shape[1:])))

        def forward(i: int) -> None:
            h = _channels_last(x[i])
            saved: list[object] = []
            for layer in spatial:
                if isinstance(layer, _Conv):
                    saved.append(h)
                    bias = biases[layer.bias][i] if layer.bias is not None else None
                    h = F.conv2d(h, weights[layer.weight][i], bias, *_conv_args(layer))  # type: ignore[index]
                elif isinstance(layer, _Activation):
                    h = layer.module(h)
                    saved.append(h)
                elif isinstance(layer, _Norm):
                    w, shift = weights[layer.weight][i], biases[layer.bias][i]  # type: ignore[index]
                    out, mean, rstd = _group_norm(h, w, shift, layer)  # type: ignore[arg-type]
                    saved.append((h, mean, rstd))
                    h = out
                else:
                    out, idx = _pool(layer.module, h)  # type: ignore[union-attr]
                    saved.append((h, idx))
                    h = out
            kept[i] = saved
            feats[i].view(shape).copy_(h)  # Flatten: the sequential model's NCHW order

        with torch.no_grad():
            _for_each_client(k, x, forward)
            h = feats
            saved_head: list[torch.Tensor] = []
            for layer in head:
                if isinstance(layer, _Linear):
                    saved_head.append(h)
                    h = weights[layer.weight].forward(h)  # type: ignore[union-attr]
                    if layer.bias is not None:
                        h.add_(biases[layer.bias][:k].unsqueeze(1))
                else:
                    h = layer.module(h)  # type: ignore[union-attr]
                    saved_head.append(h)
            logp = torch.log_softmax(h, dim=2)
            ce = -logp.gather(2, y.unsqueeze(2)).squeeze(2)  # (k, B)
            # d loss_i / d logits = (softmax - onehot) / (real examples of client i)
            g = logp.exp_()
            g.scatter_add_(
                2, y.unsqueeze(2), torch.full((k, b, 1), -1.0, dtype=g.dtype, device=g.device)
            )
            if per_example:
                loss = ce
            elif mask is None:
                loss = ce.mean(1)
                g.mul_(1.0 / b)
            else:
                count = mask.sum(1, keepdim=True)
                loss = (ce * mask).sum(1) / count.squeeze(1)
                g.mul_((mask / count).unsqueeze(2))
            for layer, s in zip(reversed(head), reversed(saved_head), strict=True):
                if isinstance(layer, _Activation):
                    g = g * _DERIVATIVES[type(layer.module)](s)
                else:
                    below = weights[layer.weight].below(g)  # type: ignore[union-attr]
                    take(layer, g, s)  # type: ignore[arg-type]
                    g = below

        convs = [j for j, la in enumerate(spatial) if isinstance(la, _Conv)]
        per_conv: dict[int, tuple[list, list]] = {  # DP-SGD: (g, a) of each client's convs
            j: ([None] * k, [None] * k) for j in (convs[::-1] if take_conv is None else [])
        }
        norms = [j for j, la in enumerate(spatial) if isinstance(la, _Norm)]
        per_norm: dict[int, tuple[list, list]] = {  # DP-SGD: each client's (k, L, C) pairs
            j: ([None] * k, [None] * k) for j in (norms if take_conv is None else [])
        }

        def backward(i: int) -> None:
            # channels-last like the saved maps: mixed layouts make every kernel below slow
            gi = _channels_last(g[i].view(shape))
            saved, kept[i] = kept[i], []
            for j in range(len(spatial) - 1, first - 1, -1):
                layer, s = spatial[j], saved[j]
                if isinstance(layer, _Activation):
                    gi = _activation_backward(layer.module, gi, s)  # type: ignore[arg-type]
                elif isinstance(layer, _Norm):
                    weight = weights[layer.weight][i]  # type: ignore[index]
                    if take_conv is None:  # DP-SGD: each example's own scale/shift gradients
                        per_norm[j][0][i], per_norm[j][1][i] = _group_norm_per_example(gi, s)
                        gi = _group_norm_backward(gi, s, weight, layer, input_only=True)[0]
                    else:
                        gi, gw, gb = _group_norm_backward(gi, s, weight, layer)  # type: ignore[arg-type]
                        take_conv(layer, i, gw, gb)
                elif isinstance(layer, _Pool):
                    gi = _pool_backward(layer.module, gi, *s)  # type: ignore[misc]
                else:
                    assert isinstance(layer, _Conv)
                    weight = weights[layer.weight][i]  # type: ignore[index]
                    need_weight = take_conv is not None
                    has_bias = need_weight and layer.bias is not None
                    # A conv whose input gradient is needed too: its weight gradient as one
                    # (D x B*T) @ (B*T x Cout) product of its patches where that was the
                    # faster (oneDNN's fused backward ran the weight part at about half the
                    # GEMM rate there), else from the fused backward (privfl.engine.gemm).
                    by_patches = need_weight and j > first and not fused_conv_weights()
                    gx, gw, gb = torch.ops.aten.convolution_backward(
                        gi,
                        s,
                        weight,
                        [weight.shape[0]] if has_bias and not by_patches else None,
                        *_conv_args(layer),
                        False,
                        (0, 0),
                        1,
                        (j > first, need_weight and not by_patches, has_bias and not by_patches),
                    )
                    if by_patches:
                        gw, gb = _patch_weight_grad(layer, gi, s, weight.shape, has_bias)
                    if take_conv is None:
                        per_conv[j][0][i], per_conv[j][1][i] = gi, s
                    else:
                        take_conv(layer, i, gw, gb if has_bias else None)
                    gi = gx

        with torch.no_grad():
            _for_each_client(k, x, backward)
            for j, (gs, inputs) in per_conv.items():
                take(spatial[j], torch.stack(gs), torch.stack(inputs))  # type: ignore[arg-type]
            for j, (gws, gbs) in per_norm.items():
                take(spatial[j], torch.stack(gws), torch.stack(gbs))  # type: ignore[arg-type]
        return loss

    def clipped_gradient_sums(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        factor_of: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        """DP-SGD's sums of clipped per-example gradients (Abadi et al. 2016), each layer's
        per-example norms by mixed ghost clipping (Bu et al. 2022; see the module docstring).

        A layer's per-example gradient is ``A_j^T G_j`` (``A_j``: the example's ``T`` input
        patches, ``G_j``: its ``T`` output gradients; ``T = 1`` for a Linear layer, where the
        norm is ``|g_j| |a_j|``), its squared norm either ``<A_j A_j^T, G_j G_j^T>`` (ghost)
        or summed from the formed gradient, whichever is smaller (``2 T^2 <= p D``). The bias
        gradient is ``sum_t G_j[t]``. The clipped sum is ``A^T (c * G)`` per client, or the
        weighted sum of the formed per-example gradients.

        Args:
            params: each ``(k, *shape)``; x ``(k, L, C, H, W)``; y ``(k, L)``.
            factor_of: each example's clipping factor ``c_j`` from the ``(k, L)`` norms of
                the whole per-example gradients (all layers), 0 for padding.
        Returns:
            ``(sums, losses, norms)``: the clipped sums with the shapes of ``params``, each
            example's loss and gradient norm, ``(k, L)``.
        """
        k, n = y.shape
        weights = self._stacked_weights(params)
        biases = self._stacked_biases(params)
        taken: list[tuple[_Conv | _Linear, torch.Tensor, torch.Tensor]] = []
        norms_taken: list[tuple[_Norm, torch.Tensor, torch.Tensor]] = []

        def take(layer: _Conv | _Linear | _Norm, g: torch.Tensor, a: torch.Tensor) -> None:
            if isinstance(layer, _Norm):  # each example's scale and shift gradients (k, L, C)
                norms_taken.append((layer, g, a))
                return
            if isinstance(layer, _Conv):  # as patches: (k, L*T, Cout) and (k, L*T, D)
                a = _im2col(a, layer)
                g = g.permute(0, 1, 3, 4, 2).reshape(k, -1, g.shape[2])
            taken.append((layer, g, a))

        losses = self._pass(weights, biases, x, y, None, take, per_example=True)
        with torch.no_grad():
            squared = torch.zeros_like(losses)
            formed: dict[str, torch.Tensor] = {}
            for layer, g, a in taken:
                if isinstance(layer, _Linear):
                    g2 = g.square().sum(2)
                    squared += g2 * a.square().sum(2)
                    if layer.bias is not None:
                        squared += g2
                    continue
                t, d, p = g.shape[1] // n, a.shape[2], g.shape[2]
                ge, ae = g.view(k * n, t, p), a.view(k * n, t, d)
                if _ghost_norm_pays(t, p, d):  # ghost norm: <A A^T, G G^T>
                    sq = torch.bmm(ae, ae.transpose(1, 2)) * torch.bmm(ge, ge.transpose(1, 2))
                    squared += sq.sum((1, 2)).view(k, n)
                else:  # instantiate the per-example gradients (k*L, D, p)
                    per = torch.bmm(ae.transpose(1, 2), ge)
                    squared += per.square().sum((1, 2)).view(k, n)
                    formed[layer.weight] = per
                if layer.bias is not None:
                    squared += ge.sum(1).square().sum(1).view(k, n)
            for _, gw, gb in norms_taken:  # GroupNorm: the per-example gradients themselves
                squared += gw.square().sum(2) + gb.square().sum(2)
            norms = squared.sqrt()
            factor = factor_of(norms)
            sums: Params = {}
            for norm, gw, gb in norms_taken:
                sums[norm.weight] = torch.bmm(factor.unsqueeze(1), gw).squeeze(1)
                sums[norm.bias] = torch.bmm(factor.unsqueeze(1), gb).squeeze(1)
            for layer, g, a in taken:
                if isinstance(layer, _Linear):
                    scaled = g * factor.unsqueeze(2)
                    sums[layer.weight] = torch.bmm(scaled.transpose(1, 2), a)
                    if layer.bias is not None:
                        sums[layer.bias] = scaled.sum(1)
                    continue
                t = g.shape[1] // n
                scaled = (g.view(k, n, t, -1) * factor.view(k, n, 1, 1)).view(k, n * t, -1)
                if layer.weight in formed:
                    per = formed[layer.weight].view(k, n, *formed[layer.weight].shape[1:])
                    m = torch.einsum("kn,kndp->kdp", factor, per)
                else:
                    m = torch.bmm(a.transpose(1, 2), scaled)
                sums[layer.weight] = _conv_weight(m, self._shapes[layer.weight])
                if layer.bias is not None:
                    sums[layer.bias] = scaled.sum(1)
        return sums, losses, norms


class CohortCNNSGD:
    """Plain SGD (no momentum, weight decay or proximal term) for a cohort that starts a round
    from the same weights; the dense layers use :mod:`privfl.engine.batched_mlp`'s deferred
    low-rank updates where they pay, the conv layers are updated in place client by client.

    Args:
        cnn: the kernel of the run's model.
        start: the round's global parameters, unstacked (``shape``, not ``(c, *shape)``).
        clients: ``c``, the cohort's size.
        batch: the largest mini-batch (the rank of one step's dense update).
    """

    def __init__(self, cnn: BatchedCNN, start: Params, clients: int, batch: int) -> None:
        self._cnn, self._start = cnn, start
        self._weights: dict[str, torch.Tensor | _Dense | _Deferred] = {}
        for layer in cnn.weighted_layers:
            w = start[layer.weight]
            if isinstance(layer, _Conv):
                self._weights[layer.weight] = w.expand(clients, *w.shape).clone()
                continue
            capacity = (min(w.shape) // 2 // batch) * batch
            self._weights[layer.weight] = (
                _Deferred(w, clients, capacity)
                if capacity
                else _Dense(w.expand(clients, *w.shape).clone())
            )
        self._biases = {
            layer.bias: start[layer.bias].expand(clients, -1).clone()
            for layer in cnn.weighted_layers
            if layer.bias is not None
        }
        for norm in cnn.norm_layers:  # each client's own scale and shift, updated in place
            self._weights[norm.weight] = start[norm.weight].expand(clients, -1).clone()
            self._biases[norm.bias] = start[norm.bias].expand(clients, -1).clone()
        self._clients = clients

    def step(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, lr: float
    ) -> torch.Tensor:
        """One SGD step of the first ``k = len(y)`` clients (the rest have stopped); returns
        their mean losses ``(k,)``. Arguments as :meth:`BatchedCNN.gradients`."""

        def take(layer: _Conv | _Linear, g: torch.Tensor, a: torch.Tensor) -> None:
            self._weights[layer.weight].descend(g, a, lr)  # type: ignore[union-attr]
            if layer.bias is not None:
                self._biases[layer.bias][: len(g)].sub_(g.sum(1), alpha=lr)

        def take_conv(layer: _Conv, i: int, gw: torch.Tensor, gb: torch.Tensor | None) -> None:
            self._weights[layer.weight][i].sub_(gw, alpha=lr)  # type: ignore[index]
            if gb is not None:
                self._biases[layer.bias][i].sub_(gb, alpha=lr)  # type: ignore[index]

        return self._cnn._pass(self._weights, self._biases, x, y, mask, take, take_conv)

    def deltas(self, names: list[str], out: torch.Tensor | None = None) -> torch.Tensor:
        """Each client's update (final minus start parameters), flattened in ``names``'
        order: ``(c, dim)``, each block written in place into ``out`` (a new tensor if None;
        rows may be strided, each row's values contiguous)."""
        c = self._clients
        sizes = [self._start[n].numel() for n in names]
        flat = cohort_rows(c, sum(sizes), self._start[names[0]]) if out is None else out
        offset = 0
        for n, size in zip(names, sizes, strict=True):
            view = flat[:, offset : offset + size].view(c, *self._start[n].shape)
            offset += size
            w = self._weights.get(n, self._biases.get(n))
            if isinstance(w, _Dense | _Deferred):
                w.delta(self._start[n], out=view)
            else:
                torch.sub(w, self._start[n], out=view)  # type: ignore[arg-type]
        return flat


__all__ = ["BatchedCNN", "CohortCNNSGD"]
