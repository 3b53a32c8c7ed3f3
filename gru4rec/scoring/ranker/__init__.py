"""The learned ranker: LightGBM's LambdaMART orders each session's candidate items.

For each session prefix, the candidate sets of `gru4rec.scoring.candidates` (GRU4Rec's top
items, through the FAISS index where one is given; the session's items; V-SKNN and
item-kNN top items; the popular ones) are described by the features in `FEATURES`, and a
LightGBM model trained with the `lambdarank` objective scores them. Items outside the
candidates follow, in GRU4Rec's order.

    GRU4Rec      score, gap to the row's best candidate, log-probability among the
                 candidates, rank among the candidates
    session      occurrences of the item, their share of the session, events since its
                 last occurrence, whether it is the last item, the decayed share (S of the
                 hybrid), the session's length and distinct items
    neighbours   V-SKNN, SKNN and item-kNN votes (each row's votes divided by their sum)
                 and their ranks among the candidates
    popularity   log training support, overall and over the last `RECENT_SHARE` of the
                 training sessions (items on news sites live a day)
    hybrid       the mixture score of `gru4rec.scoring.hybrid` with the weights chosen on
                 validation (GRU4Rec's part normalised over the candidates)

Protocol (`fit_ranker`): the components are fitted on `train_tr`; the ranker learns from
the `valid` split's prefixes in folds of whole sessions: each fold is scored by a model
trained on the other folds, which stopped early on a held-out tenth of their sessions; the
out-of-fold ranks give the validation metrics that `select` compares. The final model is
trained on all of `valid` for the folds' mean number of rounds, and is applied unchanged
once the components are refitted on `train`.

The LightGBM model is saved in its text format (no pickles).

The modules, each importing only those above it:

    features     the components the features read, the candidates and their features
    scorer       `RankerScorer`: the candidates ordered by a trained model
    table        every prediction of a split as candidate rows, and their metrics
    fitting      cross-fitted LambdaMART, and loading a saved model
"""

from gru4rec.scoring.ranker.features import (
    FEATURES,
    CandidateRows,
    FeatureBuilder,
    RankerParts,
    popularity,
)
from gru4rec.scoring.ranker.fitting import RankerFit, fit_ranker, load_booster
from gru4rec.scoring.ranker.scorer import RankerScorer
from gru4rec.scoring.ranker.table import RankerTable, ranker_table, table_metrics

__all__ = [
    "FEATURES",
    "CandidateRows",
    "FeatureBuilder",
    "RankerFit",
    "RankerParts",
    "RankerScorer",
    "RankerTable",
    "fit_ranker",
    "load_booster",
    "popularity",
    "ranker_table",
    "table_metrics",
]
