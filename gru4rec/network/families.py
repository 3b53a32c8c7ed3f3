"""The network families by name: which network a configuration describes.

A new network family registers its class in `NETWORKS` (and its scorer in
`gru4rec.scoring.neural.SCORERS`); the base class never imports its subclasses.
"""

from __future__ import annotations

from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.model import GRU4Rec
from gru4rec.network.repeat import RepeatGRU4Rec

NETWORKS: dict[str, type[GRU4Rec]] = {"gru4rec": GRU4Rec, "repeat": RepeatGRU4Rec}


def network_family(config: GRU4RecConfig) -> str:
    """The family a configuration trains: `repeat` when it looks back on a window of the
    session's items (repeat_window > 0), else plain `gru4rec`."""
    return "repeat" if config.repeat_window > 0 else "gru4rec"


def build_network(n_items: int, config: GRU4RecConfig) -> GRU4Rec:
    """The network `config` describes, initialised from `config.seed`."""
    return NETWORKS[network_family(config)].from_config(n_items, config)


__all__ = ["NETWORKS", "build_network", "network_family"]
