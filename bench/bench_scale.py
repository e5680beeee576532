"""Scale benchmark: proxies at 100k x 100k in bounded memory, and reading 10,000 logged runs.

Why: the blocked proxies promise a memory bound and equal values, and correlate/select promise
to read a large study in seconds; this prints the figures behind both claims in one run.

Proxies: 384-dim float32 embeddings (MiniLM size), synthetic and real shifted apart a little.
Each proxy runs through the registry; time (wall and CPU: the machine is shared) and peak
memory (tracemalloc: numpy's allocations during the call, the inputs excluded) are printed.  At
``--direct-n`` the textbook formula (full kernel matrices, ``np.cov`` + ``sqrtm``) runs too, for
the relative difference and its memory.  KID and FD run whole at ``--n``.  The exact MMD is
10^10 kernel entries x 3 at 100k (about 7 CPU minutes on one thread, far more wall time on a
busy machine): by default it runs whole at ``--mmd-n`` and, at ``--n``, one row band of
K(x, y) is computed with the real code and the whole run extrapolated from it (every tile is
the same work); ``--mmd-full`` runs it whole at ``--n``.  Single-threaded BLAS.

Runs: ~``--runs`` child runs (repr, lens and train runs of 10 groups x 5 seeds, shaped like
synque's: ~18 tags, 3-9 metrics, no params) are written straight into MLflow's own tables in
one transaction (``tests/tracking/test_read_scale.py:bulk_log_runs``; the client logs ~10 runs
a second here).  Then ``proxy_values`` and ``performance_values`` read them back, and
correlate's maths (0 and 1000 bootstraps) and select's run on the tables once.  Stores: the
sqlite file (SQL read, and the paged search for comparison), and an ``mlflow server``
(``launch/tracking_server.sh``, basic auth on) on sqlite and on PostgreSQL: read through its
REST search (with the server's CPU), and through its database URI.

    python bench/bench_scale.py [--n 100000] [--mmd-n 20000] [--mmd-full] [--direct-n 4000]
        [--runs 10000] [--parts mmd kid fid runs] [--stores sqlite server-sqlite server-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from synque.proxies import ProxyWarning, compute_proxy  # noqa: E402

DIM = 384
MB = 2**20


def embeddings(n: int, shift: float, seed: int) -> np.ndarray:
    """Unit-norm float32 vectors with correlated dimensions, like sentence embeddings."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(48, DIM)) / 7.0
    out = (rng.normal(size=(n, 48)) + shift) @ mixing + 0.5 * rng.normal(size=(n, DIM))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def measured(fn: Callable[[], float]) -> tuple[float, str, float]:
    """(value, "wall s / CPU s", peak MiB allocated during the call) of one call.

    CPU seconds are printed too because the machine is shared: with one BLAS thread they are
    what the computation costs, whatever the load did to the wall clock.
    """
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProxyWarning)
        value = fn()
    seconds = f"{time.perf_counter() - start:.1f} s wall / {time.process_time() - cpu:.1f} s CPU"
    peak = (tracemalloc.get_traced_memory()[1] - base) / MB
    tracemalloc.stop()
    return value, seconds, peak


def direct_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Biased MMD^2, cubic kernel, full n x m matrices (the textbook formula)."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / DIM + 1.0) ** 3

    return float(k(x, x).mean() + k(y, y).mean() - 2.0 * k(x, y).mean())


