"""`aftercare import FILE.csv` (SPEC §12): past treatments enrolled in bulk, validated
as the booking webhook validates, idempotent, and never half-written."""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlmodel import Session, col, select

from notifier.booking import import_csv
from notifier.booking.event import Context
from notifier.booking.import_csv import (
    COLUMNS,
    REQUIRED,
    Importer,
    ImportInterrupted,
    Report,
    check_file,
    import_rows,
)
from notifier.booking.spreadsheet import Sheet, SheetError
from notifier.booking.spreadsheet import read_sheet as read_any_sheet
from notifier.cli import main
from notifier.planning.plan import load_plans
from notifier.progress import progress
from notifier.settings import Settings
from notifier.store.models import ConsentChange, Message, Patient, Status, Treatment
from tests.conftest import START, BookingSystem, Clock, completed_event
from tests.support.command import aftercare

HEADER = (
    "patient_id,first_name,phone,channel,language,timezone,consent,treatment_id,kind,performed_at"
)
SMP = "scalp_micropigmentation"
# 400 days before the tests' clock: every step of the plan is past but the yearly check-up.
LONG_AGO = START - timedelta(days=400)
PURE = Settings(database_url="sqlite://")  # for the tests that read files only


def row(n: int, at: datetime = LONG_AGO, **cells: str) -> str:
    """One CSV line for patient P-n / treatment T-n, with `cells` overriding columns."""
    values = {
        "patient_id": f"P-{n}",
        "first_name": "Omar",
        "phone": f"+9715012{n:05d}",
        "channel": "sms",
        "language": "en",
        "timezone": "Asia/Dubai",
        "consent": "true",
        "treatment_id": f"T-{n}",
        "kind": SMP,
        "performed_at": at.isoformat(),
        **cells,
    }
    return ",".join(values[column] for column in HEADER.split(","))


def sheet(*lines: str, header: str = HEADER) -> bytes:
    return "\n".join([header, *lines, ""]).encode()


def read_sheet(data: bytes) -> Sheet:
    return read_any_sheet(data, COLUMNS, REQUIRED)


def many(count: int, start: int = 1) -> bytes:
    return sheet(*(row(n) for n in range(start, start + count)))


def context_at(settings: Settings, now: datetime) -> Context:
    plans = load_plans(settings.plans_dir)
    return Context(now, frozenset(plans), settings.default_phone_region, settings.clinic_timezone)


def run_import(
    engine: Any, settings: Settings, data: bytes, now: datetime = START, *, dry_run: bool = False
) -> Report:
    """What `aftercare import` does, at `now`."""
    checked = check_file(data, context_at(settings, now), dry_run=dry_run)
    importer = Importer(engine, load_plans(settings.plans_dir), settings.clinic, now)
    return import_rows(importer, checked)


def stored(engine: Any) -> dict[str, list[tuple[str, int, str, datetime, datetime]]]:
    """Each treatment's messages: (step, occurrence, status, send_at, expires_at)."""
    with Session(engine) as session:
        found = session.exec(
            select(Treatment.external_id, Message)
            .join(Message, col(Message.treatment_id) == Treatment.id)
            .order_by(col(Message.send_at), col(Message.step), col(Message.occurrence))
        ).all()
    timelines: dict[str, list[tuple[str, int, str, datetime, datetime]]] = {}
    for treatment, m in found:
        item = (m.step, m.occurrence, m.status, m.send_at, m.expires_at)
        timelines.setdefault(treatment, []).append(item)
    return timelines


def treatment_ids(engine: Any) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(Treatment.external_id)).all())


def count(engine: Any, model: Any) -> int:
    with Session(engine) as session:
        return len(session.exec(select(model)).all())


# -- enrolment ---------------------------------------------------------------------------


def test_a_past_treatment_is_enrolled_exactly_as_a_late_webhook_enrolment(
    engine: Any, settings: Settings, booking: BookingSystem, clock: Clock
) -> None:
    report = run_import(engine, settings, sheet(row(1)), clock.now)
    webhook = completed_event(
        patient={"id": "P-2", "phone": "+971501200002"},
        treatment={"id": "T-2"},
        performed_at=LONG_AGO,
    )
    assert booking.post(webhook).status_code == 201

    timelines = stored(engine)
    assert timelines["T-1"] == timelines["T-2"]
    statuses = {(step, occurrence): status for step, occurrence, status, *_ in timelines["T-1"]}
    assert {s for (step, _), s in statuses.items() if step != "yearly_checkup"} == {Status.EXPIRED}
    assert statuses[("yearly_checkup", 0)] == Status.EXPIRED  # 2027-01-29, 30 days valid
    assert statuses[("yearly_checkup", 1)] == Status.SCHEDULED  # the next anniversary
    assert (report.imported, report.skipped, report.bad_rows) == (1, 0, 0)
    assert report.scheduled == 1
    assert report.expired == len(timelines["T-1"]) - 1


