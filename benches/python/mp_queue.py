"""CPython's side of the queue bench (named mp_queue.py: a script named queue.py would shadow
the standard library module multiprocessing imports): multiprocessing.Queue in our shapes.

Usage:
  python3 mp_queue.py spsc N          1 producer -> 1 consumer, N small messages (seq, 16 bytes)
  python3 mp_queue.py mpmc N          2 producers -> 2 consumers, N small messages in all
  python3 mp_queue.py tp SIZE N       1 producer -> 1 consumer, N messages of SIZE bytes
  python3 mp_queue.py rt PLACEMENT N  N round trips of a small message through two queues
PLACEMENT is unpinned, same-cpu or cross-cpu. Prints the seconds of the timed part: from the
start signal until the consumer(s) got everything (the processes are started before).
"""
import multiprocessing as mp
import os
import sys
import time

PAYLOAD = bytes(range(16))


def pin(cpu):
    if cpu is None:
        os.sched_setaffinity(0, range(os.cpu_count()))
    else:
        os.sched_setaffinity(0, {cpu})


def produce(q, start, n, size):
    start.wait()
    body = PAYLOAD if size is None else bytes(size)
    for i in range(n):
        q.put((i, body))


def consume(q, start, n, done):
    start.wait()
    for _ in range(n):
        q.get()
    done.put(n)


def echo(a, b, cpu, n):
    pin(cpu)
    for _ in range(n):
        b.put(a.get())


def main():
    mode = sys.argv[1]
    ctx = mp.get_context("fork")
    if mode == "rt":
        placement, n = sys.argv[2], int(sys.argv[3])
        cpus = {"unpinned": (None, None), "same-cpu": (0, 0), "cross-cpu": (0, 1)}[placement]
        a, b = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=echo, args=(a, b, cpus[1], n + 10))
        p.start()
        pin(cpus[0])
        for _ in range(10):
            a.put((0, PAYLOAD))
            b.get()
        t = time.perf_counter()
        for i in range(n):
            a.put((i, PAYLOAD))
            b.get()
        elapsed = time.perf_counter() - t
        p.join()
        print(elapsed)
        return
    if mode == "tp":
        size, n = int(sys.argv[2]), int(sys.argv[3])
        producers, consumers = 1, 1
    else:
        size, n = None, int(sys.argv[2])
        producers, consumers = (1, 1) if mode == "spsc" else (2, 2)
    q, start, done = ctx.Queue(), ctx.Event(), ctx.SimpleQueue()
    each_p, each_c = n // producers, n // consumers
    ps = [ctx.Process(target=produce, args=(q, start, each_p, size)) for _ in range(producers)]
    cs = [ctx.Process(target=consume, args=(q, start, each_c, done)) for _ in range(consumers)]
    for p in ps + cs:
        p.start()
    time.sleep(0.05)
    t = time.perf_counter()
    start.set()
    for _ in cs:
        done.get()
    elapsed = time.perf_counter() - t
    for p in ps + cs:
        p.join()
    print(elapsed)


if __name__ == "__main__":
    main()