def direct_kid(x: np.ndarray, y: np.ndarray, n_subsets: int, size: int, seed: int) -> float:
    """KID with each subset's full kernel matrices, the same draws as synque's."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        a = x[rng.choice(len(x), size, replace=False)]
        b = y[rng.choice(len(y), size, replace=False)]
        kxx, kyy = (a @ a.T / DIM + 1) ** 3, (b @ b.T / DIM + 1) ** 3
        kxy = (a @ b.T / DIM + 1) ** 3
        pairs = size * (size - 1)
        values.append(
            (kxx.sum() - np.trace(kxx)) / pairs
            + (kyy.sum() - np.trace(kyy)) / pairs
            - 2 * kxy.mean()
        )
    return float(np.mean(values))


def direct_fd(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook FD: float64 copies, np.cov, sqrtm of the non-symmetric product."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root))


def bench_proxy(name: str, n: int, direct_n: int, params: dict, seed: int = 42) -> None:
    """One proxy: direct vs synque at direct_n, then synque alone at n."""
    if direct_n:
        x, y = embeddings(direct_n, 0.0, 1), embeddings(direct_n, 0.05, 2)
        size, subsets = params.get("subset_size", 1000), params.get("n_subsets", 100)
        direct = {
            "mmd": lambda: direct_mmd(x, y),
            "kid": lambda: direct_kid(x, y, subsets, size, seed),
            "fid": lambda: direct_fd(x, y),
        }[name]
        ref, ref_s, ref_mb = measured(direct)
        got, got_s, got_mb = measured(lambda: compute_proxy(name, x, y, params, seed=seed))
        print(
            f"{name} {direct_n} x {direct_n}: direct {ref:.10g} in {ref_s}, peak "
            f"{ref_mb:.0f} MiB | synque {got:.10g} in {got_s}, peak {got_mb:.0f} MiB | "
            f"relative difference {abs(got - ref) / abs(ref):.1e}",
            flush=True,
        )
    x, y = embeddings(n, 0.0, 3), embeddings(n, 0.05, 4)
    inputs = (x.nbytes + y.nbytes) / MB
    got, got_s, got_mb = measured(lambda: compute_proxy(name, x, y, params, seed=seed))
    print(
        f"{name} {n} x {n}: {got:.10g} in {got_s}, peak {got_mb:.0f} MiB beyond the "
        f"{inputs:.0f} MiB float32 inputs",
        flush=True,
    )


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[object, str]:
    """(result, "wall s / CPU s") of fn(*args, **kwargs) (CPU: this process, not a server's)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return (
        result,
        f"{time.perf_counter() - start:.2f} s wall / {time.process_time() - cpu:.2f} s CPU",
    )


def server_cpu(store: Path | None) -> float:
    """CPU seconds used so far by a server's processes (MLflow's workers and PostgreSQL's)."""
    import psutil

    total = 0.0
    if store is None:
        return total
    for pid_file in (store / "mlflow.pid", store / "pg" / "data" / "postmaster.pid"):
        if not pid_file.exists():
            continue
        with contextlib.suppress(psutil.Error, ValueError):
            root = psutil.Process(int(pid_file.read_text().split()[0]))
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
    return total


def read_and_analyse(
    client: object, label: str, store: Path | None = None, analyse: bool = False
) -> None:
    """Correlate's and select's reads and maths on the study, each timed."""
    from synque.analysis.confidence import confidence
    from synque.analysis.correlation import select_performance, summarize
    from synque.analysis.rules import AgreementRank, rank_with_rule
    from synque.analysis.selection import rank_candidates
    from synque.tracking.read import performance_values, proxy_values

    before = server_cpu(store)
    proxies, t_proxies = timed(proxy_values, client, "big", ["repr", "lens"])
    perf_all, t_perf = timed(performance_values, client, "big")
    if store is not None:
        label += f" (server CPU for both reads {server_cpu(store) - before:.2f} s)"
    print(
        f"  {label}: proxy_values {proxies.height} rows in {t_proxies}; performance_values "
        f"{perf_all.height} rows in {t_perf}",
        flush=True,
    )
    if analyse:  # the same tables on every store: the maths is timed once
        perf, _ = select_performance(perf_all, "auto")
        for n_boot in (0, 1000):
            _, t_corr = timed(summarize, proxies, perf, [1, 3], n_boot, 0.95, seed=42)
            print(f"  correlate maths, {n_boot} bootstraps: {t_corr}", flush=True)
        _, t_select = timed(rank_candidates, proxies)
        print(f"  select maths, mean rank only: {t_select}", flush=True)
        rule = AgreementRank()
        ranking, t_rule = timed(rank_with_rule, proxies, rule)
        print(f"  select maths, agreement_rank (the default rule): {t_rule}", flush=True)
        _, t_sure = timed(
            confidence, proxies, ranking, lambda f: rank_with_rule(f, rule), resamples=200
        )
        print(f"  select's confidence, 200 resamples x 4 sources: {t_sure}", flush=True)


