"""Every variant, in every position it allows, learns a task that only attention can solve: predict the token one
position before, from embeddings that carry a token's own identity and position only. Without attention (its
output zeroed) nothing can be learned beyond chance, so a broken attention fails here."""
import argparse

import pytest
import torch
from torch import nn

from fairseq_eatt.attention import (
    DECODER_CROSS,
    DECODER_SELF,
    ENCODER_SELF,
    available_attentions,
    build_attention,
    get_attention_class,
)

VOCAB, LENGTH, DIM, HEADS, STEPS, BATCH = 10, 8, 32, 4, 250, 32
CHANCE = 1.0 / VOCAB
LEARNED = 0.6  # measured: 0.99-1.0 for every variant that learns its alignment
# the Fixed Random Synthesizer's alignment is a frozen random matrix: it can mix the neighbours in, not select one
# (measured 0.30-0.43), but without attention output it would stay at chance
FIXED_ALIGNMENT = {"synth_random_fixed": CHANCE + 0.1}
CASES = [(name, position) for name in available_attentions()
         for position in get_attention_class(name).capabilities.allowed_positions()]


class PreviousToken(nn.Module):
    """x_i = token_i + position_i; y_i = x_i + attention(x)_i (cross-attention: queries are positions only);
    logits of the token at i - 1."""

    def __init__(self, attention: nn.Module, position: str, zero_attention: bool = False):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, DIM), nn.Embedding(LENGTH, DIM)
        self.attention, self.position, self.zero = attention, position, zero_attention
        self.norm, self.out = nn.LayerNorm(DIM), nn.Linear(DIM, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens (B, L) -> logits (B, L, V)
        pos = self.positions(torch.arange(LENGTH)).unsqueeze(1)  # (L, 1, D)
        source = self.tokens(tokens).transpose(0, 1) + pos  # (L, B, D)
        query = pos.expand_as(source) if self.position == DECODER_CROSS else source
        mask = torch.triu(torch.full((LENGTH, LENGTH), float("-inf")), 1) if self.position == DECODER_SELF else None
        attended, _ = self.attention(query, source, source, attn_mask=mask, need_weights=False)
        hidden = query + (attended * 0 if self.zero else attended)
        return self.out(self.norm(hidden)).transpose(0, 1)


def accuracy_after_training(name: str, position: str, zero_attention: bool = False) -> float:
    torch.manual_seed(0)
    attention = build_attention(name, DIM, HEADS, position, args=argparse.Namespace(attention_max_length=LENGTH))
    model = PreviousToken(attention, position, zero_attention)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(STEPS):
        tokens = torch.randint(VOCAB, (BATCH, LENGTH))
        logits = model(tokens)[:, 1:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, :-1].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        tokens = torch.randint(VOCAB, (512, LENGTH))
        return float((model(tokens)[:, 1:].argmax(-1) == tokens[:, :-1]).float().mean())


@pytest.mark.parametrize("position", [ENCODER_SELF, DECODER_SELF, DECODER_CROSS])
def test_without_attention_the_task_stays_at_chance(position):
    assert accuracy_after_training("vanilla", position, zero_attention=True) < CHANCE + 0.05


@pytest.mark.parametrize("name,position", CASES)
def test_every_variant_learns_what_only_attention_can_do(name, position):
    assert accuracy_after_training(name, position) > FIXED_ALIGNMENT.get(name, LEARNED), (name, position)
