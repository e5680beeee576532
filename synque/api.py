"""Browse and compare studies from Python: one table per task, correlations of any subset.

A *study* is everything a task's proxy and train runs say: each proxy value of each candidate
set beside the set's task performance. The command line answers one question per run
(`correlate`, `select`); a notebook wants to ask many: this seed only, these groups, LENS
judged by one LLM against another. Why a module and not a stage: nothing here logs, so asking
costs no run.

Every number comes from the functions `correlate` calls (`synque.tracking.read` to read the
runs, `synque.analysis.summarize` to correlate), so for the same inputs `Study.correlations()`
equals the correlate run's `summary.csv`.

    from synque.api import load_study
    study = load_study("digits")               # MLFLOW_TRACKING_URI, else <repo>/mlruns/mlflow.db
    study.table                                # proxy, value, performance, dataset, group, seed...
    study.correlations(proxies=["fid", "kid"], seeds=[1, 2])   # rows of correlate's summary.csv
    study.filter(embedder="pixels").compare(study.filter(embedder="efficientnet-lite0"))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from synque import SynqueError
from synque.analysis import COEFFICIENTS, join_performance, select_performance, summarize
from synque.config import project_root
from synque.tracking.read import logged_proxies, performance_values
from synque.tracking.store import experiment_name, resolve_tracking_uri, sqlite_path

__all__ = ["Study", "compare", "default_tracking_uri", "load_study"]

#: Columns of `Study.table`, in order (the rest of `Study.proxies` stays reachable there).
TABLE_COLUMNS = (
    "proxy",
    "value",
    "performance",
    "dataset",
    "group",
    "seed",
    "embedder",
    "judge",
    "variant",
    "metric",
    "higher_is_better",
    "stage",
    "run_id",
)

Names = str | int | Iterable[str | int] | None


def default_tracking_uri() -> str:
    """Where `python -m synque.run` logs: `MLFLOW_TRACKING_URI`, else the configured store.

    Read from `configs/tracking/default.yaml` itself, so the API follows the config if the
    default store ever moves.
    """
    configs = project_root() / "configs"
    try:
        cfg = OmegaConf.create(
            {
                "paths": OmegaConf.load(configs / "paths" / "default.yaml"),
                "tracking": OmegaConf.load(configs / "tracking" / "default.yaml"),
            }
        )
    except FileNotFoundError:
        raise SynqueError(
            f"study: no synque configs under {configs}; pass tracking_uri or set "
            "MLFLOW_TRACKING_URI"
        ) from None
    return resolve_tracking_uri(cfg)


def _uri(tracking_uri: str | Path | None) -> str:
    """An explicit URI (or a path to a `.db` file or its folder) wins over the environment."""
    if tracking_uri is None:
        return default_tracking_uri()
    text = str(tracking_uri)
    if text.startswith("file:"):
        raise SynqueError(f"study: `{text}` is a file store, which synque does not use")
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    return f"sqlite:///{path / 'mlflow.db' if path.is_dir() else path}"


def _shown(uri: str) -> str:
    """The URI without a `user:password@` part, for messages."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", uri)


def _client(uri: str, task: str) -> MlflowClient:
    """A client on an existing store that holds the task's experiment, or a one-line error.

    A sqlite file that does not exist is an error rather than a new empty store: reading
    should never create one.
    """
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise SynqueError(
            f"study: no MLflow store at {db} (run a stage first, or pass tracking_uri)"
        )
    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(experiment_name(task))
        if exp is not None:
            return client
        names = [e.name for e in client.search_experiments(max_results=1000)]
    except Exception as exc:  # unreachable server, refused credentials, bad URI
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SynqueError(
            f"study: cannot read MLflow at {_shown(uri)}: {_shown(first)[:200]}"
        ) from None
    tasks = sorted(n.removeprefix("synque-") for n in names if n.startswith("synque-"))
    have = f"tasks there: {', '.join(tasks)}" if tasks else "it holds no synque runs"
    raise SynqueError(f"study: no task '{task}' in {_shown(uri)} ({have})")