def test_a_recent_treatment_gets_its_remaining_steps(engine: Any, settings: Settings) -> None:
    report = run_import(engine, settings, sheet(row(1, START - timedelta(days=6))))
    timeline = stored(engine)["T-1"]
    steps = {(step, status) for step, _, status, *_ in timeline}
    assert ("water_rinse", Status.EXPIRED) in steps  # day 4, valid to the end of day 5
    assert ("moisturise", Status.SCHEDULED) in steps  # day 5, valid to the end of day 10
    assert ("yearly_checkup", Status.SCHEDULED) in steps
    assert report.scheduled == sum(status == Status.SCHEDULED for _, _, status, *_ in timeline)
    assert report.expired == sum(status == Status.EXPIRED for _, _, status, *_ in timeline)


def test_without_consent_the_patient_is_recorded_and_nothing_scheduled(
    engine: Any, settings: Settings
) -> None:
    report = run_import(engine, settings, sheet(row(1, consent="no")))
    assert report.without_consent == 1
    assert stored(engine) == {}
    with Session(engine) as session:
        patient = session.exec(select(Patient)).one()
        assert not patient.consented
        assert [c.source for c in session.exec(select(ConsentChange))] == ["booking"]


@pytest.mark.parametrize("later_first", [True, False], ids=["later first", "earlier first"])
def test_of_two_sessions_in_the_file_the_later_one_is_followed(
    engine: Any, settings: Settings, later_first: bool
) -> None:
    later = row(1, START - timedelta(days=100), treatment_id="T-later")
    earlier = row(1, START - timedelta(days=500), treatment_id="T-earlier")
    report = run_import(
        engine, settings, sheet(*([later, earlier] if later_first else [earlier, later]))
    )
    assert report.imported == 2
    assert report.superseded == (1 if later_first else 0)
    timelines = stored(engine)
    assert all(status != Status.SCHEDULED for _, _, status, *_ in timelines.get("T-earlier", []))
    assert any(status == Status.SCHEDULED for _, _, status, *_ in timelines["T-later"])
    with Session(engine) as session:
        statuses = dict(session.exec(select(Treatment.external_id, Treatment.status)).all())
    assert statuses == {"T-later": "active", "T-earlier": "superseded"}


def test_columns_may_come_in_any_order_and_optional_ones_may_be_left_out(
    engine: Any, settings: Settings
) -> None:
    data = (
        "performed_at,kind,treatment_id,consent,phone,patient_id\n"
        f"{LONG_AGO.isoformat()},{SMP},T-1,TRUE,050 123 4567,P-1\n"
    ).encode()
    report = run_import(engine, settings, data)
    assert report.imported == 1
    with Session(engine) as session:
        patient = session.exec(select(Patient)).one()
    assert (patient.phone, patient.channel, patient.language) == ("+971501234567", "sms", "en")
    assert patient.timezone == settings.clinic_timezone


# -- bad rows ---------------------------------------------------------------------------------

BAD_CELLS = [
    pytest.param({"phone": "12345"}, "phone", "is not a valid phone number", id="phone"),
    pytest.param({"phone": ""}, "phone", "is required", id="phone empty"),
    pytest.param({"patient_id": ""}, "patient_id", "is required", id="patient id empty"),
    pytest.param({"treatment_id": ""}, "treatment_id", "is required", id="treatment id empty"),
    pytest.param(
        {"performed_at": "2026-01-10T11:00:00"}, "performed_at", "needs a UTC offset", id="naive"
    ),
    pytest.param({"performed_at": "10/01/2026"}, "performed_at", "ISO 8601", id="date format"),
    pytest.param(
        {"performed_at": (START + timedelta(hours=1)).isoformat()},
        "performed_at",
        "is in the future",
        id="future",
    ),
    pytest.param(
        {"performed_at": (START - timedelta(days=3660)).isoformat()},
        "performed_at",
        "more than 10 years ago",
        id="too old",
    ),
    pytest.param({"kind": "tattoo"}, "kind", "no aftercare plan for 'tattoo'", id="kind"),
    pytest.param({"timezone": "Mars/Base"}, "timezone", "not an IANA timezone", id="timezone"),
    pytest.param({"channel": "fax"}, "channel", "must be one of 'sms' or 'whatsapp'", id="channel"),
    pytest.param({"language": "english!"}, "language", "language tag", id="language"),
    pytest.param({"consent": "maybe"}, "consent", "must be true or false", id="consent"),
    pytest.param({"consent": ""}, "consent", "is required", id="consent empty"),
    pytest.param({"first_name": "x" * 101}, "first_name", "at most 100", id="long name"),
]


