"""Models to and from the record dicts fastavro writes and reads (the general, slower path).

Used for writer versions other than the one :mod:`schemas.avro_binary` is pinned
to, and by tests as the reference the fast path must match byte for byte.
JSON-valued fields (``payload``, ``inputs``, ``outputs``) travel as serde JSON text.
"""

from __future__ import annotations

import enum
from typing import Any
from uuid import UUID

import pydantic

from schemas import serde
from schemas.avro_binary import Invalid
from schemas.model import EVENT_KINDS, Event, Run, Violation

__all__ = ["model_from_record", "model_to_record", "overflowing_fields"]

_JSON_FIELDS = frozenset({"payload", "inputs", "outputs"})
_OPTIONAL_JSON_FIELDS = frozenset({"outputs"})  # Option<Value>: None is Avro null, not "null"
_TAG_BY_CLASS_NAME = {cls.__name__: tag for tag, cls in EVENT_KINDS.items()}
_LONG_MAX = 2**63 - 1


def _value_to_avro(name: str, value: Any, namespace: str) -> Any:
    if name in _JSON_FIELDS:
        if value is None and name in _OPTIONAL_JSON_FIELDS:
            return None
        return serde.dumps(value)
    if isinstance(value, pydantic.BaseModel):  # an EventKind variant: a union branch
        fields = {k: _value_to_avro(k, v, namespace) for k, v in value.__dict__.items()}
        fields.pop("type", None)
        return (f"{namespace}.{type(value).__name__}", fields)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def model_to_record(value: Event | Run | Violation, schema: dict[str, Any]) -> dict[str, Any]:
    """The fastavro record of ``value`` for the record schema ``schema``."""
    namespace = schema["name"].rpartition(".")[0]
    return {k: _value_to_avro(k, v, namespace) for k, v in value.__dict__.items()}


def _value_from_avro(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS and isinstance(value, str):
        try:
            return serde.loads(value)
        except ValueError as exc:
            raise Invalid(name, f"not JSON as serde_json reads it: {exc}") from exc
    if isinstance(value, tuple):  # (record full name, fields) of a union branch
        record_name, fields = value
        short = record_name.rpartition(".")[2]
        if short not in _TAG_BY_CLASS_NAME:
            raise ValueError(f"{name}: union branch {record_name} is not an EventKind variant")
        return {"type": _TAG_BY_CLASS_NAME[short], **fields}
    if isinstance(value, UUID):
        return str(value)
    return value


def model_from_record(model: type[Any], record: dict[str, Any]) -> Any:
    """A validated ``model`` instance from a fastavro record (:class:`Invalid` if it cannot be)."""
    fields = {k: _value_from_avro(k, v) for k, v in record.items()}
    try:
        return model.model_validate(fields)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else "(value)"
        problems = (
            errors[0]["msg"]
            if len(errors) == 1
            else "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        )
        raise Invalid(where, problems) from exc


def overflowing_fields(value: Any, prefix: str = "") -> list[str]:
    """Names (dotted) of the integer fields of ``value`` beyond an Avro ``long``."""
    found: list[str] = []
    for name, item in value.__dict__.items():
        if isinstance(item, pydantic.BaseModel):
            found.extend(overflowing_fields(item, f"{prefix}{name}."))
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > _LONG_MAX:
            found.append(f"{prefix}{name}={item}")
    return found
