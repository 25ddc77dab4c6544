"""MobileViT (Mehta & Rastegari, 2021, https://arxiv.org/abs/2110.02178) in Paddle.

Weight-compatible with PaddleClas 2.6.0: the sub-layer attribute names reproduce PaddleClas's ``state_dict``
layout exactly, so the official ``MobileViT_*_pretrained.pdparams`` load unchanged, and the forward pass
computes the same function. The patch unfold/fold keeps the batch dimension symbolic (``-1``/``0`` in
``reshape``), so the model traces under ``paddle.jit.to_static`` with a dynamic batch.
"""

from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class ConvBnAct(nn.Layer):
    """Bias-free Conv2D -> BatchNorm -> SiLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ):
        super().__init__()
        self.conv = nn.Conv2D(
            in_ch, out_ch, kernel_size, stride=stride, padding=padding, groups=groups, bias_attr=False
        )
        self.norm = nn.BatchNorm2D(out_ch)
        self.act = nn.Silu()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.norm(self.conv(x)))


class InvertedResidual(nn.Layer):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, linear 1x1 project; residual when shapes allow.

    The layers sit in one ``Sequential`` named ``conv`` because the checkpoint keys are ``conv.<index>.*``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expansion: float = 4):
        super().__init__()
        hidden = int(round(in_ch * expansion))
        layers: list[nn.Layer] = [ConvBnAct(in_ch, hidden, kernel_size=1)] if expansion != 1 else []
        layers += [
            ConvBnAct(hidden, hidden, stride=stride, padding=1, groups=hidden),
            nn.Conv2D(hidden, out_ch, 1, bias_attr=False),
            nn.BatchNorm2D(out_ch),  # no activation: the projection is linear
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class Attention(nn.Layer):
    """Multi-head self-attention over a ``[batch, tokens, dim]`` sequence."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # [B, N, 3*dim] -> [3, B, heads, N, head_dim]; 0 copies the (dynamic) batch and token sizes.
        qkv = self.qkv(x).reshape([0, 0, 3, self.num_heads, -1]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(paddle.matmul(q * self.scale, k, transpose_y=True), axis=-1)
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).flatten(2)  # [B, N, dim]
        return self.proj_dropout(self.proj(out))


