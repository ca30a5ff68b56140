"""A message's values against its replica model: each field's own `clean()`, the JSON type it
must have, the key, the master's change time — and `Change`, the validated event they make.
Nothing here touches the database."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_tools.replica.messages import Event, InvalidData


@dataclass(frozen=True)
class Change:
    """A validated event, ready to be applied to `model`."""

    event: Event
    model: type[models.Model]
    pk: Any
    #: A save's column values (cleaned), or for a model applied through its hooks the data its
    #: hooks are given (mapped, as django-cqrs maps it); None for a delete.
    values: dict[str, Any] | None
    #: The master's change time (cqrs_updated), for lag metrics and the replica's state.
    updated: datetime | None = None
    #: A save written in bulk: its upsert parameters for the database it is written to
    #: (`write.row_params`), worked out before the write transaction; None otherwise.
    params: list[Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def revision(self) -> int:
        return self.event.revision


def clean_values(model: type[models.Model], data: dict, *, complete: bool) -> dict[str, Any]:
    """The model's column values (by attname), each through its field's `clean()` as
    `Model.full_clean` runs it, without building a model instance per message. `complete`: a
    row is written from them, so a required field must be there and an absent one takes its
    default; otherwise (data a model's hooks get) only the fields present are checked. Raises
    InvalidData with every field's error."""
    plans = _plans(model)
    if complete:
        missing = sorted(plan.name for plan in plans if plan.required and plan.name not in data)
        if missing:
            raise InvalidData(f"missing fields: {', '.join(missing)}")
    values, errors = {}, []
    for plan in plans:
        if plan.name in data:
            raw = data[plan.name]
            wrong_type = json_type_error(plan.field, raw)
            if wrong_type:
                errors.append(f"{plan.name}: {wrong_type}")
                continue
            if plan.float_to_decimal and isinstance(raw, float):
                raw = Decimal(repr(raw))
        elif complete:
            raw = plan.field.get_default()
        else:
            continue
        try:
            values[plan.attname] = plan.clean(raw)
        except ValidationError as exc:
            errors.append(f"{plan.name}: {' '.join(exc.messages)}")
    if errors:
        raise InvalidData("; ".join(errors))
    return values


def clean_pk(pk_field: models.Field, raw: Any, missing: str = "") -> Any:
    wrong_type = json_type_error(pk_field, raw)
    if wrong_type:
        raise InvalidData(f"{pk_field.name}: {wrong_type}")
    try:
        pk = pk_field.to_python(raw)
    except ValidationError as exc:
        raise InvalidData(f"{pk_field.name}: {'; '.join(exc.messages)}") from None
    if pk is None:
        raise InvalidData(missing or f"no {pk_field.name}")
    return pk


def updated(data: dict, cleaned: dict | None = None) -> datetime | None:
    """The master's change time (`cqrs_updated`), aware; None when absent or unreadable.
    `cleaned`: the message's values already through the fields' clean(), whose aware
    `cqrs_updated` is taken as it is instead of parsing the string a second time."""
    if cleaned is not None:
        value = cleaned.get("cqrs_updated")
        if isinstance(value, datetime) and not timezone.is_naive(value):
            return value
    value = data.get("cqrs_updated")
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = parse_datetime(value)
            if parsed is not None and timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed, UTC)
            return parsed
    return None


class _FieldPlan:
    """What validating one field of a message takes, worked out once per model: Django's
    `Field.clean()` (to_python, validate, run_validators) without its per-call dispatch, for
    fields that do not override those; the others keep their own `clean()`."""

    def __init__(self, field: models.Field) -> None:
        self.field = field
        self.name, self.attname = field.name, field.attname
        self.required = not field.null
        # A stock django-cqrs master sends decimals as JSON numbers; the float's shortest repr
        # is the decimal it came from ("19.9"), its binary expansion is not.
        self.float_to_decimal = isinstance(field, models.DecimalField)
        kind = type(field)
        plain = (
            kind.clean is models.Field.clean
            and kind.validate is models.Field.validate
            and kind.run_validators is models.Field.run_validators
            and field.editable
            and field.choices is None
        )
        self.clean = self._plain_clean if plain else self._own_clean
        self._to_python = field.to_python
        self._validators = list(field.validators)
        self._empty = field.empty_values
        self._null, self._blank = field.null, field.blank

    def _own_clean(self, raw: Any) -> Any:
        return self.field.clean(raw, None)

    def _plain_clean(self, raw: Any) -> Any:
        value = self._to_python(raw)
        if value is None and not self._null:
            raise ValidationError(self.field.error_messages["null"], code="null")
        if not self._blank and value in self._empty:
            raise ValidationError(self.field.error_messages["blank"], code="blank")
        if value in self._empty:
            return value
        errors = []
        for validator in self._validators:
            try:
                validator(value)
            except ValidationError as exc:
                if hasattr(exc, "code") and exc.code in self.field.error_messages:
                    exc.message = self.field.error_messages[exc.code]
                errors.extend(exc.error_list)
        if errors:
            raise ValidationError(errors)
        return value


_PLANS: dict[type[models.Model], list[_FieldPlan]] = {}


def _plans(model: type[models.Model]) -> list[_FieldPlan]:
    plans = _PLANS.get(model)
    if plans is None:
        plans = _PLANS[model] = [_FieldPlan(field) for field in model._meta.concrete_fields]
    return plans


#: The JSON types a field accepts, by the field's internal type. Django's `to_python` coerces
#: almost anything (`str({"a": 1})`, `int(1.9)`, `int(True)`); an event whose value has the wrong
#: JSON type is malformed, and storing a coerced value would apply it wrongly.
_STRING = (str,)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        ("CharField", "TextField", "SlugField", "EmailField", "URLField", "UUIDField",
         "GenericIPAddressField", "FilePathField", "FileField", "ImageField"),
        _STRING,
    ),
    **dict.fromkeys(("DateTimeField", "DateField", "TimeField", "DurationField"), _STRING),
    **dict.fromkeys(
        ("AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
         "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
         "PositiveSmallIntegerField", "ForeignKey", "OneToOneField"),
        (int,),
    ),
    "BooleanField": (bool,),
    "DecimalField": (str, int, float),
    "FloatField": (int, float),
}  # fmt: skip
_JSON_NAMES = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}


def json_type_error(field: models.Field, value: Any) -> str | None:
    """Why `value`, as it came in the JSON, cannot be this field's value; None when it can."""
    if value is None:
        return None  # null-ness is the field's own validation
    accepted = _JSON_TYPES.get(field.get_internal_type())
    if accepted is None:
        return None  # JSONField and the like take any JSON
    # True is an int in Python, not in JSON.
    if isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool)):
        return None
    expected = " or ".join(_JSON_NAMES[t] for t in accepted)
    return f"expected {expected}, got JSON {_json_name(value)} {str(value)[:50]!r}"


def _json_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)
