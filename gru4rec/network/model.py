"""The GRU4Rec network: item input, a stack of GRU layers, and sparse item scoring.

Pure `nn.Module`: no I/O, no optimiser, no batching. One step of every session slot:

    x = input(item)                     # (B, E): shared / separate embedding, or one-hot
    x = dropout(x, p_embed)
    for each layer l:
        h_l = dropout(GRU_l(x, h_l), p_hidden);  x = h_l   # the dropped-out output is carried
    score(item) = x . W[item] + b[item]

GRU (Cho et al.), in one of two forms (`gru_form`):
    r = sigmoid(x W_r + h U_r + b_r),  z = sigmoid(x W_z + h U_z + b_z)
    reset_before (the GRU4Rec paper):   c = tanh(x W_c + (r * h) U_c + b_c)
    reset_after (torch's GRUCell, the authors' PyTorch port):
                                        c = tanh(x W_c + b_c + r * (h U_c + b_hc))
    h' = (1 - z) * h + z * c

Row lookups of item matrices use `F.embedding(..., sparse=True)`, so training produces
row-sparse gradients touching only the target, negative and input items.

Example:
    >>> model = GRU4Rec(n_items=1000, layers=(100,))
    >>> hidden = model.init_hidden(32, "cpu")
    >>> output, hidden = model.forward_step(torch.randint(1000, (32,)), hidden)
    >>> scores = model.score_all(output)  # (32, 1000)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gru4rec.network.config import EmbeddingMode, GRU4RecConfig, GruForm
from gru4rec.network.losses import sampled_loss


def uniform_init_(
    weight: Tensor, fan_in: int, fan_out: int, generator: torch.Generator | None
) -> None:
    """Fill `weight` from U(-s, s) with s = sqrt(6 / (fan_in + fan_out)) (Glorot uniform)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)