class Mlp(nn.Layer):
    """Two-layer feed-forward network with SiLU."""

    def __init__(self, dim: int, mlp_ratio: float, dropout: float = 0.1):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.Silu()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class EncoderLayer(nn.Layer):
    """Pre-norm transformer layer (LayerNorm at Paddle's default epsilon, 1e-5, as in PaddleClas)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Layer):
    """A stack of encoder layers and a final LayerNorm (epsilon 1e-6, unlike the per-layer norms)."""

    def __init__(self, dim: int, num_heads: int, depth: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.layers = nn.LayerList([EncoderLayer(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, epsilon=1e-6)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class MobileViTBlock(nn.Layer):
    """Local 3x3 conv features, global attention across 2x2 patches, then fusion with the block input.

    Unfolding turns the map into one token sequence per pixel position inside a patch: each sequence holds
    that position from every patch, so attention mixes information across the whole image.
    """

    def __init__(self, dim: int, hidden_dim: int, depth: int, num_heads: int = 4, patch_size: int = 2):
        super().__init__()
        self.patch = patch_size
        self.conv1 = ConvBnAct(dim, dim, padding=1)
        self.conv2 = nn.Conv2D(dim, hidden_dim, 1, bias_attr=False)
        self.transformer = Transformer(hidden_dim, num_heads, depth)
        self.conv3 = ConvBnAct(hidden_dim, dim, kernel_size=1)
        self.conv4 = ConvBnAct(2 * dim, dim, padding=1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shortcut = x
        x = self.conv2(self.conv1(x))

        p = self.patch
        _, c, h, w = x.shape  # channels and spatial sizes are static; only the batch is dynamic
        new_h, new_w = math.ceil(h / p) * p, math.ceil(w / p) * p
        resized = (new_h, new_w) != (h, w)
        if resized:  # never at 256x256 input; kept so other sizes behave as in PaddleClas
            x = F.interpolate(x, size=[new_h, new_w], mode="bilinear")
        nh, nw = new_h // p, new_w // p

        # Unfold: [B, C, nh*p, nw*p] -> [B*p*p, nh*nw, C], one sequence per in-patch position.
        x = x.reshape([-1, c, nh, p, nw, p]).transpose([0, 3, 5, 2, 4, 1]).reshape([-1, nh * nw, c])
        x = self.transformer(x)
        # Fold: exact inverse of the unfold.
        x = x.reshape([-1, p, p, nh, nw, c]).transpose([0, 5, 3, 1, 4, 2]).reshape([-1, c, new_h, new_w])

        if resized:
            x = F.interpolate(x, size=[h, w])  # PaddleClas resizes back with the default (nearest) mode
        x = self.conv3(x)
        return self.conv4(paddle.concat([shortcut, x], axis=1))


class MobileViT(nn.Layer):
    """MobileViT classifier; ``dims`` has nine stage widths, ``hidden_dims`` the three transformer widths."""

    def __init__(
        self,
        dims: list[int],
        hidden_dims: list[int],
        mv2_expansion: float,
        class_num: int = 1000,
        in_channels: int = 3,
    ):
        super().__init__()
        e = mv2_expansion
        # Attribute names and registration order define the checkpoint's state_dict layout.
        self.conv3x3 = ConvBnAct(in_channels, dims[0], stride=2, padding=1)
        self.mv2_block_1 = InvertedResidual(dims[0], dims[1], expansion=e)
        self.mv2_block_2 = InvertedResidual(dims[1], dims[2], stride=2, expansion=e)
        self.mv2_block_3 = InvertedResidual(dims[2], dims[3], expansion=e)
        self.mv2_block_4 = InvertedResidual(dims[3], dims[4], expansion=e)
        self.mv2_block_5 = InvertedResidual(dims[4], dims[5], stride=2, expansion=e)
        self.mvit_block_1 = MobileViTBlock(dims[5], hidden_dims[0], depth=2)
        self.mv2_block_6 = InvertedResidual(dims[5], dims[6], stride=2, expansion=e)
        self.mvit_block_2 = MobileViTBlock(dims[6], hidden_dims[1], depth=4)
        self.mv2_block_7 = InvertedResidual(dims[6], dims[7], stride=2, expansion=e)
        self.mvit_block_3 = MobileViTBlock(dims[7], hidden_dims[2], depth=3)
        self.conv1x1 = ConvBnAct(dims[7], dims[8], kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.dropout = nn.Dropout(0.1)
        self.linear = nn.Linear(dims[8], class_num)

    def residual_branch_norms(self) -> list[str]:
        """State-dict prefixes of the last BatchNorm of every residual MobileNetV2 branch
        (``export.calibrated_weights``)."""
        return [f"{name}.conv.{len(block.conv) - 1}" for name, block in self.named_sublayers()
                if isinstance(block, InvertedResidual) and block.use_residual]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.conv3x3(x)
        for stage in (
            self.mv2_block_1,
            self.mv2_block_2,
            self.mv2_block_3,
            self.mv2_block_4,
            self.mv2_block_5,
            self.mvit_block_1,
            self.mv2_block_6,
            self.mvit_block_2,
            self.mv2_block_7,
            self.mvit_block_3,
            self.conv1x1,
        ):
            x = stage(x)
        x = self.pool(x).flatten(1)  # flatten, not reshape(x.shape[:2]): keeps the batch symbolic
        return self.linear(self.dropout(x))


# Per variant: nine stage widths, three transformer widths, MobileNetV2 expansion ratio.
_CONFIGS: dict[str, tuple[list[int], list[int], float]] = {
    "XXS": ([16, 16, 24, 24, 24, 48, 64, 80, 320], [64, 80, 96], 2),
    "XS": ([16, 32, 48, 48, 48, 64, 80, 96, 384], [96, 120, 144], 4),
    "S": ([16, 32, 64, 64, 64, 96, 128, 160, 640], [144, 192, 240], 4),
}


def _build(variant: str, class_num: int) -> MobileViT:
    dims, hidden_dims, expansion = _CONFIGS[variant]
    return MobileViT(dims, hidden_dims, mv2_expansion=expansion, class_num=class_num)


def MobileViT_XXS(class_num: int = 1000) -> MobileViT:
    return _build("XXS", class_num)


def MobileViT_XS(class_num: int = 1000) -> MobileViT:
    return _build("XS", class_num)


def MobileViT_S(class_num: int = 1000) -> MobileViT:
    return _build("S", class_num)
