"""CPython's side of the shm bench: copying into and out of a warm SharedMemory block.

Usage: python3 shm.py in|out SIZE N
`in` copies a SIZE-byte bytes object into the block N times (`buf[:] = src`); `out` copies the
block into a touched bytearray N times. Both after a warm-up copy. Prints the seconds.
"""
import sys
import time
from multiprocessing import shared_memory


def main():
    mode, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        buf = shm.buf
        src = bytes([7]) * size
        dst = bytearray(size)
        buf[:] = src
        dst[:] = buf
        t = time.perf_counter()
        for _ in range(n):
            if mode == "in":
                buf[:] = src
            else:
                dst[:] = buf
        elapsed = time.perf_counter() - t
        del buf
    finally:
        shm.close()
        shm.unlink()
    print(elapsed)


if __name__ == "__main__":
    main()
