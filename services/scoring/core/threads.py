"""Threads for ranking (one BLAS thread per call) and for neural fits.

Scoring one user is a matrix-vector product over the catalogue: a second BLAS thread buys
nothing there, and on a busy machine (a refit running, other processes) OpenBLAS's threads
wait for each other for tens of milliseconds. Measured by bench/online.py on 2 cores: with
several BLAS threads, 1 in 60 rankings took 40-130 ms; with one, none outside refits.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def one_blas_thread() -> None:
    """For the whole process (ScoringService's entry point, and benches that measure it)."""
    threadpool_limits(1, "blas")


def fit_threads(count: int) -> None:
    """The threads torch's fits use in this process. torch takes the machine's cores by
    default, which a pod with a lower CPU limit oversubscribes, and which leaves nothing to a
    serving replica on the same machine (bench/scaleout.py measures that case)."""
    import torch  # imported here: setting it is optional, and torch is slow to import

    torch.set_num_threads(count)
