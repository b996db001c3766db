"""Former name of :mod:`schemas.avro_binary`, kept for ``consumers/fastlane.py``.

The names below are the ones the fast lane (and its tests) import; new code imports
:mod:`schemas.avro_binary`. ``PINNED`` is the same dict object, so patching it here
patches it there.
"""

from __future__ import annotations

from schemas.avro_binary import (
    PINNED,
    U32_FIELDS,
    read_long,
    read_string,
    read_string_array,
    write_long,
)

__all__ = ["PINNED"]

# The fast lane's private spellings of the same functions.
_read_long = read_long
_read_string = read_string
_read_string_array = read_string_array
_long = write_long
_U32_FIELDS = U32_FIELDS
