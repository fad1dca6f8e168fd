"""CPython's side of ipc-bench: multiprocessing's Queue, Pipe and shared_memory in the shapes
ipc-bench measures for its own transports.

Usage: python3 ipc_bench.py TRANSPORT SIZE PLACEMENT REPS SECONDS
TRANSPORT is queue, pipe or shm; PLACEMENT is same-cpu, cross-cpu or unpinned. Each of REPS
repetitions (after a warm-up) runs for about SECONDS. Prints one JSON object:
{"msgs_per_s": median, "rtt_p50_ns": ..., "rtt_p99_ns": ...}.

The payload is the same bytes ipc-bench sends (i * 31 + 7 mod 256); the receiver checks the
length and 18 sampled bytes, as ipc-bench's does. shm is a SharedMemory block handed over with
two semaphores (one message in flight), like ipc-bench's "shm".
"""
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from multiprocessing import shared_memory


PATTERN = bytes((i * 31 + 7) & 0xFF for i in range(256))


def payload(size):
    return (PATTERN * (size // 256 + 1))[:size]


def check(buf, size):
    if len(buf) != size:
        raise SystemExit(f"got {len(buf)} bytes, expected {size}")
    if size:
        for k in range(18):
            i = (size - 1) * k // 17
            if buf[i] != (i * 31 + 7) & 0xFF:
                raise SystemExit(f"byte {i} differs")


def pin(cpu):
    if cpu is None:
        os.sched_setaffinity(0, range(os.cpu_count()))
    else:
        os.sched_setaffinity(0, {cpu})


# ----- children -----

def queue_child(q, back, cpu, size, mode, go):
    pin(cpu)
    body = payload(size)
    while True:
        cmd = go.get()
        if cmd is None:
            return
        n = cmd
        if mode == "tp":
            for _ in range(n):
                q.put(body)
        else:
            for _ in range(n):
                back.put(q.get())


def pipe_child(conn, cpu, size, mode):
    pin(cpu)
    body = payload(size)
    buf = bytearray(max(size, 1))
    while True:
        n = conn.recv()
        if n is None:
            return
        if mode == "tp":
            for _ in range(n):
                conn.send_bytes(body)
        else:
            for _ in range(n):
                k = conn.recv_bytes_into(buf)
                conn.send_bytes(buf[:k] if k != len(buf) else buf)


def shm_child(name, cpu, size, mode, empty, full, req, rep, go):
    pin(cpu)
    shm = shared_memory.SharedMemory(name=name)
    body = payload(size)
    try:
        while True:
            n = go.get()
            if n is None:
                return
            if mode == "tp":
                for _ in range(n):
                    empty.acquire()
                    shm.buf[:size] = body
                    full.release()
            else:
                for _ in range(n):
                    req.acquire()
                    data = bytes(shm.buf[:size])
                    shm.buf[:size] = data
                    rep.release()
    finally:
        shm.close()


# ----- parent -----

def main():
    transport, size, placement = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    reps, seconds = int(sys.argv[4]), float(sys.argv[5])
    cpus = {"unpinned": (None, None), "same-cpu": (0, 0), "cross-cpu": (0, 1)}[placement]
    ctx = mp.get_context("fork")
    body = payload(size)
    result = {}
    for mode in ("tp", "rt"):
        if transport == "queue":
            q, back, go = ctx.Queue(), ctx.Queue(), ctx.SimpleQueue()
            child = ctx.Process(target=queue_child, args=(q, back, cpus[1], size, mode, go))

            def run(n):
                go.put(n)
                if mode == "tp":
                    for _ in range(n):
                        check(q.get(), size)
                else:
                    for _ in range(n):
                        t = time.perf_counter_ns()
                        q.put(body)
                        check(back.get(), size)
                        samples.append(time.perf_counter_ns() - t)

            def stop():
                go.put(None)
        elif transport == "pipe":
            a, b = ctx.Pipe()
            child = ctx.Process(target=pipe_child, args=(b, cpus[1], size, mode))
            buf = bytearray(max(size, 1))

            def run(n):
                a.send(n)
                if mode == "tp":
                    for _ in range(n):
                        k = a.recv_bytes_into(buf)
                        check(buf[:k] if k != len(buf) else buf, size)
                else:
                    for _ in range(n):
                        t = time.perf_counter_ns()
                        a.send_bytes(body)
                        k = a.recv_bytes_into(buf)
                        check(buf[:k] if k != len(buf) else buf, size)
                        samples.append(time.perf_counter_ns() - t)

            def stop():
                a.send(None)
        else:
            shm = shared_memory.SharedMemory(create=True, size=max(size, 1))
            empty, full = ctx.Semaphore(1), ctx.Semaphore(0)
            req, rep = ctx.Semaphore(0), ctx.Semaphore(0)
            go = ctx.SimpleQueue()
            child = ctx.Process(
                target=shm_child,
                args=(shm.name, cpus[1], size, mode, empty, full, req, rep, go),
            )
            out = bytearray(size)

            def run(n):
                go.put(n)
                if mode == "tp":
                    for _ in range(n):
                        full.acquire()
                        out[:] = shm.buf[:size]
                        check(out, size)
                        empty.release()
                else:
                    for _ in range(n):
                        t = time.perf_counter_ns()
                        shm.buf[:size] = body
                        req.release()
                        rep.acquire()
                        out[:] = shm.buf[:size]
                        check(out, size)
                        samples.append(time.perf_counter_ns() - t)

            def stop():
                go.put(None)

        child.start()
        pin(cpus[0])
        samples = []
        # Warm-up, and a first estimate of the rate.
        n = 4
        t = time.perf_counter()
        run(n)
        per = max((time.perf_counter() - t) / n, 1e-7)
        n = max(2, min(2_000_000, int(seconds / per)))
        rates = []
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            run(n)
            rates.append(n / (time.perf_counter() - t))
        stop()
        child.join()
        pin(None)
        if transport == "shm":
            shm.close()
            shm.unlink()
        if mode == "tp":
            result["msgs_per_s"] = statistics.median(rates)
        else:
            samples.sort()
            result["rtt_p50_ns"] = samples[len(samples) // 2]
            result["rtt_p99_ns"] = samples[min(len(samples) - 1, len(samples) * 99 // 100)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
