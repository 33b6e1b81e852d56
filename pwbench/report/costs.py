"""Price per hour and power per machine, for throughput per dollar and per watt.

From a TOML file (`--machines FILE`) and/or flags (`--price MATCH=USD`, `--watts MATCH=W`):

    [[machine]]
    match = "c7i.2xlarge"     # a run's label ("host target Nt"), hostname or run directory name
    price_per_hour = 0.357    # USD
    watts = 120
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pwbench import files
from pwbench.errors import UserError

FIELDS = ("price_per_hour", "watts")


@dataclass(frozen=True)
class Costs:
    entries: dict  # match -> {"price_per_hour": float, "watts": float}

    def for_run(self, run) -> dict:
        """The costs that apply to a run (a label match wins over a hostname or directory name)."""
        keys = (run.label, str(run.meta.get("hostname", "")), run.dir.name, str(run.dir))
        found: dict = {}
        for key in reversed(keys):
            found |= self.entries.get(key, {})
        return found

    def check_used(self, runs) -> None:
        names = {k for r in runs for k in (r.label, str(r.meta.get("hostname", "")), r.dir.name,
                                           str(r.dir))}
        unused = sorted(set(self.entries) - names)
        if unused:
            labels = ", ".join(repr(r.label) for r in runs)
            raise UserError(f"price/watts given for {', '.join(map(repr, unused))}, which matches "
                            f"no run; use a run label ({labels}), hostname or run directory name")


def parse(machines_file=None, prices=(), watts=()) -> Costs:
    entries: dict = {}
    if machines_file:
        entries = _read_file(Path(machines_file))
    for flag, field, values in (("--price", "price_per_hour", prices), ("--watts", "watts", watts)):
        for text in values:
            match, value = _split(text, flag)
            entries.setdefault(match, {})[field] = value
    return Costs(entries)


def _read_file(path: Path) -> dict:
    data = files.parse_toml(files.read_text(path, "machines file"), path)
    machines = data.get("machine")
    if not isinstance(machines, list) or set(data) != {"machine"}:
        raise UserError(f"{path}: expected [[machine]] tables with match, price_per_hour, watts")
    entries = {}
    for i, machine in enumerate(machines, 1):
        where = f"{path}: [[machine]] #{i}"
        unknown = set(machine) - {"match", *FIELDS}
        if unknown or not isinstance(machine.get("match"), str):
            raise UserError(f"{where}: needs match = \"...\" and only {', '.join(FIELDS)} "
                            f"(got {sorted(machine)})")
        entries[machine["match"]] = {f: _positive(machine[f], f"{where}: {f}")
                                     for f in FIELDS if f in machine}
    return entries


def _split(text: str, flag: str) -> tuple[str, float]:
    match, sep, value = text.rpartition("=")
    if not sep or not match:
        raise UserError(f"{flag} {text!r}: expected MATCH=NUMBER, e.g. {flag} 'myhost=0.40'")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    return match, _positive(number, f"{flag} {text!r}")


def _positive(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"{where}: expected a positive number, got {value!r}")
    return float(value)
