"""CPython's side of the pool bench: the same shapes as benches/pool.rs.

Usage: python3 pool.py SHAPE N
Prints the seconds that the timed part took for N tasks (or N calls), after a warm-up, with a
Pool(2) of the default (fork) context, or ProcessPoolExecutor(2) for the `ppe_*` shapes:
  apply_async  N unbatched apply_async of a trivial task, then every get()
  map          one map of a trivial function over N integers, default chunksize
  apply        N apply() round trips
  ppe_submit   N submit() of a trivial task, then every result()
"""
import concurrent.futures as cf
import multiprocessing as mp
import sys
import time


def trivial(x):
    return x + 1


def main():
    shape, n = sys.argv[1], int(sys.argv[2])
    if shape.startswith("ppe_"):
        with cf.ProcessPoolExecutor(2) as ex:
            [f.result() for f in [ex.submit(trivial, i) for i in range(100)]]
            t = time.perf_counter()
            futs = [ex.submit(trivial, i) for i in range(n)]
            for f in futs:
                f.result()
            print(time.perf_counter() - t)
        return
    with mp.Pool(2) as pool:
        pool.map(trivial, range(1000))
        t = time.perf_counter()
        if shape == "apply_async":
            rs = [pool.apply_async(trivial, (i,)) for i in range(n)]
            for r in rs:
                r.get()
        elif shape == "map":
            pool.map(trivial, range(n))
        elif shape == "apply":
            for i in range(n):
                pool.apply(trivial, (i,))
        else:
            raise SystemExit("unknown shape " + shape)
        print(time.perf_counter() - t)


if __name__ == "__main__":
    main()
