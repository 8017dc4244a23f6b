"""The figures of a run: what each scenario measured, what was wanted, and the final table."""

import statistics
from dataclasses import dataclass


@dataclass
class Figure:
    scenario: str
    name: str
    value: str
    #: What a pass needs; empty for a figure that is only reported.
    wanted: str = ""
    #: True or False for a check, None for a figure that is only reported.
    ok: bool | None = None

    @property
    def verdict(self):
        return {True: "PASS", False: "FAIL", None: ""}[self.ok]


class Report:
    def __init__(self):
        self.figures = []

    def scenario(self, letter):
        return Figures(self, letter)

    def failed(self):
        return any(figure.ok is False for figure in self.figures)

    def table(self):
        rows = [("", "figure", "value", "wanted", "")]
        rows += [(f.scenario, f.name, f.value, f.wanted, f.verdict) for f in self.figures]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"
                 for row in rows]
        lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
        return "\n".join(lines)


class Figures:
    """One scenario's figures, printed as they come."""

    def __init__(self, report, letter):
        self.report = report
        self.letter = letter

    def info(self, name, value):
        self.add(Figure(self.letter, name, str(value)))

    def check(self, name, value, wanted, ok):
        self.add(Figure(self.letter, name, str(value), wanted, bool(ok)))

    def add(self, figure):
        self.report.figures.append(figure)
        suffix = f"   [{figure.verdict}: wanted {figure.wanted}]" if figure.ok is not None else ""
        print(f"  {figure.name}: {figure.value}{suffix}", flush=True)


def seconds(values):
    """`min / p50 / max` of durations in seconds, or `-` when there are none."""
    if not values:
        return "-"
    return " / ".join(f"{v:.2f}" for v in (min(values), statistics.median(values), max(values)))