@pytest.mark.parametrize(("cells", "column", "message"), BAD_CELLS)
def test_a_bad_cell_is_listed_with_its_line_and_column(
    cells: dict[str, str], column: str, message: str
) -> None:
    data = sheet(row(1), row(2, **cells), row(3))
    checked = check_file(data, context_at(PURE, START))
    assert [(e.line, e.column) for e in checked.report.errors] == [(3, column)]
    assert message in checked.report.errors[0].message
    assert [r.line for r in checked.rows] == [2, 4]


def test_every_bad_field_of_every_bad_row_is_listed_and_the_good_rows_are_imported(
    engine: Any, settings: Settings
) -> None:
    data = sheet(
        row(1),
        row(2, phone="12345", kind="tattoo", consent="maybe"),
        row(3),
        row(4, timezone="Nowhere/City") + ",extra",
        row(5, performed_at="yesterday"),
    )
    report = run_import(engine, settings, data)
    assert [str(e) for e in report.errors] == [
        "line 3: consent: must be true or false (yes/no, 1/0)",
        "line 3: phone: is not a valid phone number (national numbers are read as AE)",
        "line 3: kind: no aftercare plan for 'tattoo' (known: scalp_micropigmentation)",
        "line 5: (row): has 11 fields, the header names 10",
        "line 6: performed_at: expected an ISO 8601 date-time with an offset",
    ]
    assert (report.read, report.imported, report.bad_rows) == (5, 2, 3)
    assert treatment_ids(engine) == {"T-1", "T-3"}
    assert "3 bad row(s), listed above, were not imported" in "\n".join(report.lines())


def test_a_row_with_too_few_fields_is_a_bad_row() -> None:
    checked = check_file(sheet(row(1), "P-2,Omar,+971501200002"), context_at(PURE, START))
    assert [str(e) for e in checked.report.errors] == [
        "line 3: (row): has 3 fields, the header names 10"
    ]


def test_a_treatment_id_stored_for_another_patient_is_a_bad_row(
    engine: Any, settings: Settings, booking: BookingSystem
) -> None:
    assert booking.post(completed_event(performed_at=LONG_AGO)).status_code == 201  # T-555
    before = stored(engine)
    report = run_import(engine, settings, sheet(row(1, treatment_id="T-555"), row(2)))
    assert [str(e) for e in report.errors] == [
        "line 2: treatment_id: 'T-555' is already stored for another patient or kind"
    ]
    assert stored(engine)["T-555"] == before["T-555"]
    assert treatment_ids(engine) == {"T-555", "T-2"}


def test_a_treatment_listed_twice_is_imported_once(engine: Any, settings: Settings) -> None:
    data = sheet(row(1), row(1), row(2, treatment_id="T-1"))
    report = run_import(engine, settings, data)
    assert (report.imported, report.skipped) == (1, 1)
    assert [str(e) for e in report.errors] == [
        "line 4: treatment_id: 'T-1' is already stored for another patient or kind"
    ]


# -- idempotency and crashes ---------------------------------------------------------------


def test_a_second_run_adds_nothing_and_says_so(engine: Any, settings: Settings) -> None:
    data = many(30)
    first = run_import(engine, settings, data)
    timelines = stored(engine)
    second = run_import(engine, settings, data, START + timedelta(days=1))
    assert (first.imported, second.imported, second.skipped) == (30, 0, 30)
    assert stored(engine) == timelines
    assert second.lines()[-1] == "nothing new: every valid row's treatment was already stored"


def test_a_second_run_never_undoes_what_the_booking_system_sent_since(
    engine: Any, settings: Settings, booking: BookingSystem, clock: Clock
) -> None:
    data = sheet(row(1001, phone="+971501234567", treatment_id="T-555", patient_id="P-1001"))
    run_import(engine, settings, data, clock.now)
    new_number = {"id": "P-1001", "phone": "+971509999999"}
    update = {"id": "evt_upd", "type": "patient.updated", "patient": new_number}
    assert booking.post(update).status_code == 200
    run_import(engine, settings, data, clock.now)
    with Session(engine) as session:
        assert session.exec(select(Patient.phone)).one() == "+971509999999"


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(import_csv, "BATCH_ROWS", 10)
    return 10


