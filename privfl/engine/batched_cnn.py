"""A cohort's local SGD step for convolutional networks, written out as batched matrix products.

The vectorized engine's general path (``vmap(functional_call)``) turns a convolution with
per-client weights into a grouped convolution, which PyTorch's CPU kernels run slower than the
sequential engine's per-client loop. This module trains the FL CNNs
(:class:`privfl.models.CNNConfig` without GroupNorm, and any ``nn.Sequential`` of the same
layers) for ``k`` clients at once with large GEMMs instead:

- activations are kept channels-last, ``(k, B, H, W, C)``;
- a convolution is im2col (an ``as_strided`` view of the zero-padded input, copied once into
  ``(k, B*Ho*Wo, kh*kw*Cin)``) times each client's ``(kh*kw*Cin, Cout)`` weight matrix, one
  ``bmm`` over the cohort whose output is already channels-last; in the first step of plain SGD
  every client has the round's start weights, so the whole cohort's batch is one ``mm``;
- its backward is written by hand: the weight gradient is ``cols^T g`` (``bmm``), the input
  gradient ``g W^T`` followed by col2im as ``kh*kw`` strided additions into the padded
  gradient, all clients at once. (Autograd through the ``as_strided`` view would do the col2im
  as a scatter with index bookkeeping; and DP-SGD needs each layer's input and output gradient
  in hand anyway, as the MLP kernel does.)
- ReLU, tanh, sigmoid are elementwise with saved outputs; max/average pooling run PyTorch's own
  channels-last kernels and their backward ops on the ``(k*B, C, H, W)`` view, so ties go where
  PyTorch sends them; a ReLU directly before a max-pool is applied after it instead (the same
  function and the same gradient, since ReLU is monotone and zero where the max is not positive,
  on a 4x smaller map);
- ``Flatten`` permutes to the NCHW order of the sequential model; the dense head uses
  :mod:`privfl.engine.batched_mlp`'s per-client and deferred low-rank weights.

For DP-SGD, :meth:`BatchedCNN.clipped_gradient_sums` computes per-example gradient norms layer
by layer with the "mixed ghost clipping" rule of Bu et al. 2022 ("Scalable and Efficient
Training of Large Convolutional Neural Networks with Differential Privacy", NeurIPS 2022,
arXiv:2205.10683): for a layer with ``T`` output positions, input width ``D = kh*kw*Cin`` and
output width ``p``, the ghost norm ``<A A^T, G G^T>`` (two ``T x T`` Gram matrices per example)
when ``2 T^2 <= p D``, otherwise the per-example gradient ``A^T G`` (``p D`` numbers) is formed
(the rule as released in the authors' code, ``use_gc = 2*T**2 <= D*p``).

The arithmetic is SGD's, the sums in another order, so equal to float rounding;
``tests/engine/test_batched_cnn.py`` checks it against ``torch.func``, plain SGD, the sequential
engine and Opacus' per-sample gradients. Written by hand because no library offers a
client-batched convolution with per-client weights that runs near GEMM speed on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from privfl.engine.batched_mlp import _Deferred, _Dense

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
class _Linear:
    weight: str
    bias: str | None


@dataclass(frozen=True)
class _Activation:
    module: nn.Module


@dataclass(frozen=True)
class _Pool:
    module: nn.Module


@dataclass(frozen=True)
class _Flatten:
    pass


_Layer = _Conv | _Linear | _Activation | _Pool | _Flatten


def _conv_matrix(w: torch.Tensor) -> torch.Tensor:
    """``(..., Cout, Cin, kh, kw)`` conv weights as ``(..., kh*kw*Cin, Cout)`` matrices (the
    column order of :func:`_im2col`)."""
    lead = w.shape[:-4]
    n = len(lead)
    order = (*range(n), n + 2, n + 3, n + 1, n)
    return w.permute(*order).reshape(*lead, -1, w.shape[n])


def _conv_weight(m: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_conv_matrix`: ``(k, kh*kw*Cin, Cout)`` -> ``(k, Cout, Cin, kh, kw)``."""
    cout, cin, kh, kw = shape
    return m.view(len(m), kh, kw, cin, cout).permute(0, 4, 3, 1, 2).contiguous()


