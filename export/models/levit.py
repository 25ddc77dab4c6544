"""LeViT image classifiers (Graham et al., 2021, arXiv 2104.01136) in ``paddle.nn``.

Weight-compatible with PaddleClas 2.6.0 (``ppcls/arch/backbone/model_zoo/levit.py``, distillation off):
the ``state_dict`` keys, order, shapes and dtypes are PaddleClas's, so the official
``*_pretrained.pdparams`` load unchanged, and the forward pass computes the same function.

Unlike PaddleClas, each attention block gathers its positional bias with one vectorised gather instead of
one gather per query row, so an exported graph holds a single constant-foldable Gather per block. Reshapes
keep the batch dimension symbolic, so ``paddle.jit.to_static`` with a ``None`` batch stays dynamic.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["LeViT", "LeViT_128S", "LeViT_128", "LeViT_192", "LeViT_256", "LeViT_384"]

# name: (embedding width per stage, key dim, heads per stage, blocks per stage, drop-path rate)
_SPECS: dict[str, tuple[tuple[int, int, int], int, tuple[int, int, int], tuple[int, int, int], float]] = {
    "LeViT_128S": ((128, 256, 384), 16, (4, 6, 8), (2, 3, 4), 0.0),
    "LeViT_128": ((128, 256, 384), 16, (4, 8, 12), (4, 4, 4), 0.0),
    "LeViT_192": ((192, 288, 384), 32, (3, 5, 6), (4, 4, 4), 0.0),
    "LeViT_256": ((256, 384, 512), 32, (4, 6, 8), (4, 4, 4), 0.0),
    "LeViT_384": ((384, 512, 768), 32, (6, 9, 12), (4, 4, 4), 0.1),
}
_ATTN_RATIO = 2  # value width / key width in the attention blocks
_MLP_RATIO = 2  # hidden width / embedding width in every MLP
_DOWN_ATTN_RATIO = 4  # value width / key width in the downsampling attention
_DOWN_STRIDE = 2


class ConvBN(nn.Layer):
    """Bias-free convolution followed by batch norm (sub-layers ``c`` and ``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 2, padding: int = 1):
        super().__init__()
        self.c = nn.Conv2D(in_ch, out_ch, kernel, stride, padding, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_ch)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.bn(self.c(x))


