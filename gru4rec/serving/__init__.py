"""Serving: model directories of every family (checkpoints, saved scorers), FAISS
retrieval, recommendation, the MLflow pyfunc model and tracking.

Imports the scoring and network rooms below it; never the jobs or the commands.
"""
