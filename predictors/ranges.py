"""Where a forecast leaves the data a predictor was fitted on: one note per value out of range."""

from __future__ import annotations


def beyond_range(values: dict[str, tuple[float, list[float] | None]]) -> str | None:
    """'N = 7e9 is 5.3x the largest fitted (1.3e9)' for each value outside its fitted [min, max]."""
    notes = []
    for label, (value, seen) in values.items():
        if not seen:
            continue
        low, high = min(seen), max(seen)
        if value > high:
            notes.append(f"{label} = {value:.3g} is {value / high:.3g}x the largest fitted ({high:.3g})")
        elif value < low:
            notes.append(f"{label} = {value:.3g} is below the smallest fitted ({low:.3g})")
    return "; ".join(notes) or None
