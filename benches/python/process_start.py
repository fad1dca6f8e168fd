"""CPython's side of the process_start bench: start+join of a no-op Process.

Usage: python3 process_start.py METHOD N
Prints the total seconds that N start+join cycles took (after one warm-up cycle), so that the
Rust bench can compare like with like. METHOD is fork, forkserver or spawn.
"""
import multiprocessing as mp
import sys
import time


def noop():
    pass


def main():
    method, n = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context(method)
    p = ctx.Process(target=noop)
    p.start()
    p.join()
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    print(time.perf_counter() - t)


if __name__ == "__main__":
    main()
