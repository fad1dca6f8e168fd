"""CPython's side of the pipe bench: multiprocessing.Pipe in the same shapes as ours.

Usage:
  python3 pipe.py rt SIZE PLACEMENT N   round trips of SIZE-byte send_bytes/recv_bytes
  python3 pipe.py tp SIZE BATCH N       N batches of BATCH one-way SIZE-byte messages, each
                                        batch acknowledged by the receiver (recv_bytes_into a
                                        reused buffer, like the Rust side)
PLACEMENT is unpinned, same-cpu or cross-cpu. Prints the total seconds of the timed part
(after a warm-up), so that the Rust bench can compare like with like.
"""
import multiprocessing as mp
import os
import sys
import time


def pin(cpu):
    if cpu is None:
        os.sched_setaffinity(0, range(os.cpu_count()))
    else:
        os.sched_setaffinity(0, {cpu})


def echo(conn, parents_end, cpu):
    # A forked child holds a copy of the parent's end too; close it, or EOF never comes.
    parents_end.close()
    pin(cpu)
    try:
        while True:
            conn.send_bytes(conn.recv_bytes())
    except EOFError:
        pass


def sink(conn, parents_end, size, batch):
    parents_end.close()
    buf = bytearray(size)
    n = 0
    try:
        while True:
            conn.recv_bytes_into(buf)
            n += 1
            if n % batch == 0:
                conn.send_bytes(b"\x01")
    except EOFError:
        pass


def main():
    mode, size = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context("fork")
    ours, theirs = ctx.Pipe()
    if mode == "rt":
        placement, n = sys.argv[3], int(sys.argv[4])
        parent_cpu, child_cpu = {
            "unpinned": (None, None),
            "same-cpu": (0, 0),
            "cross-cpu": (0, 1),
        }[placement]
        p = ctx.Process(target=echo, args=(theirs, ours, child_cpu))
        p.start()
        pin(parent_cpu)
        msg = b"\x07" * size
        for _ in range(100):
            ours.send_bytes(msg)
            ours.recv_bytes()
        t = time.perf_counter()
        for _ in range(n):
            ours.send_bytes(msg)
            ours.recv_bytes()
    else:
        batch, n = int(sys.argv[3]), int(sys.argv[4])
        p = ctx.Process(target=sink, args=(theirs, ours, size, batch))
        p.start()
        msg = b"\x05" * size
        for _ in range(batch):
            ours.send_bytes(msg)
        ours.recv_bytes()
        t = time.perf_counter()
        for _ in range(n):
            for _ in range(batch):
                ours.send_bytes(msg)
            ours.recv_bytes()
    elapsed = time.perf_counter() - t
    ours.close()
    theirs.close()
    p.join()
    print(elapsed)


if __name__ == "__main__":
    main()
