"""Item vectors of a trained model in a FAISS index, for top-k retrieval by inner product.

The model scores item i for a session state h as `h . W_i + b_i`. Appending the bias to
each item vector and a constant 1 to each query turns that into a plain inner product:
`[h, 1] . [W_i, b_i]`, so the exact index (`IndexFlatIP`) returns exactly the model's
top-k. HNSW and IVF trade a little recall for speed on large catalogues; their recall
against exact search is measured when the index is built and stored with it.

Saved as `<model_dir>/index/` with `items.faiss` and `index.json` (kind, knobs, measured
recall and a fingerprint of the weights, so an index of an older model is refused).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.fileio import swap_into_place

INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")
INDEX_DIR = "index"


@dataclass(frozen=True)
class IndexOptions:
    """What to build; the knobs of the approximate kinds."""

    kind: str = "flat"  # one of INDEX_KINDS (checked below)
    hnsw_m: int = 32  # HNSW: graph degree (more = better recall, more memory)
    ef_construction: int = 200  # HNSW: search width while building
    ef_search: int = 128  # HNSW: search width at query time (>= k)
    nlist: int = 0  # IVF: number of clusters (0 = about 4 * sqrt(n_items))
    nprobe: int = 16  # IVF: clusters visited per query

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(f"unknown index kind {self.kind!r}: choose {', '.join(INDEX_KINDS)}.")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1.")
        if self.nlist < 0:
            raise ConfigError("--nlist must be >= 0 (0 picks about 4 * sqrt(n_items)).")


def weights_fingerprint(model_dir: Path) -> str:
    """A short hash of the model's weights file (its GRU4Rec's, for a model built on one),
    to tie an index to its model."""
    path = Path(model_dir) / "weights.pt"
    if not path.exists():
        path = Path(model_dir) / "gru4rec" / "weights.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest[:16]


class ItemIndex:
    """A FAISS inner-product index over item vectors."""

    def __init__(self, index: Any, options: IndexOptions, meta: dict[str, Any]) -> None:
        self.index, self.options, self.meta = index, options, meta

    @classmethod
    def build(cls, vectors: np.ndarray, options: IndexOptions) -> ItemIndex:
        import faiss

        n_items, dim = vectors.shape
        started = time.perf_counter()
        index: Any
        if options.kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif options.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = options.ef_construction
        else:
            nlist = options.nlist or max(1, min(n_items // 39, int(4 * np.sqrt(n_items))))
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
            index.train(vectors)
            options = IndexOptions(**{**asdict(options), "nlist": nlist})
        index.add(vectors)
        meta = {"n_items": n_items, "dim": dim, "build_seconds": time.perf_counter() - started}
        built = cls(index, options, meta)
        built._apply_search_knobs()
        return built

    def _apply_search_knobs(self) -> None:
        if self.options.kind == "hnsw":
            self.index.hnsw.efSearch = self.options.ef_search
        elif self.options.kind == "ivf":
            self.index.nprobe = self.options.nprobe

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item indices), each (S, k); -1 marks a missing result (approximate)."""
        if self.options.kind == "hnsw" and self.index.hnsw.efSearch < k:
            self.index.hnsw.efSearch = k  # HNSW cannot return more than its search width
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def recall_against_exact(self, vectors: np.ndarray, queries: np.ndarray, k: int = 20) -> float:
        """Mean fraction of the exact top-k that this index returns, over `queries`."""
        exact = ItemIndex.build(vectors, IndexOptions(kind="flat"))
        _, truth = exact.search(queries, k)
        _, found = self.search(queries, k)
        hits = [len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist(), strict=True)]
        return float(np.mean(hits)) / k

    def save(self, model_dir: Path, fingerprint: str) -> Path:
        """Write `<model_dir>/index/` atomically (temporary directory, then rename)."""
        import faiss

        target = Path(model_dir) / INDEX_DIR
        staging = target.with_name(f".{INDEX_DIR}.tmp-{uuid.uuid4().hex[:8]}")
        staging.mkdir()
        try:
            faiss.write_index(self.index, str(staging / "items.faiss"))
            meta = {**self.meta, "options": asdict(self.options), "weights": fingerprint}
            (staging / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
            swap_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, model_dir: Path) -> ItemIndex:
        """Read `<model_dir>/index/`; refuse an index built for other weights."""
        import faiss

        folder = Path(model_dir) / INDEX_DIR
        if not (folder / "index.json").exists() or not (folder / "items.faiss").exists():
            raise CheckpointError(
                f"{model_dir} has no index ({folder} is missing or incomplete); build it "
                f"with `gru4rec index {model_dir}`, or recommend with --index none."
            )
        meta = json.loads((folder / "index.json").read_text())
        if meta.get("weights") != weights_fingerprint(Path(model_dir)):
            raise CheckpointError(
                f"{folder} was built for other weights than {model_dir}/weights.pt; rebuild "
                f"it with `gru4rec index {model_dir}`."
            )
        options = IndexOptions(**meta.pop("options"))
        index = cls(faiss.read_index(str(folder / "items.faiss")), options, meta)
        index._apply_search_knobs()
        return index
