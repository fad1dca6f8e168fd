"""CPython's side of the futures bench: the same shapes as benches/futures.rs.

Usage: python3 futures.py SHAPE N
Prints the seconds the timed part took, after a warm-up, with 2 workers:
  ppe_submit  N ProcessPoolExecutor.submit() of a trivial task, then every result()
  ppe_rtt     N submit(...).result() round trips on a ProcessPoolExecutor
  tpe_submit  N ThreadPoolExecutor.submit() of a trivial task, then every result()
"""
import concurrent.futures as cf
import sys
import time


def trivial(x):
    return x + 1


def main():
    shape, n = sys.argv[1], int(sys.argv[2])
    if shape.startswith("ppe_"):
        ex = cf.ProcessPoolExecutor(2)
    elif shape.startswith("tpe_"):
        ex = cf.ThreadPoolExecutor(2)
    else:
        raise SystemExit("unknown shape " + shape)
    with ex:
        [f.result() for f in [ex.submit(trivial, i) for i in range(100)]]
        t = time.perf_counter()
        if shape.endswith("_submit"):
            futs = [ex.submit(trivial, i) for i in range(n)]
            for f in futs:
                f.result()
        else:
            for i in range(n):
                ex.submit(trivial, i).result()
        print(time.perf_counter() - t)


if __name__ == "__main__":
    main()
