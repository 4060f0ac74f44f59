"""How the benchmarks take and summarise their samples, the same way on both sides."""

from __future__ import annotations

from collections.abc import Callable


def in_turns(sides: dict[str, Callable[[], float]], turns: int) -> dict[str, list[float]]:
    """Measure each side once per turn, the side that goes first alternating between turns,
    so neither always has the machine (caches, a warm connection, a quiet CPU) first."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for turn in range(turns):
        first = turn % len(names)
        for name in names[first:] + names[:first]:
            samples[name].append(sides[name]())
    return samples


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
