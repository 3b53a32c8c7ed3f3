"""The nightly job's configuration: a TOML or YAML file (docs/nightly.example.toml) read
into a frozen `NightlyConfig` and checked whole before any work starts."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gru4rec.errors import ConfigError
from gru4rec.jobs.selection import parse_candidates
from gru4rec.network.config import apply_overrides, get_preset, override_text
from gru4rec.options import CUTOFFS, Compute, Evaluation
from gru4rec.pipelines.options import PrepareOptions
from gru4rec.pipelines.sources import SourceSpec, resolve_spec
from gru4rec.scoring.evaluate import TIE_MODES
from gru4rec.serving.retrieval import IndexOptions

PREPARE_KEYS = {f.name for f in dataclasses.fields(PrepareOptions)}
# test_days is in both: the SourceSpec one is only the format default, so prepare takes it.
SOURCE_KEYS = {f.name for f in dataclasses.fields(SourceSpec)} - PREPARE_KEYS
WARM_KEYS = (
    "warm_start",
    "warm_epochs",
    "warm_window_days",
    "keep_missing_items",
    "warm_scratch_every",
)


@dataclass(frozen=True)
class NightlyConfig:
    """The nightly job, as read from a TOML or YAML file (see docs/nightly.example.toml)."""

    inputs: tuple[Path, ...]  # the click log (or a train + test pair)
    work_dir: Path  # runs/<stamp>/ per run, `current` -> the published run
    experiment: str = "gru4rec-nightly"
    registered_model: str = "gru4rec"
    alias: str = "champion"
    metric: str = "mrr@20"  # higher is better; the alias moves only on a strict improvement
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    log_format: str = "gru4rec-tsv"
    source: Mapping[str, Any] = field(default_factory=dict)  # SourceSpec overrides
    prepare: Mapping[str, Any] = field(default_factory=dict)  # PrepareOptions
    preset: str = "rsc15"
    overrides: Mapping[str, str] = field(default_factory=dict)  # as `--set key=value`
    # Model selection (as `gru4rec select`): candidate families fitted on train_tr and scored
    # on valid, the best refitted on train; empty = train GRU4Rec with `preset` only.
    candidates: tuple[str, ...] = ()
    # Warm start (`gru4rec.network.warm_start`): train from the champion's weights for warm_epochs,
    # on the last warm_window_days of train (None: all of it); from scratch when there is
    # no champion yet or its architecture is not the configured one.
    warm_start: bool = False
    warm_epochs: int = 3
    warm_window_days: float | None = None
    keep_missing_items: bool = False
    # One night in warm_scratch_every trains from scratch (a warm start trails a scratch
    # run a little, README "Warm start"); 0: never.
    warm_scratch_every: int = 7
    device: str = "auto"
    cutoffs: tuple[int, ...] = CUTOFFS
    ties: str = "conservative"
    index: str = "flat"
    k: int = 20
    exclude_seen: bool = False
    engine: str = "local"  # recommend stage: local, or ray (a local Ray instance or RAY_ADDRESS)
    keep_runs: int = 3  # run directories kept (the published one always is)

    @property
    def compute(self) -> Compute:
        return Compute(device=self.device)

    @property
    def evaluation(self) -> Evaluation:
        """How candidates are chosen and every model scored."""
        return Evaluation(cutoffs=self.cutoffs, ties=self.ties, metric=self.metric)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> NightlyConfig:
        """Read a .toml or .yaml/.yml file; relative paths are relative to its folder."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such nightly configuration file.")
        try:
            if path.suffix == ".toml":
                raw = tomllib.loads(path.read_text())
            elif path.suffix in (".yaml", ".yml"):
                import yaml

                raw = yaml.safe_load(path.read_text()) or {}
            else:
                raise ConfigError(f"{path}: the configuration must be .toml, .yaml or .yml.")
        except (tomllib.TOMLDecodeError, ValueError) as error:
            raise ConfigError(f"{path}: cannot be parsed ({error}).") from None
        return cls.from_dict(raw, base=path.parent, origin=str(path))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: Path, origin: str = "config") -> NightlyConfig:
        raw = dict(raw)
        data = dict(raw.pop("data", {}))
        model = dict(raw.pop("model", {}))
        evaluation = dict(raw.pop("evaluation", {}))
        serving = dict(raw.pop("serving", {}))
        if "inputs" not in data:
            raise ConfigError(f"{origin}: [data] needs `inputs`, the click-log file(s).")
        values: dict[str, Any] = {
            "inputs": tuple(_resolve(base, p) for p in _as_list(data.pop("inputs"))),
            "work_dir": _resolve(base, raw.pop("work_dir", "nightly")),
            "log_format": data.pop("format", "gru4rec-tsv"),
            "source": {k: data.pop(k) for k in list(data) if k in SOURCE_KEYS},
            "prepare": {k: data.pop(k) for k in list(data) if k in PREPARE_KEYS},
            "preset": model.pop("preset", "rsc15"),
            "candidates": tuple(_as_list(model.pop("candidates", []))),
            "device": model.pop("device", "auto"),
            **{k: model.pop(k) for k in WARM_KEYS if k in model},
            "overrides": {k: override_text(v) for k, v in dict(model.pop("set", {})).items()},
        }
        if "cutoffs" in evaluation:
            values["cutoffs"] = tuple(int(c) for c in _as_list(evaluation.pop("cutoffs")))
        values.update({k: evaluation.pop(k) for k in ("ties", "metric") if k in evaluation})
        values.update(
            {
                k: serving.pop(k)
                for k in ("index", "k", "exclude_seen", "engine", "keep_runs")
                if k in serving
            }
        )
        known = {f.name for f in dataclasses.fields(cls)}
        for section, rest in (
            ("", raw),
            ("data", data),
            ("model", model),
            ("evaluation", evaluation),
            ("serving", serving),
        ):
            for key in rest:
                if section or key not in known:
                    where = f"[{section}] " if section else ""
                    raise ConfigError(
                        f"{origin}: unknown key {where}{key!r}; see docs/nightly.example.toml."
                    )
        values.update(raw)
        config = cls(**values)
        config.validate(origin)
        return config

    def validate(self, origin: str) -> None:
        """Check everything that can be checked before any work starts."""
        resolve_spec(self.log_format, **self.source)
        PrepareOptions(**self.prepare)
        apply_overrides(get_preset(self.preset), self.overrides)
        if self.candidates:
            parse_candidates(",".join(self.candidates), self.preset)
            options = PrepareOptions(**self.prepare)
            if not (options.valid_fraction or options.valid_days or options.valid_days is None):
                raise ConfigError(
                    f"{origin}: [model] candidates are chosen on a validation split, but "
                    "[data] valid_days is 0; set valid_days (or valid_fraction) above 0."
                )
        if self.warm_start and self.candidates:
            raise ConfigError(
                f"{origin}: [model] warm_start trains GRU4Rec from the champion; it does not "
                "combine with candidates (model selection trains every family afresh)."
            )
        if not isinstance(self.warm_epochs, int) or self.warm_epochs < 1:
            raise ConfigError(f"{origin}: [model] warm_epochs must be an integer >= 1.")
        if not isinstance(self.warm_scratch_every, int) or self.warm_scratch_every < 0:
            raise ConfigError(f"{origin}: [model] warm_scratch_every must be an integer >= 0.")
        if self.warm_window_days is not None and not self.warm_window_days > 0:
            raise ConfigError(f"{origin}: [model] warm_window_days must be > 0 (days).")
        IndexOptions(kind=self.index)
        if self.ties not in TIE_MODES:
            raise ConfigError(f"{origin}: ties must be one of {', '.join(TIE_MODES)}.")
        name, _, cutoff = self.metric.partition("@")
        if (
            name not in ("recall", "mrr", "ndcg")
            or not cutoff.isdigit()
            or int(cutoff) not in self.cutoffs
        ):
            raise ConfigError(
                f"{origin}: metric {self.metric!r} must be recall@k, mrr@k or ndcg@k with k in "
                f"the cutoffs {list(self.cutoffs)}."
            )
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"{origin}: [serving] engine must be local or ray.")
        if self.k < 1 or self.keep_runs < 1:
            raise ConfigError(f"{origin}: [serving] k and keep_runs must be >= 1.")


def _resolve(base: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


__all__ = ["NightlyConfig"]
