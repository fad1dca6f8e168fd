"""CPython's side of ipc-bench's pool group: multiprocessing.Pool, multiprocessing.pool.ThreadPool,
ProcessPoolExecutor and ThreadPoolExecutor, 2 workers each, on the trivial task ipc-bench's own
rows run (x + 1), in the same shapes and with the same repetition policy.

Usage: python3 ipc_bench_pool.py REPS SECONDS
Each row: a warm-up repetition (which also estimates the time per call), then REPS repetitions
of about SECONDS each. Prints one line per number: ROW METRIC VALUE, where METRIC is
tasks_per_s (the median over the repetitions; items per second for a map), rtt_p50_ns or
rtt_p99_ns (over every timed call). The pools use the default start method (fork on Linux
before 3.14).
"""
import concurrent.futures as cf
import multiprocessing as mp
import multiprocessing.pool
import statistics
import sys
import time


def trivial(x):
    return x + 1


def check_all(n, results):
    count = 0
    for i, v in enumerate(results):
        if v != i + 1:
            raise SystemExit(f"a wrong result: {v} for {i}")
        count += 1
    if count != n:
        raise SystemExit(f"{n - count} results missing")


def run(reps, target, start_n, body):
    """Returns [(n, seconds, samples)] of the timed repetitions."""
    out = []
    samples = []
    t = time.perf_counter()
    body(start_n, samples)
    per = (time.perf_counter() - t) / start_n
    n = int(min(max(target / max(per, 1e-9), 2), 5_000_000))
    for _ in range(reps):
        samples = []
        t = time.perf_counter()
        body(n, samples)
        out.append((n, time.perf_counter() - t, samples))
    return out


def report(row, shape, result):
    if shape == "rtt":
        s = sorted(x for _, _, samples in result for x in samples)
        p = lambda q: s[min(len(s) * q // 100, len(s) - 1)]
        print(row, "rtt_p50_ns", p(50))
        print(row, "rtt_p99_ns", p(99))
    else:
        print(row, "tasks_per_s", statistics.median(n / secs for n, secs, _ in result))
    sys.stdout.flush()


def each_timed(n, samples, call):
    for i in range(n):
        t = time.perf_counter_ns()
        v = call(i)
        samples.append(time.perf_counter_ns() - t)
        if v != i + 1:
            raise SystemExit("a wrong result")


def pool_rows(prefix, pool, reps, target):
    pool.map(trivial, range(1000))

    def apply(n, samples):
        each_timed(n, samples, lambda i: pool.apply(trivial, (i,)))

    def apply_async(n, samples):
        rs = [pool.apply_async(trivial, (i,)) for i in range(n)]
        check_all(n, (r.get() for r in rs))

    def pmap(n, samples):
        check_all(n, pool.map(trivial, range(n)))

    report(f"{prefix}-apply", "rtt", run(reps, target, 50, apply))
    report(f"{prefix}-apply-async", "tp", run(reps, target, 1000, apply_async))
    report(f"{prefix}-map", "tp", run(reps, target, 10000, pmap))


def submit_all(ex, n):
    futs = [ex.submit(trivial, i) for i in range(n)]
    check_all(n, (f.result() for f in futs))


def main():
    reps, target = int(sys.argv[1]), float(sys.argv[2])
    with mp.Pool(2) as pool:
        pool_rows("python-pool", pool, reps, target)
    with multiprocessing.pool.ThreadPool(2) as pool:
        pool_rows("python-threadpool", pool, reps, target)
    with cf.ProcessPoolExecutor(2) as ex:
        submit_all(ex, 100)
        report("python-ppe-submit", "tp", run(reps, target, 1000, lambda n, s: submit_all(ex, n)))
        report(
            "python-ppe-submit-result",
            "rtt",
            run(reps, target, 50, lambda n, s: each_timed(n, s, lambda i: ex.submit(trivial, i).result())),
        )
    with cf.ThreadPoolExecutor(2) as ex:
        submit_all(ex, 100)
        report("python-tpe-submit", "tp", run(reps, target, 1000, lambda n, s: submit_all(ex, n)))


if __name__ == "__main__":
    main()