def _strings(values: Names) -> list[str] | None:
    """None, one name or many, as tag strings (seeds are logged as strings)."""
    if values is None:
        return None
    if isinstance(values, str | int):
        return [str(values)]
    return [str(v) for v in values]


def load_study(
    task: str,
    tracking_uri: str | Path | None = None,
    *,
    stages: Sequence[str] = ("repr", "lens"),
    performance: str = "auto",
    seeds: Iterable[str | int] | None = None,
) -> Study:
    """Read a task's proxy values and performance back from MLflow, as `correlate` does.

    `tracking_uri`: a sqlite or http(s) URI, or a path to an `mlflow.db` (or its folder);
    default `MLFLOW_TRACKING_URI`, else the project's store. `stages`: the stages whose runs
    carry proxies (correlate's `stage.proxy_stages`). `performance`: recorded, trained or
    auto (recorded when logged). `seeds`: only these real-sample seeds (`stage.seeds`).

        study = load_study("sentiment", "sqlite:///mlruns/mlflow.db", seeds=[42, 43])
        study.table.filter(proxy="lens")
        study.correlations()
        study.correlations(proxies=["lens", "mauve"], bootstrap=0)
        study.filter(seeds=[42]).compare(study.filter(seeds=[43]), labels=("s42", "s43"))
    """
    uri = _uri(tracking_uri)
    client = _client(uri, task)
    seed_list = _strings(seeds)
    stage_cfg = OmegaConf.create({"proxy_stages": list(stages), "seeds": seed_list})
    proxies = logged_proxies(client, task, stage_cfg, "study")
    perf_all = performance_values(client, task)
    if perf_all.is_empty():
        raise SynqueError(
            f"study: no train runs logged for task {task} in {_shown(uri)} "
            f"(run {task}_recorded or {task}_train first)"
        )
    try:
        perf, source = select_performance(perf_all, performance)
    except SynqueError as exc:  # its messages speak for correlate
        raise SynqueError(f"study: {str(exc).removeprefix('correlate: ')}") from None
    return Study(task, uri, proxies, perf, source)


