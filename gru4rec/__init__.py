"""GRU4Rec: session-based recommendations with recurrent neural networks."""

__version__ = "0.1.0"
