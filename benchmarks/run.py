"""``make bench``: every benchmark on the real servers, then the results table in
benchmarks/README.md rewritten from what they measured."""

from __future__ import annotations

import subprocess
import sys

from benchmarks import (
    b1_hot_path,
    b2_end_to_end,
    b3_reports,
    b4_closing,
    b5_redis_stall,
    b6_import,
    b7_cluster,
    b8_dashboard,
)
from benchmarks.report import write_readme

BENCHMARKS = {
    "b1": b1_hot_path,
    "b2": b2_end_to_end,
    "b3": b3_reports,
    "b4": b4_closing,
    "b5": b5_redis_stall,
    "b6": b6_import,
    "b7": b7_cluster,
    "b8": b8_dashboard,
}


def main(argv: list[str]) -> None:
    chosen = argv or list(BENCHMARKS)
    for name in chosen:
        BENCHMARKS[name].main([])
        if name == "b2":  # where the tracked request's time goes, on B2's database
            subprocess.run([sys.executable, "-m", "benchmarks.profile_b2"], check=True)
    write_readme()


if __name__ == "__main__":
    main(sys.argv[1:])
