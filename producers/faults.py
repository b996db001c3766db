"""Fault injection rates for the fleet simulator and the ``--faults`` text that sets them.

``--faults gap=0.01,dup=0.02,reorder=0.05,after_end=0.01,conflict=0.01,corrupt=0.005``:
each value is the probability, per run, that the simulator injects that fault into
the run (independently of the others). What each fault does, and what the consumer
must then report, is described in :mod:`producers.fleet`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from schemas.errors import ConfigError

__all__ = ["FAULT_NAMES", "FaultRates", "FaultSpecError"]

FAULT_NAMES = ("gap", "dup", "reorder", "after_end", "conflict", "corrupt")
"""The faults the simulator knows, in the order it lays them out in a run."""


class FaultSpecError(ConfigError):
    """The ``--faults`` text is malformed; the message names the bad item."""


@dataclass(frozen=True)
class FaultRates:
    """Per-run probability of each fault (0 = never, 1 = every run)."""

    gap: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    after_end: float = 0.0
    conflict: float = 0.0
    corrupt: float = 0.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not 0.0 <= value <= 1.0:
                raise FaultSpecError(
                    f"fault {item.name}={value!r} is not a probability; use a number from 0 to 1"
                )

    @property
    def any(self) -> bool:
        """True when at least one fault can happen."""
        return any(getattr(self, name) > 0 for name in FAULT_NAMES)

    def as_text(self) -> str:
        """The ``--faults`` text for the non-zero rates (``""`` when none)."""
        return ",".join(
            f"{name}={getattr(self, name):g}" for name in FAULT_NAMES if getattr(self, name)
        )

    @classmethod
    def parse(cls, text: str | None) -> FaultRates:
        """Read ``"gap=0.01,dup=0.02"``; raises :class:`FaultSpecError` naming the bad item.

        Items are ``name=probability`` separated by commas; spaces are ignored; a name
        may appear once; an empty text means no faults.
        """
        if text is None or not text.strip():
            return cls()
        rates: dict[str, float] = {}
        for position, raw in enumerate(text.split(","), start=1):
            item = raw.strip()
            where = f"--faults item {position} ({item!r})"
            if not item:
                raise FaultSpecError(f"{where} is empty; separate items with single commas")
            name, sep, value_text = item.partition("=")
            name = name.strip()
            if not sep:
                raise FaultSpecError(
                    f"{where} has no '='; write it as name=probability, e.g. gap=0.01"
                )
            if name not in FAULT_NAMES:
                raise FaultSpecError(
                    f"{where}: unknown fault {name!r}; known faults: {', '.join(FAULT_NAMES)}"
                )
            if name in rates:
                raise FaultSpecError(f"{where}: fault {name!r} is given twice")
            try:
                value = float(value_text.strip())
            except ValueError:
                raise FaultSpecError(
                    f"{where}: {value_text.strip()!r} is not a number; "
                    "give a probability from 0 to 1"
                ) from None
            if not 0.0 <= value <= 1.0:
                raise FaultSpecError(f"{where}: {value:g} is not a probability from 0 to 1")
            rates[name] = value
        return cls(**rates)