def _im2col(h: torch.Tensor, conv: _Conv) -> tuple[torch.Tensor, int, int]:
    """``(k, B, H, W, C)`` -> the patches ``(k, B*Ho*Wo, kh*kw*C)``, columns ordered
    ``(kh, kw, C)``, and ``(Ho, Wo)``."""
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
    return view.reshape(k, b * ho * wo, kh * kw * c), ho, wo


def _col2im(dcols: torch.Tensor, shape: torch.Size, conv: _Conv, ho: int, wo: int) -> torch.Tensor:
    """The adjoint of :func:`_im2col`: patch gradients ``(k, B*Ho*Wo, kh*kw*C)`` summed back
    into the input's ``(k, B, H, W, C)``, as ``kh*kw`` strided additions."""
    k, b, hh, ww, c = shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel, conv.stride, conv.padding, conv.dilation
    d = dcols.view(k, b, ho, wo, kh, kw, c)
    dp = dcols.new_zeros((k, b, hh + 2 * ph, ww + 2 * pw, c))
    for i in range(kh):
        for j in range(kw):
            r, q = i * dh, j * dw
            dp[:, :, r : r + sh * (ho - 1) + 1 : sh, q : q + sw * (wo - 1) + 1 : sw] += d[
                :, :, :, :, i, j
            ]
    return dp[:, :, ph : ph + hh, pw : pw + ww]


def _ghost_norm_pays(t: int, p: int, d: int) -> bool:
    """Bu et al. 2022's layerwise choice for a layer with ``t`` output positions, ``p`` outputs
    and ``d`` inputs per position: the ghost norm (two ``t x t`` Gram matrices per example)
    when ``2 t^2 <= p d``, else the per-example gradient (``p d`` numbers)."""
    return 2 * t * t <= p * d


