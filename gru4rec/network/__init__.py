"""The network and its training: the configuration, the GRU4Rec model (and its
repeat-aware variant), losses, the optimiser, sampling, session-parallel batching, the
training loops with their compiled kernels, and warm starts.

Pure PyTorch and NumPy: reading prepared data (`data`) is the only Polars here, and
nothing in this room imports MLflow, FAISS, Typer or the rooms above it.
"""
