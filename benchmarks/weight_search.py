"""The hybrid's weight search: its stages fed from one kept pass against a pass per stage.

    python -m benchmarks.weight_search --model MODEL_DIR --data PREPARED_DIR
        [--split valid] [--fit-split train_tr] [--knn vsknn] [--threads N] [--json OUT.json]

`gru4rec.scoring.hybrid.choose_weights` scores about 230 weightings in three stages; each
weighting's ranks come from the touched (row, item) pairs of every prediction. The pairs
come from GRU4Rec's scores and the kNN votes, the costly part. Run twice in the same
process on the same model: kept (the default: one pass, the pairs kept in memory for the
three stages) and recomputed (a pass for each stage, as when the pairs exceed
MAX_KEPT_PAIRS). Prints both times and their ratio, and checks that both
choose the same weights with the same metrics. MODEL_DIR: a GRU4Rec model trained on
`--fit-split` (`gru4rec train DATA --split train_tr`, or `select`'s).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a GRU4Rec model directory")
    parser.add_argument("--data", type=Path, required=True, help="prepared data")
    parser.add_argument("--split", default="valid", help="the split the weights are chosen on")
    parser.add_argument("--fit-split", default="train_tr", help="the kNN part's training split")
    parser.add_argument("--knn", default="vsknn", help="the kNN part (a baseline name)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from gru4rec.network.data import load_items, load_split
    from gru4rec.scoring import hybrid
    from gru4rec.scoring.baselines import fit_baseline
    from gru4rec.serving.recommend import Recommender

    if args.threads:
        torch.set_num_threads(args.threads)
    items = load_items(args.data)
    fit_on, _ = load_split(args.data, args.fit_split, item_ids=items["item_id"])
    split, _ = load_split(args.data, args.split, item_ids=items["item_id"])
    gru = Recommender.from_path(args.model, device="cpu", index="none").scorer
    knn = fit_baseline(args.knn, fit_on, items.height)
    figures: dict[str, Any] = {"threads": torch.get_num_threads()}
    searches = {}
    for way, limit in (("kept", hybrid.MAX_KEPT_PAIRS), ("recomputed", 0)):
        mixture = hybrid.HybridScorer(gru, hybrid.MixtureWeights(), knn)  # type: ignore[arg-type]
        started = time.perf_counter()
        searches[way] = hybrid.choose_weights(mixture, split, max_kept_pairs=limit)
        figures[f"{way}_seconds"] = time.perf_counter() - started
    kept, recomputed = searches["kept"], searches["recomputed"]
    same = kept.best == recomputed.best and kept.trials == recomputed.trials
    figures.update(
        weightings=len(kept.trials),
        best=kept.best.to_dict(),
        best_mrr20=dict(kept.trials)[kept.best]["mrr@20"],
        same_choice=same,
        ratio=figures["recomputed_seconds"] / figures["kept_seconds"],
    )
    print(
        f"{args.split}: {split.n_sessions:,} sessions, {len(kept.trials)} weightings; kept "
        f"{figures['kept_seconds']:.1f} s, recomputed per stage "
        f"{figures['recomputed_seconds']:.1f} s: {figures['ratio']:.2f}x; best {kept.best} "
        f"(MRR@20 {figures['best_mrr20']:.4f}); same choice and metrics: {same}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