def bench_runs(n_runs: int, stores: list[str]) -> None:
    """Write a study of ~n_runs child runs into each store in bulk, then read it back."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from synque.tracking import read
    from tests.fakes.tracking_server import start_server
    from tests.tracking.test_read_scale import Study, bulk_log_runs

    study = Study(groups=10, datasets=max(1, round(n_runs / 150)), seeds=5)
    for kind in stores:
        with tempfile.TemporaryDirectory(prefix="synque-scale-", dir="/tmp") as tmp:
            os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user and must enter it
            folder = Path(tmp)
            if kind == "sqlite":
                uri = f"sqlite:///{folder / 'mlflow.db'}"
                _, t_write = timed(bulk_log_runs, uri, "synque-big", study)
                print(f"{kind}: {study.runs} runs written in bulk in {t_write}", flush=True)
                client = MlflowClient(uri)
                read_and_analyse(client, "SQL read", analyse=True)
                saved = read._sql_store
                read._sql_store = lambda _: None  # the paged search, for comparison
                try:
                    read_and_analyse(client, f"paged search ({read.PAGE_SIZE}/page)")
                finally:
                    read._sql_store = saved
                continue
            backend = kind.split("-", 1)[1]
            with start_server(folder, backend=backend, auth=True) as server:
                db = (
                    f"sqlite:///{folder / 'mlflow.db'}"
                    if backend == "sqlite"
                    else f"postgresql+psycopg2://mlflow@/mlflow?host={folder}/pg/run"
                    f"&port={server.pg_port}"
                )
                _, t_write = timed(bulk_log_runs, db, "synque-big", study)
                print(f"{kind}: {study.runs} runs written in bulk SQL in {t_write}", flush=True)
                with server.authorised():
                    read_and_analyse(MlflowClient(server.uri), "REST paged search", folder)
                    read_and_analyse(MlflowClient(db), "SQL read of the server's database")


def mmd_band(n: int, block_size: int) -> None:
    """MMD at n x n when the whole run does not fit the session: one measured row band.

    Every tile of the blocked MMD is the same work (block x block kernel entries), and there
    are 2 * T(T+1)/2 + T^2 tiles for T = ceil(n / block) (Kxx and Kyy: tiles on and above the
    diagonal; Kxy: all).  One band of Kxy (T tiles, the full 100k columns) is computed with
    the real code; the whole run's CPU time is its per-tile time times the tile count.  Memory
    is the band's peak: tiles are freed as they go, so the whole run's peak is the same.
    """
    from synque.proxies import mmd as mmd_module

    x, y = embeddings(n, 0.0, 3), embeddings(n, 0.05, 4)
    tiles = -(-n // block_size)
    total_tiles = tiles * (tiles + 1) + tiles * tiles
    kernel = mmd_module._polynomial(1.0 / DIM, 1.0, 3)
    _, band_s, band_mb = measured(
        lambda: mmd_module._kernel_sum(x[:block_size], y, kernel, block_size, same=False)[0]
    )
    cpu = float(band_s.split(" / ")[1].split()[0])
    print(
        f"mmd {n} x {n}: one row band of K(x, y) ({tiles} of {total_tiles} tiles, "
        f"{block_size} x {block_size}) in {band_s}, peak {band_mb:.0f} MiB beyond the "
        f"{(x.nbytes + y.nbytes) / MB:.0f} MiB float32 inputs; whole exact run extrapolated: "
        f"{cpu / tiles * total_tiles / 60:.0f} min CPU on one thread",
        flush=True,
    )


PROXY_PARAMS = {"mmd": {"block_size": 2048}, "kid": {"block_size": 2048}, "fid": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="points per set for the proxies")
    parser.add_argument("--direct-n", type=int, default=4000, help="size for the direct formula")
    parser.add_argument(
        "--mmd-n", type=int, default=20_000, help="size of the whole exact MMD run (timed)"
    )
    parser.add_argument(
        "--mmd-full", action="store_true", help="run the whole exact MMD at --n (hours here)"
    )
    parser.add_argument("--runs", type=int, default=10_000, help="logged child runs")
    parser.add_argument("--parts", nargs="+", default=["mmd", "kid", "fid", "runs"])
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "server-sqlite", "server-postgres"]
    )
    args = parser.parse_args()
    print(f"load avg {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, 1 BLAS thread", flush=True)
    for part in args.parts:
        if part == "mmd" and not args.mmd_full:
            bench_proxy("mmd", args.mmd_n, args.direct_n, PROXY_PARAMS["mmd"])
            mmd_band(args.n, PROXY_PARAMS["mmd"]["block_size"])
        elif part in PROXY_PARAMS:
            bench_proxy(part, args.n, args.direct_n, PROXY_PARAMS[part])
        elif part == "runs":
            bench_runs(args.runs, args.stores)


if __name__ == "__main__":
    main()
