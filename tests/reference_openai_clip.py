"""A plain PyTorch ViT CLIP in OpenAI's parameter layout, used as a test oracle.

It follows the published architecture (pre-norm residual blocks,
`nn.MultiheadAttention` with packed input projections, QuickGELU, class token,
`x @ proj` projections, causal text mask, features read at the end token), so
its `state_dict()` has the names and shapes of OpenAI's released checkpoints.
"""

import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    def __init__(self, width, heads, causal_length=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)
        mask = None
        if causal_length:
            mask = torch.full((causal_length, causal_length), float("-inf")).triu(1)
        self.mask = mask

    def forward(self, x):  # x: [length, batch, width]
        h = self.ln_1(x)
        mask = None if self.mask is None else self.mask[: len(x), : len(x)]
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, causal_length=None):
        super().__init__()
        self.resblocks = nn.Sequential(
            *[ResidualBlock(width, heads, causal_length) for _ in range(layers)]
        )

    def forward(self, x):
        return self.resblocks(x)


class VisualTransformer(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, output_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.positional_embedding = nn.Parameter(
            torch.randn((resolution // patch) ** 2 + 1, width)
        )
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, output_dim))

    def forward(self, images):  # images: [batch, 3, H, W], normalised
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


class OpenAICLIP(nn.Module):
    def __init__(
        self, embed_dim, resolution, patch, vision_width, vision_layers,
        context_length, vocab_size, text_width, text_layers,
        vision_heads=None, text_heads=None,
    ):
        super().__init__()
        self.visual = VisualTransformer(
            resolution, patch, vision_width, vision_layers,
            vision_heads or vision_width // 64, embed_dim,
        )
        self.transformer = Transformer(
            text_width, text_layers, text_heads or text_width // 64, context_length
        )
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, text_width))
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.randn(text_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_image(self, images):
        return self.visual(images)

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding[: text.shape[1]]
        x = self.ln_final(self.transformer(x.transpose(0, 1)).transpose(0, 1))
        return x[torch.arange(len(x)), text.argmax(dim=-1)] @ self.text_projection

    def forward(self, images, text):
        image = self.encode_image(images)
        text = self.encode_text(text)
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return self.logit_scale.exp() * image @ text.t()