class _ConvWeights:
    """A conv layer's per-client weights as ``(c, K, Cout)`` matrices, or one shared
    ``(K, Cout)`` matrix until the first update (then the cohort's batch is one ``mm``)."""

    def __init__(self, matrix: torch.Tensor, clients: int | None = None) -> None:
        self.matrix = matrix
        self.clients = clients  # set while shared: the stack to expand to on the first update

    @property
    def shared(self) -> bool:
        return self.matrix.ndim == 2

    def forward(self, cols: torch.Tensor) -> torch.Tensor:
        k = len(cols)
        if self.shared:
            return (cols.reshape(-1, cols.shape[2]) @ self.matrix).view(k, -1, self.matrix.shape[1])
        return torch.bmm(cols, self.matrix[:k])

    def below(self, g: torch.Tensor) -> torch.Tensor:
        k = len(g)
        if self.shared:
            return (g.reshape(-1, g.shape[2]) @ self.matrix.t()).view(k, -1, self.matrix.shape[0])
        return torch.bmm(g, self.matrix[:k].transpose(1, 2))

    def gradient(self, g: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return torch.bmm(cols.transpose(1, 2), g)

    def descend(self, g: torch.Tensor, cols: torch.Tensor, lr: float) -> None:
        if self.shared:
            assert self.clients is not None
            self.matrix = self.matrix.expand(self.clients, *self.matrix.shape).clone()
        self.matrix[: len(g)].baddbmm_(cols.transpose(1, 2), g, alpha=-lr)


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
                        _pair(m.padding),
                        _pair(m.dilation),
                    )
                )
                shapes[f"{name}.weight"] = m.weight.shape
            elif type(m) is nn.Linear:
                layers.append(_Linear(f"{name}.weight", bias))
            elif type(m) is nn.Flatten:
                layers.append(_Flatten())
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

    def _stacked_weights(self, params: Params) -> dict[str, _ConvWeights | _Dense]:
        return {
            layer.weight: (
                _ConvWeights(_conv_matrix(params[layer.weight]))
                if isinstance(layer, _Conv)
                else _Dense(params[layer.weight])
            )
            for layer in self.weighted_layers
        }

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
        grads: Params = {}
        weights = self._stacked_weights(params)
        biases = {layer.bias: params[layer.bias] for layer in self.weighted_layers if layer.bias}

        def take(layer: _Conv | _Linear, g: torch.Tensor, a: torch.Tensor) -> None:
            gw = weights[layer.weight].gradient(g, a)
            if isinstance(layer, _Conv):
                gw = _conv_weight(gw, self._shapes[layer.weight])
            grads[layer.weight] = gw
            if layer.bias is not None:
                grads[layer.bias] = g.sum(1)

        loss = self._pass(weights, biases, x, y, mask, take)
        return grads, loss

    def _pass(
        self,
        weights: dict[str, _ConvWeights | _Dense | _Deferred],
        biases: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
        take: Callable[[_Conv | _Linear, torch.Tensor, torch.Tensor], None],
        *,
        per_example: bool = False,
    ) -> torch.Tensor:
        """Forward, loss and backward for the first ``k = len(y)`` clients; hands each weighted
        layer's output gradient ``g`` and input ``a`` to ``take`` (after the gradient for the
        layer below was computed from its weights as they were): for a conv, ``g`` is
        ``(k, B*Ho*Wo, Cout)`` and ``a`` the patches ``(k, B*Ho*Wo, kh*kw*Cin)``; for a Linear
        layer ``(k, B, out)`` and ``(k, B, in)``. Returns the losses.

        ``per_example``: differentiate each example's own cross-entropy (``mask`` ignored) and
        return the ``(k, B)`` per-example losses, instead of each client's masked mean."""
        k, b = y.shape
        h = x.permute(0, 1, 3, 4, 2)  # channels-last (k, B, H, W, C)
        saved: list[object] = []
        with torch.no_grad():
            for layer in self._layers:
                if isinstance(layer, _Conv):
                    cols, ho, wo = _im2col(h, layer)
                    saved.append((cols, h.shape, ho, wo))
                    out = weights[layer.weight].forward(cols)
                    if layer.bias is not None:
                        out.add_(biases[layer.bias][:k].unsqueeze(1))
                    h = out.view(k, b, ho, wo, -1)
                elif isinstance(layer, _Linear):
                    saved.append(h)
                    h = weights[layer.weight].forward(h)
                    if layer.bias is not None:
                        h.add_(biases[layer.bias][:k].unsqueeze(1))
                elif isinstance(layer, _Activation):
                    h = layer.module(h)
                    saved.append(h)
                elif isinstance(layer, _Pool):
                    _, _, hh, ww, c = h.shape
                    x4 = h.reshape(k * b, hh, ww, c).permute(0, 3, 1, 2)  # NCHW, channels-last
                    m = layer.module
                    if isinstance(m, nn.MaxPool2d):
                        out4, idx = F.max_pool2d(
                            x4, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True
                        )
                    else:
                        out4, idx = m(x4), None
                    saved.append((x4, idx))
                    h = out4.permute(0, 2, 3, 1).reshape(k, b, *out4.shape[2:], c)
                else:  # Flatten, in the NCHW order of the sequential model
                    saved.append(h.shape)
                    h = h.permute(0, 1, 4, 2, 3).reshape(k, b, -1)
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
            first = next(i for i, la in enumerate(self._layers) if isinstance(la, _Conv | _Linear))
            for i in range(len(self._layers) - 1, first - 1, -1):
                layer, s = self._layers[i], saved[i]
                if isinstance(layer, _Activation):
                    g = g * _DERIVATIVES[type(layer.module)](s)
                elif isinstance(layer, _Flatten):
                    kk, bb, hh, ww, c = s  # type: ignore[misc]
                    g = g.view(kk, bb, c, hh, ww).permute(0, 1, 3, 4, 2)
                elif isinstance(layer, _Pool):
                    x4, idx = s  # type: ignore[misc]
                    ho, wo, c = g.shape[2:]
                    g4 = g.reshape(k * b, ho, wo, c).permute(0, 3, 1, 2)
                    m = layer.module
                    if idx is not None:
                        gi = torch.ops.aten.max_pool2d_with_indices_backward(
                            g4,
                            x4,
                            _pair(m.kernel_size),
                            _pair(m.stride or m.kernel_size),
                            _pair(m.padding),
                            _pair(m.dilation),
                            m.ceil_mode,
                            idx,
                        )
                    else:
                        gi = torch.ops.aten.avg_pool2d_backward(
                            g4,
                            x4,
                            _pair(m.kernel_size),
                            _pair(m.stride or m.kernel_size),
                            _pair(m.padding),
                            m.ceil_mode,
                            m.count_include_pad,
                            m.divisor_override,
                        )
                    g = gi.permute(0, 2, 3, 1).reshape(k, b, *x4.shape[2:], c)
                elif isinstance(layer, _Conv):
                    cols, shape, ho, wo = s  # type: ignore[misc]
                    gm = g.reshape(k, b * ho * wo, -1)
                    w = weights[layer.weight]
                    below = _col2im(w.below(gm), shape, layer, ho, wo) if i > first else None
                    take(layer, gm, cols)
                    g = below
                else:
                    below = weights[layer.weight].below(g) if i > first else None
                    take(layer, g, s)  # type: ignore[arg-type]
                    g = below
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
        biases = {layer.bias: params[layer.bias] for layer in self.weighted_layers if layer.bias}
        taken: list[tuple[_Conv | _Linear, torch.Tensor, torch.Tensor]] = []
        losses = self._pass(
            weights, biases, x, y, None, lambda *t: taken.append(t), per_example=True
        )
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
            norms = squared.sqrt()
            factor = factor_of(norms)
            sums: Params = {}
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
    from the same weights: the conv layers' first step is one shared GEMM, the dense layers
    use :mod:`privfl.engine.batched_mlp`'s deferred low-rank updates where they pay.

    Args:
        cnn: the kernel of the run's model.
        start: the round's global parameters, unstacked (``shape``, not ``(c, *shape)``).
        clients: ``c``, the cohort's size.
        batch: the largest mini-batch (the rank of one step's dense update).
    """

    def __init__(self, cnn: BatchedCNN, start: Params, clients: int, batch: int) -> None:
        self._cnn, self._start = cnn, start
        self._weights: dict[str, _ConvWeights | _Dense | _Deferred] = {}
        for layer in cnn.weighted_layers:
            w = start[layer.weight]
            if isinstance(layer, _Conv):
                self._weights[layer.weight] = _ConvWeights(_conv_matrix(w), clients)
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
        self._clients = clients

    def step(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, lr: float
    ) -> torch.Tensor:
        """One SGD step of the first ``k = len(y)`` clients (the rest have stopped); returns
        their mean losses ``(k,)``. Arguments as :meth:`BatchedCNN.gradients`."""

        def take(layer: _Conv | _Linear, g: torch.Tensor, a: torch.Tensor) -> None:
            self._weights[layer.weight].descend(g, a, lr)
            if layer.bias is not None:
                self._biases[layer.bias][: len(g)].sub_(g.sum(1), alpha=lr)

        return self._cnn._pass(self._weights, self._biases, x, y, mask, take)

    def deltas(self, names: list[str]) -> torch.Tensor:
        """Each client's update (final minus start parameters), flattened in ``names``'
        order: ``(c, dim)``."""
        parts = []
        c = self._clients
        for n in names:
            w = self._weights.get(n)
            if isinstance(w, _ConvWeights):
                m = w.matrix if not w.shared else w.matrix.expand(c, *w.matrix.shape)
                d = _conv_weight(m, self._cnn._shapes[n]) - self._start[n]
            elif w is not None:
                d = w.delta(self._start[n])
            else:
                d = self._biases[n] - self._start[n]
            parts.append(d.reshape(c, -1))
        return torch.cat(parts, dim=1)


__all__ = ["BatchedCNN", "CohortCNNSGD"]
