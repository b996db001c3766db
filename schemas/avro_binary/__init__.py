"""runfold's one Avro binary layer: the primitives and the record layouts it writes and reads.

Every byte of an Event, Run, Violation, RunState or RunSummary body that runfold writes without
fastavro is written here, and read here:

- the primitives (:mod:`~schemas.avro_binary.primitives`): zigzag varint longs
  (:func:`write_long`, :func:`read_long`), strings, ``["null", T]`` unions, arrays
  (framing headers are :mod:`schemas.framing`'s);
- the record layouts, each for one exact schema version (pinned by fingerprint, see
  :data:`PINNED`): Event and its sixteen kind records (writers and readers generated
  from the kind models), Run and Violation (:mod:`~schemas.avro_binary.layouts`), and
  the ``runfold.RunState`` record (:mod:`~schemas.avro_binary.state`, as plain values,
  :class:`StateRecord`; ``consumers`` maps it to and from its ``RunState``), the
  ``runfold.RunSummary`` record of ``agent-runs``, which starts with RunState's first six
  fields and is written by the same functions (:class:`SummaryRecord`), and the
  ``runfold.RunMarker`` record of a finished run (:mod:`~schemas.avro_binary.marker`).

:data:`LAYOUTS` says field by field what the code here writes; ``tests/schemas/
test_avro_binary.py`` compares it with the parsed ``.avsc`` files, and other tests prove
the bytes equal fastavro's both ways. A schema whose fingerprint is not pinned goes
through fastavro instead (:mod:`schemas.codec`).

fastavro is generic: per record it walks the schema, builds a dict and, for ``kind``,
tries union branches. The functions here go straight between values and bytes, so the
codec costs about what bare fastavro costs on a dict.

Rust integer widths are enforced here: u32 fields outside 0..2**32-1 and u64 fields
below 0 are invalid values on decode; u64 values of 2**63 or more do not fit an Avro
``long`` and cannot be encoded (:class:`Overflow`).
"""

from __future__ import annotations

from schemas.avro_binary import layouts, marker, primitives, state
from schemas.avro_binary.layouts import *  # noqa: F403 - the package is its modules' union
from schemas.avro_binary.marker import *  # noqa: F403
from schemas.avro_binary.primitives import *  # noqa: F403
from schemas.avro_binary.state import *  # noqa: F403

__all__ = [*layouts.__all__, *marker.__all__, *primitives.__all__, *state.__all__]