def test_a_row_that_raises_half_way_leaves_every_row_wholly_imported_or_not_at_all(
    engine: Any, settings: Settings, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 25 raises after its patient, treatment and messages were written: its batch
    (rows 21-30, lines 22-31) rolls back, the two batches before it stay, nothing after
    it is tried, and a second run imports the rest."""
    real = import_csv.complete_treatment

    def crashing(session: Session, plan: Any, who: Any, *args: Any) -> Any:
        enrolment = real(session, plan, who, *args)
        session.flush()
        if who.external_id == "P-25":
            raise RuntimeError("the disk is full")
        return enrolment

    monkeypatch.setattr(import_csv, "complete_treatment", crashing)
    data = many(40)
    with pytest.raises(ImportInterrupted) as stopped:
        run_import(engine, settings, data)
    assert (stopped.value.line, stopped.value.first_line) == (26, 22)
    assert stopped.value.report.imported == 20
    assert "rows before line 22 are imported, none from there on" in str(stopped.value)
    assert treatment_ids(engine) == {f"T-{n}" for n in range(1, 21)}
    assert count(engine, Patient) == 20
    timelines = stored(engine)
    assert all(len(timelines[f"T-{n}"]) == len(timelines["T-1"]) for n in range(1, 21))

    monkeypatch.setattr(import_csv, "complete_treatment", real)
    again = run_import(engine, settings, data)
    assert (again.imported, again.skipped) == (20, 20)
    assert treatment_ids(engine) == {f"T-{n}" for n in range(1, 41)}


def test_a_treatment_enrolled_meanwhile_by_another_process_is_counted_once(
    engine: Any, settings: Settings, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process enrols T-5 between the batch's look-up and the row: the row finds
    it stored, and the import counts it as skipped, not imported."""
    real, fired = import_csv.complete_treatment, []

    def racing(session: Session, plan: Any, who: Any, what: Any, *args: Any) -> Any:
        if what.external_id == "T-5" and not fired:
            fired.append(True)
            run_import(engine, settings, sheet(row(5)))  # another process, committed first
        return real(session, plan, who, what, *args)

    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: the other process would wait for this batch")
    monkeypatch.setattr(import_csv, "complete_treatment", racing)
    report = run_import(engine, settings, many(10))
    assert (report.imported, report.skipped) == (9, 1)
    assert treatment_ids(engine) == {f"T-{n}" for n in range(1, 11)}


def test_a_dry_run_writes_nothing_and_says_what_would_be_imported(
    engine: Any, settings: Settings
) -> None:
    run_import(engine, settings, many(3))
    before = stored(engine)
    data = sheet(*(row(n) for n in range(1, 6)), row(6, phone="1"), row(2, treatment_id="T-4"))
    report = run_import(engine, settings, data, dry_run=True)
    assert (report.imported, report.skipped, report.bad_rows) == (2, 3, 2)
    assert report.lines()[:2] == [
        "7 row(s) read: would import 2, 3 already stored (skipped), 2 bad",
        "dry run: nothing was written",
    ]
    assert stored(engine) == before
    assert count(engine, Patient) == 3


# -- files -------------------------------------------------------------------------------------

BAD_FILES = [
    pytest.param(b"", "the file is empty", id="empty"),
    pytest.param(b" \r\n\n", "the file is empty", id="blank lines"),
    pytest.param(HEADER.encode() + b"\r\n", "no rows below the header", id="header only"),
    pytest.param(
        codecs.BOM_UTF16_LE + sheet(row(1)).decode().encode("utf-16-le"), "UTF-16", id="utf-16"
    ),
    pytest.param(
        codecs.BOM_UTF32_LE + sheet(row(1)).decode().encode("utf-32-le"), "UTF-32", id="utf-32"
    ),
    pytest.param(
        sheet(row(1), row(2, first_name="Zo\xe9")).replace("Zoé".encode(), b"Zo\xe9"),
        "line 3: byte 0xE9 is not UTF-8: save it from the spreadsheet as 'CSV UTF-8'",
        id="latin-1",
    ),
    pytest.param(b"PK\x03\x04\x14\x00\x06\x00" + bytes(40), "workbook (.xlsx)", id="xlsx"),
    pytest.param(sheet(row(1)) + b"\x00\x00", "line 3: a NUL byte", id="nul"),
    pytest.param(b'{"patient_id": "P-1"}\n', "unknown column(s)", id="json"),
    pytest.param(
        sheet(row(1), header=HEADER.replace("phone", "mobile")),
        "unknown column(s) 'mobile'; missing required column(s) phone",
        id="renamed column",
    ),
    pytest.param(
        sheet(row(1) + ",T-1", header=HEADER + ",treatment_id"),
        "column(s) named twice: treatment_id",
        id="repeated column",
    ),
    pytest.param(sheet(row(1), 'P-2,"Omar'), "line 3: not CSV", id="unclosed quote"),
]


@pytest.mark.parametrize(("data", "message"), BAD_FILES)
def test_a_file_that_cannot_be_read_is_refused_whole(data: bytes, message: str) -> None:
    with pytest.raises(SheetError) as refused:
        read_sheet(data)
    assert message in str(refused.value)


GOOD_SHAPES = [
    pytest.param(lambda text: text.encode("utf-8-sig"), id="utf-8 byte order mark"),
    pytest.param(lambda text: text.replace("\n", "\r\n").encode(), id="windows line endings"),
    pytest.param(lambda text: text.replace(",", ";").encode(), id="semicolons"),
    pytest.param(lambda text: text.replace(",", "\t").encode(), id="tabs"),
    pytest.param(lambda text: (text + ",,,,,,,,,\n\n").encode(), id="empty rows at the end"),
    pytest.param(lambda text: text.upper().replace("T-", "t-").encode(), id="upper-case header"),
]


@pytest.mark.parametrize("shape", GOOD_SHAPES)
def test_what_spreadsheets_save_is_read(shape: Callable[[str], bytes]) -> None:
    text = "\n".join([HEADER, row(1), row(2)]) + "\n"
    found = read_sheet(shape(text))
    assert found.columns == tuple(HEADER.split(","))
    assert [r.cells["patient_id"].upper() for r in found.records] == ["P-1", "P-2"]
    assert found.errors == []


def test_line_numbers_count_the_lines_of_a_quoted_cell() -> None:
    data = sheet(row(1, first_name='"Omar\nAl Said"'), row(2, phone="1"))
    checked = check_file(data, context_at(PURE, START))
    assert [str(e)[:16] for e in checked.report.errors] == ["line 4: phone: i"]


# -- the command ---------------------------------------------------------------------------------


def invoke(url: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["import", *args], env={"DATABASE_URL": url})
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize(("data", "message"), BAD_FILES)
def test_the_command_refuses_a_bad_file_with_one_clear_line(
    sqlite_url: str, tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes(data)
    result = invoke(sqlite_url, str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: ")
    assert message in result.stderr
    assert isinstance(result.exception, SystemExit)


def test_the_command_imports_lists_bad_rows_and_exits_1(database_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    path = tmp_path / "patients.csv"
    path.write_bytes(sheet(row(1, now - timedelta(days=40)), row(2, now, phone="12345")))
    result = invoke(database_url, str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "line 3: phone: is not a valid phone number (national numbers are read as AE)"
    ]
    assert "import: 2 row(s) read: imported 1, 0 already stored (skipped), 1 bad" in result.stdout
    assert "importing: 1 of 1 (100%)" in result.stdout  # not a terminal: plain lines

    path.write_bytes(sheet(row(1, now - timedelta(days=40))))
    again = invoke(database_url, str(path))
    assert again.exit_code == 0, again.output
    assert "nothing new" in again.stdout
    dry = invoke(database_url, str(path), "--dry-run")
    assert "would import 0, 1 already stored" in dry.stdout


def test_the_installed_command_runs_without_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    path = tmp_path / "patients.csv"
    path.write_bytes(sheet(*(row(n, now - timedelta(days=n)) for n in range(1, 251))))
    done = aftercare("import", str(path), env={"DATABASE_URL": sqlite_url})
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("importing")] == [
        "importing: 100 of 250 (40%)",
        "importing: 200 of 250 (80%)",
        "importing: 250 of 250 (100%)",
    ]
    assert "import: 250 row(s) read: imported 250" in done.stdout
    path.write_bytes(b"\xff\xfe")
    refused = aftercare("import", str(path), env={"DATABASE_URL": sqlite_url})
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: {path}: the file is UTF-16 text, not UTF-8: "
        "save it from the spreadsheet as 'CSV UTF-8'"
    )
    assert "Traceback" not in refused.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar_and_a_pipe_plain_lines() -> None:
    screen, pipe = Terminal(), io.StringIO()
    for out in (screen, pipe):
        with progress(1000, "importing", out) as told:
            for done in range(100, 1001, 100):
                told(done)
    assert "━" in screen.getvalue()
    assert "1000/1000" in screen.getvalue()
    assert pipe.getvalue().splitlines() == [
        f"importing: {n:,} of 1,000 ({n // 10}%)" for n in range(100, 1001, 100)
    ]
