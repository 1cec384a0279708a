"""A booking event, validated into domain details with every error listed.

The booking webhook's JSON and `aftercare import`'s CSV rows go through the same
models, so both accept and refuse the same values. Validation needs a little
context (the clock, the plans, the default region and timezone), passed through
pydantic's validation context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, ValidationInfo
from pydantic import field_validator as validates

from notifier.booking.enrolment import PatientChanges, PatientDetails, TreatmentDetails
from notifier.phone import parse_phone
from notifier.settings import is_timezone
from notifier.store.text import storable

EVENT_TYPES = ("treatment.completed", "treatment.cancelled", "patient.updated", "patient.erased")
FUTURE_TOLERANCE = timedelta(minutes=5)
# Older treatments are data-entry mistakes, not aftercare: nothing of a plan is left
# but yearly check-ups, and each missed year would be stored as an expired message.
OLDEST_TREATMENT = timedelta(days=10 * 365)
_LANGUAGE = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")

Id = Field(min_length=1, max_length=128, strict=True)
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Context:
    now: datetime
    plan_kinds: frozenset[str]
    default_region: str
    default_timezone: str


class FieldErrors(Exception):
    """The body failed validation; `errors` lists {"field", "message"} for each problem."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    @validates("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # Databases refuse NUL (and lone surrogates) in text; no booking system means one.
        if isinstance(value, str) and not storable(value):
            raise ValueError("contains a character no text can hold (NUL or a lone surrogate)")
        return value


class Envelope(_Strict):
    id: str = Id
    type: Literal["treatment.completed", "treatment.cancelled", "patient.updated", "patient.erased"]


class _PatientChecks(_Strict):
    """The checks of a patient's fields, shared by enrolment and `patient.updated`."""

    fills_timezone: ClassVar[bool] = False  # an absent timezone becomes the clinic's

    @validates("phone", check_fields=False)
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else parse_phone(value, _context(info).default_region)

    @validates("language", check_fields=False)
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _LANGUAGE.match(value)
        if match is None:
            raise ValueError("expected a language tag such as 'en' or 'ar'")
        return match.group(1).lower()

    @validates("timezone", check_fields=False)
    @classmethod
    def _timezone(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = value or (_context(info).default_timezone if cls.fills_timezone else None)
        if name is not None and not is_timezone(name):
            raise ValueError(f"{name!r} is not an IANA timezone name such as 'Asia/Dubai'")
        return name


class PatientIn(_PatientChecks):
    fills_timezone: ClassVar[bool] = True
    id: str = Id
    first_name: str | None = Field(default=None, max_length=100, strict=True)
    phone: str = Field(strict=True, max_length=40)
    channel: Literal["sms", "whatsapp"] = "sms"
    language: str = Field(default="en", strict=True, max_length=35)
    timezone: str | None = Field(default=None, strict=True, max_length=64, validate_default=True)
    consent: StrictBool

    def details(self) -> PatientDetails:
        assert self.timezone is not None
        return PatientDetails(
            external_id=self.id,
            first_name=self.first_name or None,
            phone=self.phone,
            channel=self.channel,
            language=self.language,
            timezone=self.timezone,
            consent=self.consent,
        )


class TreatmentIn(_Strict):
    id: str = Id
    kind: str = Field(strict=True, max_length=64)
    performed_at: datetime

    @validates("kind")
    @classmethod
    def _kind(cls, value: str, info: ValidationInfo) -> str:
        kinds = _context(info).plan_kinds
        if value not in kinds:
            raise ValueError(f"no aftercare plan for {value!r} (known: {', '.join(sorted(kinds))})")
        return value

    @validates("performed_at", mode="before")
    @classmethod
    def _performed_at(cls, value: Any, info: ValidationInfo) -> datetime:
        if not isinstance(value, str):
            raise ValueError("expected an ISO 8601 date-time with an offset")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 date-time with an offset") from None
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("needs a UTC offset, e.g. 2027-03-01T10:00:00+04:00")
        now = _context(info).now
        try:
            age = now - moment
        except OverflowError:
            raise ValueError("is out of range") from None
        if -age > FUTURE_TOLERANCE:
            raise ValueError("is in the future; send the event once the treatment is done")
        if age > OLDEST_TREATMENT:
            raise ValueError("is more than 10 years ago")
        return moment

    def details(self) -> TreatmentDetails:
        return TreatmentDetails(external_id=self.id, kind=self.kind, performed_at=self.performed_at)


class TreatmentRef(_Strict):
    id: str = Id


class Completed(_Strict):
    patient: PatientIn
    treatment: TreatmentIn


class Cancelled(_Strict):
    treatment: TreatmentRef


class PatientRef(_Strict):
    id: str = Id


class PatientUpdateIn(_PatientChecks):
    """`patient.updated`: the id, and only the fields that change."""

    id: str = Id
    first_name: str | None = Field(default=None, max_length=100, strict=True)
    phone: str | None = Field(default=None, strict=True, max_length=40)
    channel: Literal["sms", "whatsapp"] | None = None
    language: str | None = Field(default=None, strict=True, max_length=35)
    timezone: str | None = Field(default=None, strict=True, max_length=64)
    consent: StrictBool | None = None

    def changes(self) -> PatientChanges:
        return PatientChanges(
            first_name=self.first_name or None,
            phone=self.phone,
            channel=self.channel,
            language=self.language,
            timezone=self.timezone,
            consent=self.consent,
        )


class Updated(_Strict):
    patient: PatientUpdateIn


class Erased(_Strict):
    patient: PatientRef


Body = Completed | Cancelled | Erased | Updated
BODIES: dict[str, type[Body]] = {
    "treatment.completed": Completed,
    "treatment.cancelled": Cancelled,
    "patient.updated": Updated,
    "patient.erased": Erased,
}


def parse_event(data: dict[str, Any], context: Context) -> tuple[Envelope, Body | None]:
    """The envelope and the type's body, or `FieldErrors` listing every bad field of both.

    The body is None for a known type this version does not handle yet."""
    errors: list[dict[str, str]] = []
    envelope: Envelope | None = None
    body: Body | None = None
    try:
        envelope = validate(Envelope, data, context)
    except FieldErrors as error:
        errors += error.errors
    kind = data.get("type")
    model = BODIES.get(kind) if isinstance(kind, str) else None
    if model is not None:
        try:
            body = validate(model, data, context)
        except FieldErrors as error:
            errors += error.errors
    if errors or envelope is None:
        raise FieldErrors(errors)
    return envelope, body


def validate(model: type[M], data: object, context: Context) -> M:
    """`model` from `data`, or `FieldErrors` naming every bad field."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        raise FieldErrors([_field_error(e) for e in error.errors()]) from None


def _field_error(error: Any) -> dict[str, str]:
    field = ".".join(str(part) for part in error["loc"]) or "(body)"
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "literal_error":
        message = "must be one of " + error["ctx"]["expected"]
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return {"field": field, "message": message}


def _context(info: ValidationInfo) -> Context:
    context = info.context
    assert isinstance(context, Context)
    return context
