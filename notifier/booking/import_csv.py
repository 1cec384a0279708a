"""`aftercare import`: past treatments enrolled in bulk from a CSV file (SPEC §12).

One row per treatment, with the columns of a `treatment.completed` event's fields,
validated by the booking event's own models (`notifier.booking.event`), so a row is
accepted exactly when the webhook would accept the same values. Each row is enrolled
by `complete_treatment`, as the webhook does: steps already past their expiry are
stored `expired`, the rest and the next yearly check-up are scheduled.

Rows are written in batches, one transaction each: a failure part-way rolls back its
batch, so every row is either wholly imported or not at all. A treatment id already
stored is skipped (never updated: a later run of an old file must not undo what the
booking system has sent since), so a second run adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from notifier.booking.enrolment import complete_treatment
from notifier.booking.event import Completed, Context, FieldErrors, validate
from notifier.booking.spreadsheet import Record, RowError, read_sheet
from notifier.planning.clinic import Clinic
from notifier.planning.plan import Plan
from notifier.store.db import reading, retrying
from notifier.store.models import Patient, Treatment, TreatmentStatus

COLUMNS = (
    "patient_id",
    "first_name",
    "phone",
    "channel",
    "language",
    "timezone",
    "consent",
    "treatment_id",
    "kind",
    "performed_at",
)
REQUIRED = ("patient_id", "phone", "consent", "treatment_id", "kind", "performed_at")
# Where each column goes in a `treatment.completed` event (and back, for its errors).
EVENT_FIELDS = {
    "patient_id": ("patient", "id"),
    "first_name": ("patient", "first_name"),
    "phone": ("patient", "phone"),
    "channel": ("patient", "channel"),
    "language": ("patient", "language"),
    "timezone": ("patient", "timezone"),
    "consent": ("patient", "consent"),
    "treatment_id": ("treatment", "id"),
    "kind": ("treatment", "kind"),
    "performed_at": ("treatment", "performed_at"),
}
COLUMN_OF = {".".join(path): column for column, path in EVENT_FIELDS.items()}
CONSENT_WORDS = {
    "true": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "no": False,
    "n": False,
    "0": False,
}
# Rows per transaction: large enough that commits cost little, small enough that the
# service's own writers (SQLite has one write lock) wait a fraction of a second at most.
BATCH_ROWS = 100


@dataclass(frozen=True)
class Row:
    """A valid row: a treatment ready to enrol."""

    line: int
    event: Completed


@dataclass
class Report:
    """What an import did (or, in a dry run, would do)."""

    dry_run: bool = False
    read: int = 0  # rows below the header
    imported: int = 0
    skipped: int = 0  # treatment id already stored
    without_consent: int = 0  # imported; nothing scheduled
    superseded: int = 0  # imported; a later session of the same kind is the current one
    scheduled: int = 0  # messages
    expired: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def bad_rows(self) -> int:
        return len({e.line for e in self.errors})

    def absorb(self, other: Report) -> None:
        for name in ("imported", "skipped", "without_consent", "superseded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.scheduled += other.scheduled
        self.expired += other.expired
        self.errors += other.errors

    def lines(self) -> list[str]:
        """The summary an operator reads (the bad rows themselves are in `errors`)."""
        verb = "would import" if self.dry_run else "imported"
        found = [
            f"{self.read:,} row(s) read: {verb} {self.imported:,}, "
            f"{self.skipped:,} already stored (skipped), {self.bad_rows:,} bad"
        ]
        if self.dry_run:
            found.append("dry run: nothing was written")
        elif self.imported:
            found.append(
                f"messages: {self.scheduled:,} scheduled, "
                f"{self.expired:,} already past (stored as expired)"
            )
        elif self.skipped:
            found.append("nothing new: every valid row's treatment was already stored")
        if self.without_consent:
            found.append(f"{self.without_consent:,} without consent: recorded, nothing scheduled")
        if self.superseded:
            found.append(
                f"{self.superseded:,} superseded by a later session of the same patient "
                "and kind: recorded, nothing scheduled"
            )
        if self.bad_rows:
            found.append(
                f"{self.bad_rows:,} bad row(s), listed above, were not imported: correct them "
                "and run the import again (rows already imported are skipped)"
            )
        return found


class ImportInterrupted(Exception):
    """An unexpected failure stopped the import; `report` says what was committed."""

    def __init__(self, report: Report, line: int, first_line: int, error: BaseException) -> None:
        self.report, self.line, self.first_line, self.error = report, line, first_line, error
        first_line_of = str(error).strip().splitlines()[:1]  # a database error's SQL follows
        cause = ": ".join([type(error).__name__, *first_line_of])
        if report.dry_run:
            super().__init__(f"dry run stopped at line {line:,}: {cause}; nothing was written")
            return
        super().__init__(
            f"import stopped at line {line:,}: {cause}\n"
            f"rows before line {first_line:,} are imported, none from there on. Run the same "
            "command again once the cause is fixed: rows already imported are skipped."
        )


# -- validating rows ---------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """A file read and validated: the rows to enrol, and the report so far (rows read,
    every problem of the bad ones)."""

    rows: list[Row]
    report: Report


def check_file(data: bytes, context: Context, *, dry_run: bool = False) -> Checked:
    """Read and validate a whole file; `SheetError` when it cannot be read at all."""
    sheet = read_sheet(data, COLUMNS, REQUIRED)
    rows, errors = validate_rows(sheet.records, context)
    report = Report(dry_run=dry_run, read=len(sheet.records) + len(sheet.errors))
    report.errors = sorted(sheet.errors + errors, key=lambda e: e.line)
    return Checked(rows, report)


def validate_rows(records: Iterable[Record], context: Context) -> tuple[list[Row], list[RowError]]:
    """The rows the webhook would accept, and every problem of the others (each bad
    field of a row is listed)."""
    rows: list[Row] = []
    errors: list[RowError] = []
    for record in records:
        event, problems = _event(record)
        try:
            completed = validate(Completed, event, context)
        except FieldErrors as error:
            problems += [
                RowError(record.line, COLUMN_OF.get(e["field"], e["field"]), e["message"])
                for e in error.errors
            ]
        if problems:
            errors += problems
        else:
            rows.append(Row(record.line, completed))
    return rows, errors


def _event(record: Record) -> tuple[dict[str, dict[str, Any]], list[RowError]]:
    """The `treatment.completed` fields a row gives (an empty cell is an absent field),
    and the problems only a CSV cell can have."""
    event: dict[str, dict[str, Any]] = {"patient": {}, "treatment": {}}
    problems: list[RowError] = []
    for column, cell in record.cells.items():
        value: Any = cell.strip()
        if not value:
            continue
        if column == "consent":
            if value.lower() not in CONSENT_WORDS:
                problems.append(
                    RowError(record.line, column, "must be true or false (yes/no, 1/0)")
                )
            value = CONSENT_WORDS.get(value.lower(), False)  # checked above; not "required"
        part, name = EVENT_FIELDS[column]
        event[part][name] = value
    return event, problems


# -- importing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Importer:
    """What enrolling needs: the database, the plans and the clinic, at one `now`."""

    engine: Engine
    plans: Mapping[str, Plan]
    clinic: Clinic
    now: datetime


def import_rows(
    importer: Importer,
    checked: Checked,
    *,
    progress: Callable[[int], None] = lambda done: None,
) -> Report:
    """Enrol every checked row whose treatment is not stored yet, a batch per
    transaction; `progress` hears how many rows are done after each batch. A dry run
    only reads.

    An unexpected error rolls back the batch it happened in and raises
    `ImportInterrupted` with the report of the batches committed before it."""
    report, rows = checked.report, checked.rows
    earlier: dict[str, tuple[str, str]] = {}  # treatment id -> (patient id, kind), this file
    for start in range(0, len(rows), BATCH_ROWS):
        batch = _Batch(importer, rows[start : start + BATCH_ROWS], earlier, report.dry_run)
        try:
            if report.dry_run:
                with reading(importer.engine) as session:
                    done = batch(session)
            else:
                done = retrying(importer.engine, batch)
        except (Exception, KeyboardInterrupt) as error:  # Ctrl-C too: say what was kept
            raise ImportInterrupted(report, batch.line, batch.rows[0].line, error) from error
        report.absorb(done)
        earlier.update(batch.listed)
        progress(start + len(batch.rows))
    report.errors.sort(key=lambda e: e.line)
    return report


@dataclass
class _Batch:
    """One transaction's rows; `listed` gathers the treatments it enrols, `line` is the
    row being enrolled (for an error's message)."""

    importer: Importer
    rows: Sequence[Row]
    earlier: Mapping[str, tuple[str, str]]  # treatments of earlier batches of the file
    dry_run: bool
    listed: dict[str, tuple[str, str]] = field(default_factory=dict)
    line: int = 0

    def __call__(self, session: Session) -> Report:
        self.listed.clear()  # a retried transaction starts the batch again
        done = Report()
        stored = _stored(session, [row.event.treatment.id for row in self.rows])
        for row in self.rows:
            self.line = row.line
            patient, treatment = row.event.patient, row.event.treatment
            known = (
                stored.get(treatment.id)
                or self.earlier.get(treatment.id)
                or self.listed.get(treatment.id)
            )
            if known == (patient.id, treatment.kind):
                done.skipped += 1
            elif known is not None:
                message = f"{treatment.id!r} is already stored for another patient or kind"
                done.errors.append(RowError(row.line, "treatment_id", message))
            else:
                self.listed[treatment.id] = (patient.id, treatment.kind)
                if self.dry_run:
                    done.imported += 1
                else:
                    self._enrol(session, row, done)
        return done

    def _enrol(self, session: Session, row: Row, done: Report) -> None:
        importer, treatment = self.importer, row.event.treatment
        enrolment = complete_treatment(
            session,
            importer.plans[treatment.kind],
            row.event.patient.details(),
            treatment.details(),
            importer.clinic,
            importer.now,
        )
        if not enrolment.created:  # stored since the look-up (by the webhook, say)
            done.skipped += 1
            return
        done.imported += 1
        if enrolment.treatment.status == TreatmentStatus.SUPERSEDED:
            done.superseded += 1
        elif not enrolment.patient.consented:
            done.without_consent += 1
        done.scheduled += len(enrolment.scheduled)
        done.expired += len(enrolment.expired)


def _stored(session: Session, treatment_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The given treatment ids already stored: id -> (patient id, kind)."""
    found = session.exec(
        select(Treatment.external_id, Patient.external_id, Treatment.kind)
        .join(Patient, col(Patient.id) == Treatment.patient_id)
        .where(col(Treatment.external_id).in_(treatment_ids))
    ).all()
    return {treatment: (patient, kind) for treatment, patient, kind in found}