class LinearBN(nn.Layer):
    """Bias-free linear layer on tokens ``[B, N, C]`` followed by batch norm over the channels."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.c = nn.Linear(in_dim, out_dim, bias_attr=False)
        self.bn = nn.BatchNorm1D(out_dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.c(x)
        tokens, channels = x.shape[1], x.shape[2]  # static; the batch dimension may be symbolic
        # BatchNorm1D normalises axis 1, so fold batch and tokens together and unfold afterwards.
        return self.bn(x.flatten(0, 1)).reshape([-1, tokens, channels])


class BNLinear(nn.Layer):
    """Batch norm followed by a linear layer with bias: the classifier head (sub-layers ``bn`` and ``l``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1D(in_dim)
        self.l = nn.Linear(in_dim, out_dim)  # the name is fixed by the checkpoints

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.l(self.bn(x))


def mlp(dim: int, ratio: int) -> nn.Sequential:
    """The feed-forward branch; Sequential indices 0 and 2 are part of the checkpoint keys."""
    return nn.Sequential(LinearBN(dim, dim * ratio), nn.Hardswish(), LinearBN(dim * ratio, dim))


class Residual(nn.Layer):
    """``x + m(x)``, dropping the branch per sample with probability ``drop`` while training."""

    def __init__(self, m: nn.Layer, drop: float = 0.0):
        super().__init__()
        self.m = m
        self.drop = drop

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.m(x)
        if self.training and self.drop > 0:
            keep = 1.0 - self.drop
            mask = (paddle.rand([x.shape[0], 1, 1]) < keep).astype(x.dtype) / keep
            y = y * mask
        return x + y


def bias_index(resolution: int, q_resolution: int, stride: int) -> np.ndarray:
    """Bias-table index of every (query, key) pair, shape ``[q_resolution**2, resolution**2]``.

    Queries sit on a grid of ``q_resolution**2`` points spaced ``stride`` apart, keys on the full
    ``resolution**2`` grid. Pairs with the same absolute (row, column) offset share a bias. PaddleClas numbers
    the offsets in the order it first meets them; its first query is at (0, 0) and meets every offset there,
    so offset (dy, dx) is entry ``dy * resolution + dx``. Checkpoints store this buffer too, so it must agree.
    """
    q = np.arange(q_resolution) * stride
    k = np.arange(resolution)
    dy = np.abs(q[:, None, None, None] - k[None, None, :, None])
    dx = np.abs(q[None, :, None, None] - k[None, None, None, :])
    return (dy * resolution + dx).reshape(q_resolution**2, resolution**2).astype(np.int64)


class _BiasedAttention(nn.Layer):
    """Shared part of the attention blocks: the learned positional bias and the attention itself."""

    def _init_bias(self, num_heads: int, resolution: int, q_resolution: int, stride: int) -> None:
        idxs = bias_index(resolution, q_resolution, stride)
        self.attention_biases = self.create_parameter(
            [num_heads, resolution**2], default_initializer=nn.initializer.Constant(0.0)
        )
        self.register_buffer("attention_bias_idxs", paddle.to_tensor(idxs), persistable=True)
        self._bias_shape = [num_heads, *idxs.shape]

    def attention_bias(self) -> paddle.Tensor:
        """The bias ``[heads, queries, keys]``: one gather from the table, a constant once exported."""
        flat = paddle.gather(self.attention_biases, self.attention_bias_idxs.flatten(), axis=1)
        return flat.reshape(self._bias_shape)

    def attend(self, q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor) -> paddle.Tensor:
        """Softmax attention on ``[B, heads, tokens, dim]`` inputs; returns ``[B, queries, heads * dim]``."""
        attn = paddle.matmul(q, k, transpose_y=True) * self.scale + self.attention_bias()
        out = paddle.matmul(F.softmax(attn, axis=-1), v).transpose([0, 2, 1, 3])
        return out.reshape([0, 0, -1])


class Attention(_BiasedAttention):
    """Multi-head self-attention with a positional bias, on ``resolution**2`` tokens."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int, resolution: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = attn_ratio * key_dim
        self.scale = key_dim**-0.5
        self._init_bias(num_heads, resolution, resolution, stride=1)
        self.qkv = LinearBN(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Sequential(nn.Hardswish(), LinearBN(num_heads * self.value_dim, dim))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # Channels are laid out head-major: each head holds its own q, k and v slices.
        qkv = self.qkv(x).reshape([0, 0, self.num_heads, -1])
        q, k, v = paddle.split(qkv, [self.key_dim, self.key_dim, self.value_dim], axis=3)
        q, k, v = (t.transpose([0, 2, 1, 3]) for t in (q, k, v))
        return self.proj(self.attend(q, k, v))


class Subsample(nn.Layer):
    """Keeps every ``stride``-th token in both directions of a ``resolution x resolution`` token grid."""

    def __init__(self, stride: int, resolution: int):
        super().__init__()
        self.stride = stride
        self.resolution = resolution

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        channels = x.shape[2]
        x = x.reshape([0, self.resolution, self.resolution, channels])
        # Slicing only axes 1 and 2 leaves the symbolic batch dimension untouched.
        r, s = self.resolution, self.stride
        x = paddle.strided_slice(x, axes=[1, 2], starts=[0, 0], ends=[r, r], strides=[s, s])
        # A literal token count keeps the shape static for the layers that follow.
        return x.reshape([0, ((r - 1) // s + 1) ** 2, channels])


class AttentionSubsample(_BiasedAttention):
    """Attention whose queries come from a subsampled grid: halves the resolution and changes the width."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        key_dim: int,
        num_heads: int,
        attn_ratio: int,
        stride: int,
        resolution: int,
    ):
        super().__init__()
        q_resolution = (resolution - 1) // stride + 1
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = attn_ratio * key_dim
        self.scale = key_dim**-0.5
        self._init_bias(num_heads, resolution, q_resolution, stride)
        self.kv = LinearBN(in_dim, num_heads * (key_dim + self.value_dim))
        self.q = nn.Sequential(Subsample(stride, resolution), LinearBN(in_dim, num_heads * key_dim))
        self.proj = nn.Sequential(nn.Hardswish(), LinearBN(num_heads * self.value_dim, out_dim))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        kv = self.kv(x).reshape([0, 0, self.num_heads, -1])
        k, v = paddle.split(kv, [self.key_dim, self.value_dim], axis=3)
        q = self.q(x).reshape([0, 0, self.num_heads, self.key_dim])
        q, k, v = (t.transpose([0, 2, 1, 3]) for t in (q, k, v))
        return self.proj(self.attend(q, k, v))