@dataclass(frozen=True)
class Study:
    """Proxy values and performance of one task, as read back from MLflow.

    `proxies` is `synque.tracking.read.logged_proxies`'s table (one row per proxy, group,
    dataset, seed), `performance` is `select_performance`'s (group, dataset, performance),
    `source` which performance that is (recorded or trained). `table` joins the two.

        study = load_study("sentiment")
        print(study)                                  # task, proxies, groups, seeds, sets
        study.table.group_by("proxy").len()
        study.correlations(groups=["all"], bootstrap=200)
        study.filter(proxies=["pad", "lens"]).table
    """

    task: str
    tracking_uri: str
    proxies: pl.DataFrame
    performance: pl.DataFrame
    source: str

    def __repr__(self) -> str:
        return (
            f"Study({self.task!r}, {len(self.proxy_names)} proxies, "
            f"{self.proxies['group'].n_unique()} groups, {self.proxies['seed'].n_unique()} seeds, "
            f"{self.performance.height} sets with {self.source} performance)"
        )

    @property
    def proxy_names(self) -> list[str]:
        """Proxy names as reports show them (`pad`, `pad@pixels`, `lens@<judge>`)."""
        return sorted(self.proxies["proxy"].unique().to_list())

    @property
    def table(self) -> pl.DataFrame:
        """One row per (proxy, group, seed, dataset) that has a performance, sorted."""
        return join_performance(self.proxies, self.performance).select(TABLE_COLUMNS)

    def filter(
        self,
        *,
        proxies: Names = None,
        seeds: Names = None,
        groups: Names = None,
        datasets: Names = None,
        embedder: Names = None,
        judge: Names = None,
    ) -> Study:
        """The same study cut to a subset; each argument is one name or several.

        `proxies` matches a proxy's report name or its metric (`pad` keeps `pad@pixels` and
        `pad@efficientnet-lite0`). An empty result is an error, not an empty table.

            s = load_study("digits")
            s.filter(embedder="pixels").proxy_names
            s.filter(proxies="fid", seeds=[1, 2])
            s.filter(groups=["all"], datasets=["font_clean", "pca_gaussian"])
            s.filter(embedder="pixels").compare(s.filter(embedder="efficientnet-lite0"))
        """
        frame = self.proxies
        wanted = {
            "seed": _strings(seeds),
            "group": _strings(groups),
            "dataset": _strings(datasets),
            "embedder": _strings(embedder),
            "judge": _strings(judge),
        }
        for column, names in wanted.items():
            if names is not None:
                frame = frame.filter(pl.col(column).is_in(names))
        if (names := _strings(proxies)) is not None:
            frame = frame.filter(pl.col("proxy").is_in(names) | pl.col("metric").is_in(names))
        if frame.is_empty():
            asked = ", ".join(f"{k}={v}" for k, v in {**wanted, "proxies": names}.items() if v)
            raise SynqueError(f"study: no proxy values of task {self.task} for {asked}")
        return Study(self.task, self.tracking_uri, frame, self.performance, self.source)

    def correlation_tables(
        self,
        proxies: Names = None,
        seeds: Names = None,
        groups: Names = None,
        *,
        bootstrap: int = 1000,
        confidence: float = 0.95,
        top_k: Sequence[int] = (1, 3),
        bootstrap_seed: int = 42,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(per proxy/group/seed: correlate's `correlations.csv`, per proxy: `summary.csv`).

        Defaults are correlate's (`configs/stage/correlate.yaml`); `bootstrap_seed` seeds the
        bootstrap's resampling, as correlate's `stage.bootstrap_seed` (42 unless set).

            detail, summary = load_study("text2sql").correlation_tables(bootstrap=0)
            detail.filter(proxy="lens").sort("spearman")
            summary.select("proxy", "spearman", "top1", "top1_oracle")
            detail.group_by("group").agg(pl.col("spearman").mean())
            summary.write_csv("summary.csv")
        """
        part = self.filter(proxies=proxies, seeds=seeds, groups=groups)
        return summarize(
            part.proxies, part.performance, list(top_k), bootstrap, confidence, bootstrap_seed
        )

    def correlations(
        self,
        proxies: Names = None,
        seeds: Names = None,
        groups: Names = None,
        *,
        bootstrap: int = 1000,
        confidence: float = 0.95,
        top_k: Sequence[int] = (1, 3),
        bootstrap_seed: int = 42,
    ) -> pl.DataFrame:
        """Headline Spearman/Kendall/Pearson per proxy with bootstrap CIs and top-k.

        Mean over seeds within a group, then over groups; sorted by Spearman, best first.
        Equal to correlate's `summary.csv` for the same runs and settings.

            study = load_study("text2sql")
            study.correlations()                                   # = summary.csv
            study.correlations(seeds=42, bootstrap=0)              # one seed, no CIs
            study.correlations(proxies=["lens"], confidence=0.9)
            study.correlations(groups=["app_store"], top_k=[1, 5])  # one database
        """
        return self.correlation_tables(
            proxies,
            seeds,
            groups,
            bootstrap=bootstrap,
            confidence=confidence,
            top_k=top_k,
            bootstrap_seed=bootstrap_seed,
        )[1]

    def compare(
        self,
        other: Study,
        *,
        labels: tuple[str, str] = ("a", "b"),
        proxies: Names = None,
        seeds: Names = None,
        groups: Names = None,
        paired: bool = False,
    ) -> pl.DataFrame:
        """This study beside `other`, per proxy: see `compare`."""
        return compare(
            self, other, labels=labels, proxies=proxies, seeds=seeds, groups=groups, paired=paired
        )


def _base_names(study: Study) -> dict[str, str]:
    """Report name -> the name without its `@embedder` and `@judge` part.

    Why: two embedders in one study read back as `pad@minilm` and `pad@pixels`; compared
    side by side, both are `pad`. The variant stays (`pad@xgboost` is another proxy).
    """
    names: dict[str, str] = {}
    pairs = study.proxies.select("proxy", "embedder", "judge").unique()
    for proxy, embedder, judge in pairs.iter_rows():
        base = proxy.removesuffix(f"@{judge}") if judge else proxy
        names[proxy] = base.removesuffix(f"@{embedder}") if embedder else base
    return names


def _headline(study: Study, label: str) -> pl.DataFrame:
    """Headline coefficients keyed by base name, columns `<coef>_<label>`."""
    names = _base_names(study)
    clashes = sorted(p for p in names if list(names.values()).count(names[p]) > 1)
    if clashes:
        raise SynqueError(
            f"compare: in {label}, {' and '.join(clashes)} are the same proxy on different "
            "embedders or judges; filter it to one first (Study.filter(embedder=...))"
        )
    summary = study.correlations(bootstrap=0)  # the headline does not depend on the bootstrap
    return summary.select(
        pl.col("proxy").replace_strict(names).alias("proxy"),
        *(pl.col(c).alias(f"{c}_{label}") for c in COEFFICIENTS),
    )


def _only(study: Study, keys: pl.DataFrame) -> Study:
    """`study` cut to the (group, seed, dataset) rows of `keys`."""
    rows = study.proxies.join(keys, on=keys.columns, how="semi")
    return Study(study.task, study.tracking_uri, rows, study.performance, study.source)


def compare(
    a: Study,
    b: Study,
    *,
    labels: tuple[str, str] = ("a", "b"),
    proxies: Names = None,
    seeds: Names = None,
    groups: Names = None,
    paired: bool = False,
) -> pl.DataFrame:
    """Two studies side by side: per proxy each one's headline coefficients and b - a.

    Columns: `proxy`, then for each of spearman, kendall, pearson `<coef>_<label a>`,
    `<coef>_<label b>` and `<coef>_diff` (b minus a). Proxies are matched by name without the
    `@embedder`/`@judge` part, so two embedders (or judges) of one study, filtered apart,
    line up; a proxy only one side has shows nulls. `paired=True` keeps only the (group,
    seed, dataset) triples both sides have, so a difference is not a difference in data.

        s = load_study("sentiment")
        compare(s.filter(seeds=[42, 43]), s.filter(seeds=[44, 45, 46]))
        compare(s, load_study("sentiment", "http://tracking:5000"), labels=("local", "team"))
        s.filter(embedder="minilm").compare(s.filter(embedder="gte-qwen2"), paired=True)
        compare(s.filter(judge="qwen"), s.filter(judge="gpt"), labels=("qwen", "gpt"))
    """
    la, lb = labels
    if la == lb or "diff" in labels or not la or not lb:
        raise SynqueError(f"compare: labels must be two names other than 'diff', got {labels}")
    a = a.filter(proxies=proxies, seeds=seeds, groups=groups)
    b = b.filter(proxies=proxies, seeds=seeds, groups=groups)
    if paired:
        keys = ["group", "seed", "dataset"]
        common = a.table.select(keys).unique().join(b.table.select(keys).unique(), on=keys)
        if common.is_empty():
            raise SynqueError("compare: the two studies share no (group, seed, dataset)")
        a, b = (_only(s, common) for s in (a, b))
    table = _headline(a, la).join(_headline(b, lb), on="proxy", how="full", coalesce=True)
    diffs = [(pl.col(f"{c}_{lb}") - pl.col(f"{c}_{la}")).alias(f"{c}_diff") for c in COEFFICIENTS]
    order = [f"{c}_{s}" for c in COEFFICIENTS for s in (la, lb, "diff")]
    return table.with_columns(diffs).select("proxy", *order).sort("proxy")