class GRULayer(nn.Module):
    """One GRU layer. Gate blocks are stacked in the order (reset, update, candidate).

    weight_input: (input_size, 3H), or None when the input projection is looked up
        (one-hot input: the model holds it as an (n_items, 3H) table).
    weight_hidden_rz: (H, 2H); weight_hidden_c: (H, H); bias: (3H,);
    bias_hidden_c: (H,) the hidden side's candidate bias b_hc (reset_after only, else None).
    """

    def __init__(
        self, input_size: int | None, hidden_size: int, form: GruForm = "reset_before"
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.form = form
        size = hidden_size
        self.weight_input = (
            nn.Parameter(torch.empty(input_size, 3 * size)) if input_size is not None else None
        )
        self.weight_hidden_rz = nn.Parameter(torch.empty(size, 2 * size))
        self.weight_hidden_c = nn.Parameter(torch.empty(size, size))
        self.bias = nn.Parameter(torch.zeros(3 * size))
        self.bias_hidden_c = nn.Parameter(torch.zeros(size)) if form == "reset_after" else None

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform per gate block (fan_out = H), biases 0, as the reference."""
        size = self.hidden_size
        if self.weight_input is not None:
            for block in self.weight_input.split(size, dim=1):
                uniform_init_(block, self.weight_input.shape[0], size, generator)
        for block in self.weight_hidden_rz.split(size, dim=1):
            uniform_init_(block, size, size, generator)
        uniform_init_(self.weight_hidden_c, size, size, generator)
        with torch.no_grad():
            self.bias.zero_()
            if self.bias_hidden_c is not None:
                self.bias_hidden_c.zero_()

    def project_input(self, x: Tensor) -> Tensor:
        """(B, input_size) -> (B, 3H) input part of the gates, bias included."""
        assert self.weight_input is not None
        return torch.addmm(self.bias, x, self.weight_input)

    def forward(self, gates_x: Tensor, hidden: Tensor) -> Tensor:
        """gates_x: (B, 3H) projected input incl. bias; hidden: (B, H) -> new hidden (B, H)."""
        size = self.hidden_size
        gates_rz = torch.sigmoid(gates_x[:, : 2 * size] + hidden @ self.weight_hidden_rz)
        reset, update = gates_rz[:, :size], gates_rz[:, size:]  # (B, H) each
        if self.bias_hidden_c is None:  # reset_before
            hidden_part = (reset * hidden) @ self.weight_hidden_c
        else:  # reset_after
            hidden_part = reset * torch.addmm(self.bias_hidden_c, hidden, self.weight_hidden_c)
        candidate = torch.tanh(gates_x[:, 2 * size :] + hidden_part)
        return hidden + update * (candidate - hidden)  # = (1 - z) h + z c


class GRU4Rec(nn.Module):
    """Session-based recommender: one forward step of every session slot.

    Args:
        n_items: number of items (rows of the item matrix).
        layers: GRU sizes, first to last.
        embedding: "shared" (input embedding = output item matrix, width layers[-1]),
            "separate" (its own (n_items, embedding_size) table) or "none" (one-hot input).
        embedding_size: width of the separate embedding.
        dropout_p_embed: dropout on the input embedding (not applied with "none").
        dropout_p_hidden: dropout on each layer's output; also what is carried on.
        gru_form: "reset_before" (the paper's GRU) or "reset_after" (torch's GRUCell).
        seed: seeds the initialisation (None: torch's global generator).

    Parameters: item_weight (n_items, H_last) and item_bias (n_items, 1), the latter kept
    2-D so that it is looked up sparsely like the item rows; input_embedding (separate);
    input_weight (n_items, 3 * layers[0]) for one-hot input; `gru` layers.
    """

    # Whether the fused training step (`gru4rec.network.fast_step`) computes this network's
    # update; a family with another objective trains with the autograd step.
    fused_step: ClassVar[bool] = True

    def __init__(
        self,
        n_items: int,
        layers: Sequence[int] = (100,),
        *,
        embedding: EmbeddingMode = "shared",
        embedding_size: int = 0,
        dropout_p_embed: float = 0.0,
        dropout_p_hidden: float = 0.0,
        gru_form: GruForm = "reset_before",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.layers = tuple(layers)
        self.embedding = embedding
        self.dropout_p_embed = dropout_p_embed
        self.dropout_p_hidden = dropout_p_hidden
        last = self.layers[-1]
        self.item_weight = nn.Parameter(torch.empty(n_items, last))
        self.item_bias = nn.Parameter(torch.zeros(n_items, 1))
        self.input_embedding: nn.Parameter | None = None
        self.input_weight: nn.Parameter | None = None
        if embedding == "shared":
            first_input: int | None = last
        elif embedding == "separate":
            self.input_embedding = nn.Parameter(torch.empty(n_items, embedding_size))
            first_input = embedding_size
        elif embedding == "none":
            self.input_weight = nn.Parameter(torch.empty(n_items, 3 * self.layers[0]))
            first_input = None
        else:
            raise ValueError(f"unknown embedding mode {embedding!r}")
        inputs = [first_input, *self.layers[:-1]]
        gru_layers = [GRULayer(i, h, gru_form) for i, h in zip(inputs, self.layers, strict=True)]
        self.gru = nn.ModuleList(gru_layers)  # registers the parameters
        self._gru_layers = tuple(gru_layers)  # the same modules, typed, for the step loop
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.reset_parameters(generator)

    @property
    def gru_layers(self) -> tuple[GRULayer, ...]:
        """The GRU layers, first to last (the modules registered in `gru`)."""
        return self._gru_layers

    @classmethod
    def from_config(cls, n_items: int, config: GRU4RecConfig) -> GRU4Rec:
        """The plain network a config describes, initialised from `config.seed`
        (`gru4rec.network.families.build_network` picks the family)."""
        return cls(n_items, config.layers, **cls.config_options(config))

    @staticmethod
    def config_options(config: GRU4RecConfig) -> dict[str, Any]:
        """The keyword options of the constructor that a config sets."""
        return {
            "embedding": config.embedding,
            "embedding_size": config.embedding_size,
            "dropout_p_embed": config.dropout_p_embed,
            "dropout_p_hidden": config.dropout_p_hidden,
            "gru_form": config.gru_form,
            "seed": config.seed,
        }

    def step_loss(
        self,
        output: Tensor,
        hidden: list[Tensor],
        scores: Tensor,
        targets: Tensor,
        logq_shift: Tensor | None,
        config: GRU4RecConfig,
    ) -> Tensor:
        """The 0-dim mean training loss of one step: scores (B, C) of the sampled columns,
        row i's target in column i; logq_shift (C,) or None. Plain GRU4Rec: the
        configured sampled loss; a subclass with another objective overrides this."""
        return sampled_loss(
            scores,
            loss=config.loss,
            logq_shift=logq_shift,
            bpreg=config.bpreg,
            elu_param=config.elu_param,
        )

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The reference initialisation: Glorot uniform per block, biases 0."""
        uniform_init_(self.item_weight, self.n_items, self.layers[-1], generator)
        with torch.no_grad():
            self.item_bias.zero_()
        if self.input_embedding is not None:
            uniform_init_(
                self.input_embedding, self.n_items, self.input_embedding.shape[1], generator
            )
        if self.input_weight is not None:
            size = self.layers[0]
            for block in self.input_weight.split(size, dim=1):
                uniform_init_(block, self.n_items, size, generator)
        for layer in self._gru_layers:
            layer.reset_parameters(generator)

    def init_hidden(self, batch_size: int, device: torch.device | str) -> list[Tensor]:
        """One (batch_size, H_l) zero tensor per layer."""
        dtype = self.item_weight.dtype
        return [torch.zeros(batch_size, size, device=device, dtype=dtype) for size in self.layers]

    def forward_step(
        self,
        inputs: Tensor,
        hidden: list[Tensor],
        dropout_masks: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Advance every slot by one item.

        inputs: (B,) int64 item indices; hidden: per layer (B, H_l).
        dropout_masks: optional explicit masks, [embedding, layer 0, layer 1, ...], each
            (>= B, width) with values 0 or 1 / (1 - p), or None for no dropout at that
            site (see `gru4rec.network.sampling.DropoutMasks`); training uses these so that every
            training path draws the same masks. Without them, training mode draws with
            `F.dropout`.
        Returns (output (B, H_last), new hidden per layer); in training mode both carry
        the hidden dropout, as the reference.
        """
        n_rows = inputs.shape[0]

        def dropout(x: Tensor, site: int, p: float) -> Tensor:
            if dropout_masks is None:
                return F.dropout(x, p, self.training)
            mask = dropout_masks[site]
            return x if mask is None else x * mask[:n_rows]

        first = self._gru_layers[0]
        if self.embedding == "none":
            assert self.input_weight is not None
            gates_x = F.embedding(inputs, self.input_weight, sparse=True) + first.bias  # (B, 3H)
        else:
            table = self.item_weight if self.embedding == "shared" else self.input_embedding
            assert table is not None
            x = F.embedding(inputs, table, sparse=True)  # (B, E)
            x = dropout(x, 0, self.dropout_p_embed)
            gates_x = first.project_input(x)
        new_hidden = []
        for index, layer in enumerate(self._gru_layers):
            if index > 0:
                gates_x = layer.project_input(x)
            x = dropout(layer(gates_x, hidden[index]), index + 1, self.dropout_p_hidden)
            new_hidden.append(x)
        return x, new_hidden

    def dropout_sites(self) -> list[tuple[int, float]]:
        """(width, p) of every dropout site in `forward_step` order: embedding, then layers.

        The embedding site has p 0 with one-hot input (no embedding to drop out).
        """
        embed_width = self.input_embedding.shape[1] if self.input_embedding is not None else 0
        if self.embedding == "shared":
            embed_width = self.layers[-1]
        embed_p = 0.0 if self.embedding == "none" else self.dropout_p_embed
        return [(max(embed_width, 1), embed_p)] + [
            (size, self.dropout_p_hidden) for size in self.layers
        ]

    def forward(
        self,
        inputs: Tensor,
        hidden: list[Tensor],
        dropout_masks: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Same as `forward_step` (so that hooks and `model(...)` work)."""
        return self.forward_step(inputs, hidden, dropout_masks)

    def score_items(self, output: Tensor, items: Tensor) -> Tensor:
        """(B, H_last) x (C,) item indices -> (B, C) scores = output @ W[items].T + b[items].

        Only the C rows are touched (sparse gradients): how training scores its targets
        and sampled negatives without computing all items.
        """
        weight = F.embedding(items, self.item_weight, sparse=True)  # (C, H)
        bias = F.embedding(items, self.item_bias, sparse=True)  # (C, 1)
        return torch.addmm(bias.T, output, weight.T)

    def score_all(self, output: Tensor) -> Tensor:
        """(B, H_last) -> (B, n_items) scores of every item (evaluation, recommendation)."""
        return torch.addmm(self.item_bias.T, output, self.item_weight.T)
