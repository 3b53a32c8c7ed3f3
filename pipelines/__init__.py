"""The Polars ETL: raw click logs in, prepared Parquet + manifest out (docs/data-contract.md).

Imports polars, pyarrow and numpy, and of gru4rec only its leaf helpers `gru4rec.errors`
and `gru4rec.fileio`: never the model, training, evaluation, tracking or serving modules
(tests/test_layers.py checks it).
"""
