"""Scoring: the `SessionScorer` contract every model family serves through, GRU4Rec's and
the repeat-aware model's scorers, the baselines, the hybrids and full-ranking evaluation.

Imports the network room below it; never serving, the jobs or the commands.
"""