class LeViT(nn.Layer):
    """LeViT: a convolutional stem, three attention stages joined by downsampling attention, a linear head.

    Block numbering in ``blocks`` follows PaddleClas (attention and MLP residuals alternate; each
    downsampling attention is followed by its own MLP residual), since the checkpoint keys depend on it.
    """

    def __init__(
        self,
        embed_dims: tuple[int, int, int],
        key_dim: int,
        num_heads: tuple[int, int, int],
        depths: tuple[int, int, int],
        drop_path: float = 0.0,
        class_num: int = 1000,
        img_size: int = 224,
    ):
        super().__init__()
        e0 = embed_dims[0]
        self.patch_embed = nn.Sequential(
            ConvBN(3, e0 // 8), nn.Hardswish(),
            ConvBN(e0 // 8, e0 // 4), nn.Hardswish(),
            ConvBN(e0 // 4, e0 // 2), nn.Hardswish(),
            ConvBN(e0 // 2, e0),
        )  # fmt: skip
        resolution = img_size // 16  # the stem has four stride-2 convolutions

        blocks: list[nn.Layer] = []
        for stage, (dim, heads, depth) in enumerate(zip(embed_dims, num_heads, depths, strict=True)):
            for _ in range(depth):
                blocks.append(Residual(Attention(dim, key_dim, heads, _ATTN_RATIO, resolution), drop_path))
                blocks.append(Residual(mlp(dim, _MLP_RATIO), drop_path))
            if stage + 1 < len(embed_dims):
                out_dim = embed_dims[stage + 1]
                blocks.append(
                    AttentionSubsample(
                        dim, out_dim, key_dim, dim // key_dim, _DOWN_ATTN_RATIO, _DOWN_STRIDE, resolution
                    )
                )
                blocks.append(Residual(mlp(out_dim, _MLP_RATIO), drop_path))
                resolution = (resolution - 1) // _DOWN_STRIDE + 1
        self.blocks = nn.Sequential(*blocks)
        self.head = BNLinear(embed_dims[-1], class_num)

    def residual_branch_norms(self) -> list[str]:
        """State-dict prefixes of the last BatchNorm of every residual branch (``export.calibrated_weights``)."""
        return [f"blocks.{i}.{last_batchnorm(block)}" for i, block in enumerate(self.blocks)
                if isinstance(block, Residual)]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.patch_embed(x).flatten(2).transpose([0, 2, 1])  # [B, C, H, W] -> tokens [B, H*W, C]
        x = self.blocks(x).mean(axis=1)
        return self.head(x)


def last_batchnorm(layer: nn.Layer) -> str:
    return [name for name, sub in layer.named_sublayers() if isinstance(sub, nn.BatchNorm1D | nn.BatchNorm2D)][-1]


def _build(name: str, class_num: int) -> LeViT:
    dims, key_dim, heads, depths, drop_path = _SPECS[name]
    return LeViT(dims, key_dim, heads, depths, drop_path=drop_path, class_num=class_num)


def LeViT_128S(class_num: int = 1000) -> LeViT:
    return _build("LeViT_128S", class_num)


def LeViT_128(class_num: int = 1000) -> LeViT:
    return _build("LeViT_128", class_num)


def LeViT_192(class_num: int = 1000) -> LeViT:
    return _build("LeViT_192", class_num)


def LeViT_256(class_num: int = 1000) -> LeViT:
    return _build("LeViT_256", class_num)


def LeViT_384(class_num: int = 1000) -> LeViT:
    return _build("LeViT_384", class_num)
