"""CPython's side of the sync bench: a multiprocessing.Value incremented under its lock.

Usage: python3 sync.py value PROCS N
PROCS processes (fork) each do N // PROCS `with v.get_lock(): v.value += 1`. They start together
on an Event; the parent times from setting it until every child has reported done. Prints the
seconds, so that the Rust bench can compare like with like.
"""
import multiprocessing as mp
import sys
import time


def work(v, start, done, n):
    start.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    done.put(n)


def main():
    mode, procs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    assert mode == "value"
    ctx = mp.get_context("fork")
    v = ctx.Value("i", 0)
    start, done = ctx.Event(), ctx.SimpleQueue()
    each = max(1, n // procs)
    ps = [ctx.Process(target=work, args=(v, start, done, each)) for _ in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.05)
    t = time.perf_counter()
    start.set()
    for _ in ps:
        done.get()
    elapsed = time.perf_counter() - t
    for p in ps:
        p.join()
    assert v.value == each * procs
    print(elapsed * n / (each * procs))


if __name__ == "__main__":
    main()
