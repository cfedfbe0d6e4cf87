"""The end of a pipe: reads stdin to EOF and writes the rate (MB/s, first byte to EOF) to a file."""

import sys
import time

stdin = sys.stdin.buffer
size = len(stdin.read(1 << 16))
t0 = time.perf_counter()
while chunk := stdin.read(1 << 20):
    size += len(chunk)
seconds = time.perf_counter() - t0
with open(sys.argv[1], "w") as out:
    out.write(f"{size / 1e6 / max(seconds, 1e-9):.1f} MB/s {size} bytes {seconds:.3f} s\n")
