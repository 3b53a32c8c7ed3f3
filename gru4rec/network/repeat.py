"""Repeat-aware GRU4Rec: a learned gate mixes GRU4Rec's distribution over all items with
one over the session's own recent items, trained in the same session-parallel loop.

    p(i) = (1 - g) * p_explore(i) + g * p_repeat(i)
    g = sigmoid(h . w_gate + b_gate)
    p_repeat(i) = sum over the window positions j holding i of softmax_j(h . W[x_j] + b_back(j))

h is the last GRU layer's output, W the output item matrix (the one GRU4Rec scores with),
x_j the session's last `repeat_window` items and b_back a learned bias per step back (the
most recent item, one before, ...). This is RepeatNet's repeat/explore mixture (Ren et
al., AAAI 2019) in GRU4Rec's form. In training, p_explore of the target is the sampled
softmax with logQ of plain GRU4Rec (in-batch and shared sampled negatives), so the loss is

    -log((1 - g) * softmax(scores - logQ)[target] + g * p_repeat(target))

The window rides along with the GRU's hidden state (one more (B, window) int64 tensor of
item index + 1, 0 = empty, most recent last), so batching, resets and evaluation need
nothing new. Trained by autograd (the fused fast step covers plain GRU4Rec only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.model import GRU4Rec


class RepeatGRU4Rec(GRU4Rec):
    """GRU4Rec with a repeat head (see the module docstring). Extra parameters:
    gate_weight (H,), gate_bias (1,), recency_bias (repeat_window,) (index 0 = the most
    recent item)."""

    fused_step: ClassVar[bool] = False  # the mixture loss trains with the autograd step

    def __init__(
        self, n_items: int, layers: Sequence[int] = (100,), *, repeat_window: int, **options: Any
    ) -> None:
        if repeat_window < 1:
            raise ValueError(f"repeat_window must be >= 1, got {repeat_window}")
        self.repeat_window = repeat_window
        super().__init__(n_items, layers, **options)
        self.gate_weight = nn.Parameter(torch.zeros(self.layers[-1]))
        self.gate_bias = nn.Parameter(torch.zeros(1))  # g = 0.5 at the start: no prior
        self.recency_bias = nn.Parameter(torch.zeros(repeat_window))

    @classmethod
    def from_config(cls, n_items: int, config: GRU4RecConfig) -> GRU4Rec:
        """The repeat-aware network a config describes (config.repeat_window > 0)."""
        return cls(
            n_items,
            config.layers,
            repeat_window=config.repeat_window,
            **cls.config_options(config),
        )

    def init_hidden(self, batch_size: int, device: torch.device | str) -> list[Tensor]:
        """The GRU layers' zero states, then an empty window (batch_size, repeat_window)."""
        window = torch.zeros(batch_size, self.repeat_window, dtype=torch.int64, device=device)
        return [*super().init_hidden(batch_size, device), window]

    def forward_step(
        self,
        inputs: Tensor,
        hidden: list[Tensor],
        dropout_masks: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """GRU4Rec's step, and `inputs` pushed into the window (the oldest item drops out)."""
        output, layers = super().forward_step(inputs, hidden[:-1], dropout_masks)
        window = torch.cat((hidden[-1][:, 1:], (inputs + 1).unsqueeze(1)), dim=1)
        return output, [*layers, window]

    def repeat_head(self, output: Tensor, window: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log g (B,), log(1 - g) (B,), attention (B, window)) of each row; a row with an
        empty window attends to nothing (all zeros)."""
        gate_logit = output @ self.gate_weight + self.gate_bias  # (B,)
        filled = window != 0
        vectors = F.embedding((window - 1).clamp(min=0), self.item_weight, sparse=True)  # (B, W, H)
        logits = (vectors * output.unsqueeze(1)).sum(dim=2) + self.recency_bias.flip(0)  # (B, W)
        attention = torch.softmax(logits.masked_fill(~filled, -math.inf), dim=1)
        attention = torch.where(filled, attention, 0.0)  # NaN rows of an empty window -> 0
        return F.logsigmoid(gate_logit), F.logsigmoid(-gate_logit), attention

    def repeat_probability(self, attention: Tensor, window: Tensor, items: Tensor) -> Tensor:
        """(B,) p_repeat of `items` (B,): the attention on the positions holding each."""
        return (attention * (window == (items + 1).unsqueeze(1))).sum(dim=1)

    def mixture_loss(
        self,
        output: Tensor,
        window: Tensor,
        scores: Tensor,
        targets: Tensor,
        logq_shift: Tensor | None = None,
    ) -> Tensor:
        """Mean over rows of -log p(target) (module docstring); scores (B, C) hold the
        target of row i in column i, logq_shift (C,) the logQ correction."""
        logits = scores if logq_shift is None else scores - logq_shift
        log_explore = F.log_softmax(logits, dim=1).diagonal()  # (B,)
        log_gate, log_not_gate, attention = self.repeat_head(output, window)
        repeat = self.repeat_probability(attention, window, targets)
        # log 0 = -inf where the target is not in the window; where() keeps its gradient 0.
        log_repeat = torch.where(repeat > 0, torch.log(repeat.clamp(min=1e-30)), -math.inf)
        return -torch.logaddexp(log_not_gate + log_explore, log_gate + log_repeat).mean()

    def step_loss(
        self,
        output: Tensor,
        hidden: list[Tensor],
        scores: Tensor,
        targets: Tensor,
        logq_shift: Tensor | None,
        config: GRU4RecConfig,
    ) -> Tensor:
        """The mixture's loss (`mixture_loss`) of one training step; hidden[-1] is the window."""
        return self.mixture_loss(output, hidden[-1], scores, targets, logq_shift)

    def score_mixture(self, output: Tensor, window: Tensor) -> Tensor:
        """(B, n_items) log p(i) over every item (evaluation, recommendation)."""
        log_gate, log_not_gate, attention = self.repeat_head(output, window)
        log_explore = torch.log_softmax(self.score_all(output), dim=1)  # (B, N)
        repeat = torch.zeros_like(log_explore).scatter_add_(
            1, (window - 1).clamp(min=0), attention
        )  # empty positions add 0 to item 0
        return torch.logaddexp(
            log_not_gate.unsqueeze(1) + log_explore,
            log_gate.unsqueeze(1) + torch.log(repeat),
        )


__all__ = ["RepeatGRU4Rec"]
