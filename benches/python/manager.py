"""CPython's side of the manager bench: one set and one get on a Manager().dict().

Usage: python3 manager.py N   N rounds of d["k"] = i; d["k"]
Prints the total seconds of the timed part (after a warm-up).
"""
import multiprocessing as mp
import sys
import time


def main():
    n = int(sys.argv[1])
    with mp.Manager() as m:
        d = m.dict()
        for i in range(200):
            d["k"] = i
            d["k"]
        t = time.perf_counter()
        for i in range(n):
            d["k"] = i
            d["k"]
        print(time.perf_counter() - t)


if __name__ == "__main__":
    main()
