"""`python -m gru4rec.network.kernels`: say which kernels training uses.

Exits 1 without the compiled ones, so that a build (the Docker image's) fails where the
extension did not compile or does not load, instead of training on the slower torch loops.
"""

from __future__ import annotations

from gru4rec.network.kernels import compiled, isa_levels, unavailable_reason


def main() -> int:
    """`python -m gru4rec.network.kernels`: say which kernels training uses; exit 1 without the
    compiled ones (the Docker image's build runs this)."""
    kernels = compiled()
    if kernels is None:
        print(f"compiled kernels: not available ({unavailable_reason()})")
        return 1
    openmp = "OpenMP" if kernels.openmp else "one thread (no OpenMP)"
    print(
        f"compiled kernels: {kernels.path} ({kernels.isa}, of {', '.join(isa_levels())}; {openmp})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
