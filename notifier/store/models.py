"""The tables: patients, treatments, the message outbox, booking events, consent log.

Every datetime is an aware UTC instant (`UTCDateTime`); local time exists only in
the schedule's arithmetic and in what the CLI shows.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel, col

from notifier.store.db import EnumText, UTCDateTime


def _utc(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


def _enum(enum: type[StrEnum], default: StrEnum | None = None) -> Column[Any]:
    """A `StrEnum` column; `default` also fills rows inserted without the ORM."""
    return Column(EnumText(enum, 16), nullable=False, default=default)


class Channel(StrEnum):
    SMS = "sms"
    WHATSAPP = "whatsapp"


class Status(StrEnum):
    """A message's life (SPEC §6). Status callbacks only move it forward."""

    SCHEDULED = "scheduled"
    SENDING = "sending"  # claimed by a worker, under a lease
    QUEUED = "queued"  # Twilio accepted it; SID stored
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    READ = "read"
    CANCELLED = "cancelled"
    HELD = "held"  # patient opted out; may resume
    EXPIRED = "expired"


PENDING = (Status.SCHEDULED, Status.HELD)
WENT_OUT = (Status.QUEUED, Status.SENT, Status.DELIVERED, Status.UNDELIVERED, Status.READ)


class MessageKind(StrEnum):
    """Why a row is in the outbox."""

    PLAN = "plan"  # a step of the patient's aftercare plan
    ACKNOWLEDGEMENT = "acknowledgement"  # to a patient whose reply looked urgent
    ALERT = "alert"  # to an on-call number, about an urgent reply


class TreatmentStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # a later session of the same kind restarted the plan


class Patient(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(max_length=128, unique=True, index=True)  # the booking system's id
    first_name: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=20, index=True)  # E.164
    channel: str = Field(default="sms", max_length=16)
    language: str = Field(default="en", max_length=16)
    timezone: str = Field(max_length=64)
    consented: bool = True  # the clinic recorded the patient's consent
    opted_out: bool = False  # the patient said STOP (only START lifts it)
    # The patient's last WhatsApp message: free text may be sent for 24 hours after it.
    whatsapp_inbound_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())

    @property
    def reachable(self) -> bool:
        return self.consented and not self.opted_out and self.phone is not None


class Treatment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(max_length=128, unique=True, index=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    kind: str = Field(max_length=64)
    performed_at: datetime = Field(sa_column=_utc())
    status: str = Field(default=TreatmentStatus.ACTIVE, max_length=16)
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())


class Message(SQLModel, table=True):
    """One planned message: the outbox row the dispatcher claims and sends."""

    __table_args__ = (
        Index("ix_message_due", "status", "send_at"),
        Index("ix_message_expiry", "status", "expires_at"),
        # Only the pending rows, in expiry order: "the first N expired" stays an index
        # range even though the planner, seeing mostly past history, expects thousands.
        Index(
            "ix_message_pending_expiry",
            "expires_at",
            postgresql_where=text("status IN ('scheduled', 'held')"),
            sqlite_where=text("status IN ('scheduled', 'held')"),
        ),
        # The bodies still kept, by last change: retention (`notifier.consent.retention`) walks
        # it from where it stopped, so an hourly run reads only what fell past its cutoff.
        Index(
            "ix_message_retention",
            "updated_at",
            "id",
            postgresql_where=text("body IS NOT NULL"),
            sqlite_where=text("body IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    # The plan's treatment; for an acknowledgement or alert, the patient's latest one.
    treatment_id: int = Field(foreign_key="treatment.id", index=True)
    kind: MessageKind = Field(
        default=MessageKind.PLAN, sa_column=_enum(MessageKind, MessageKind.PLAN)
    )
    # The urgent reply an acknowledgement or alert is about.
    reply_id: int | None = Field(default=None, foreign_key="reply.id", index=True)
    # An alert's on-call number (E.164); None: the patient's own number.
    recipient: str | None = Field(default=None, max_length=20)
    step: str = Field(max_length=64)
    occurrence: int = 0  # which repeat of the step (0 = first)
    channel: Channel = Field(sa_column=_enum(Channel))  # the channel it goes (or went) by
    language: str = Field(default="en", max_length=16)  # the language it was rendered in
    body: str | None = None  # rendered when scheduled; None once erased
    content_sid: str | None = Field(default=None, max_length=34)  # sent as this template
    fallback_reason: str | None = Field(default=None, max_length=255)  # why not WhatsApp
    send_at: datetime = Field(sa_column=_utc())
    expires_at: datetime = Field(sa_column=_utc())
    window_start: int  # minutes after local midnight, frozen with the text
    window_end: int
    status: Status = Field(default=Status.SCHEDULED, sa_column=_enum(Status, Status.SCHEDULED))
    sid: str | None = Field(default=None, max_length=64, unique=True)
    error_code: int | None = None
    error_message: str | None = Field(default=None, max_length=255)
    attempts: int = 0
    claimed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())

    @property
    def any_hour(self) -> bool:
        """An acknowledgement or on-call alert goes at once, at any hour: no send window
        or quiet hours hold it (SPEC §3, §10). A plan message keeps to them."""
        return self.kind != MessageKind.PLAN


class BookingEvent(SQLModel, table=True):
    """A processed booking webhook event, kept so a replay gets the same answer."""

    id: str = Field(primary_key=True, max_length=128)
    # The booking system's ids the answer is about, so erasure can find it.
    patient_id: str | None = Field(default=None, max_length=128, index=True)
    treatment_id: str | None = Field(default=None, max_length=128, index=True)
    fingerprint: str = Field(max_length=64)  # sha256 of the canonical JSON body
    status_code: int
    response: str  # the JSON answer we gave
    received_at: datetime = Field(sa_column=_utc())


class ConsentChange(SQLModel, table=True):
    """Every change of a patient's consent, with when and who."""

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    at: datetime = Field(sa_column=_utc())
    consented: bool
    source: str = Field(max_length=32)  # booking, keyword, twilio_21610, staff
    by: str | None = Field(default=None, max_length=64)  # the staff token's name, for staff
    # The plan step of the last message the patient had been sent by then (what made
    # them stop?), kept so the overview counts by step without searching for it.
    after_step: str | None = Field(default=None, max_length=64)


class Reply(SQLModel, table=True):
    """An inbound message that is not a keyword: something for staff to read."""

    __table_args__ = (
        # The texts still kept, by arrival: what retention walks (see `Message`).
        Index(
            "ix_reply_retention",
            "received_at",
            "id",
            postgresql_where=text("body IS NOT NULL"),
            sqlite_where=text("body IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    sid: str = Field(max_length=64, unique=True)  # Twilio's MessageSid: one row per message
    patient_id: int | None = Field(default=None, foreign_key="patient.id", index=True)
    from_phone: str | None = Field(default=None, max_length=20)  # E.164; None once erased
    channel: str = Field(default="sms", max_length=16)
    body: str | None = None  # None once erased
    received_at: datetime = Field(sa_column=_utc())
    handled: bool = Field(default=False, index=True)
    handled_by: str | None = Field(default=None, max_length=64)  # the staff member's name
    handled_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # The plan step of the last message the patient had been sent when it arrived.
    after_step: str | None = Field(default=None, max_length=64)
    # Triage when it arrived (`notifier.replies.triage`): urgent ones come first.
    urgent: bool = Field(default=False, index=True)
    category: str = Field(default="other", max_length=16)
    signs: str | None = Field(default=None, max_length=255)  # why urgent, comma-separated


class ReplyMedia(SQLModel, table=True):
    """A photo (or other file) a reply carried: where Twilio keeps it, and its type."""

    __table_args__ = (UniqueConstraint("reply_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    reply_id: int = Field(foreign_key="reply.id", index=True)
    position: int  # N of Twilio's MediaUrlN
    url: str = Field(max_length=1024)  # Twilio's URL: fetched with the account's credentials
    content_type: str = Field(max_length=128)


class StatusCallback(SQLModel, table=True):
    """Every delivery status Twilio reported, kept even before the message's SID is known."""

    __table_args__ = (
        # The callbacks still waiting for their message, which every dispatch pass reads:
        # a few, among all the matched ones of the last day.
        Index(
            "ix_statuscallback_unmatched",
            "received_at",
            postgresql_where=text("message_id IS NULL"),
            sqlite_where=text("message_id IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    sid: str = Field(max_length=64, index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    status: str = Field(max_length=32)
    error_code: int | None = None
    received_at: datetime = Field(sa_column=_utc(index=True))


class RedactionStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # Twilio kept refusing for REDACTION_GIVE_UP: staff must look


class Redaction(SQLModel, table=True):
    """A message of an erased patient (or one past retention) that Twilio still keeps: its
    body is to be redacted there (and, for a reply, the photos deleted), retried until
    Twilio has done it."""

    __table_args__ = (
        Index(
            "ix_redaction_due",
            "next_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # An erasure's redactions go before retention's, however many those are.
        Index(
            "ix_redaction_erasure_due",
            "next_at",
            postgresql_where=text("status = 'pending' AND erasure"),
            sqlite_where=text("status = 'pending' AND erasure"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The erased (anonymous) row, or whose message went past retention; None for a reply
    # from a number no patient had.
    patient_id: int | None = Field(default=None, foreign_key="patient.id", index=True)
    sid: str = Field(max_length=64, unique=True)  # Twilio's SID of the message or reply
    inbound: bool = False  # a reply: the photos it carried are deleted too
    erasure: bool = False  # asked for by `patient.erased` (else by retention): goes first
    status: str = Field(default=RedactionStatus.PENDING, max_length=16)
    attempts: int = 0
    next_at: datetime = Field(sa_column=_utc())
    error: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(sa_column=_utc())
    done_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class EventStatus(StrEnum):
    PENDING = "pending"  # to be delivered, at `next_at`
    SENDING = "sending"  # a worker is posting it, under a lease
    DELIVERED = "delivered"
    DROPPED = "dropped"  # older than the maximum age, never delivered


class Event(SQLModel, table=True):
    """An event for the booking system (SPEC §12), written with the change it reports
    and posted by the worker: at least once, in order per patient."""

    __table_args__ = (
        Index(
            "ix_event_due",
            "next_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # Each patient's events not yet settled, oldest first: who goes next.
        Index(
            "ix_event_open",
            "patient_id",
            "id",
            postgresql_where=text("status IN ('pending', 'sending')"),
            sqlite_where=text("status IN ('pending', 'sending')"),
        ),
        Index("ix_event_created", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)  # the order events happened in
    event_id: str = Field(max_length=40, unique=True)  # the `id` a receiver de-duplicates by
    type: str = Field(max_length=32)
    patient_id: int = Field(foreign_key="patient.id")  # whose: one patient's go in order
    payload: str  # the JSON body, signed and posted as it is
    status: EventStatus = Field(
        default=EventStatus.PENDING, sa_column=_enum(EventStatus, EventStatus.PENDING)
    )
    attempts: int = 0
    next_at: datetime = Field(sa_column=_utc())
    lease_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    error: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(sa_column=_utc())
    delivered_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


# -- tallies: the overview's counts, kept by the database itself ---------------------
#
# Triggers (migration 0013, `notifier.store.tally`) write a change row for every
# message and reply inserted, deleted, or moved to another count, so no code path can
# forget one; the worker folds the changes into the tallies. Counts are per quarter
# hour (UTC), so they add up to exact local days in every time zone.


def _quarter() -> Column[datetime]:
    return Column(UTCDateTime(), primary_key=True)


class MessageTally(SQLModel, table=True):
    """How many messages have their send time in a quarter hour, by kind, status,
    channel and step."""

    quarter: datetime = Field(sa_column=_quarter())
    kind: str = Field(max_length=16, primary_key=True)
    status: str = Field(max_length=16, primary_key=True)
    channel: str = Field(max_length=16, primary_key=True)
    step: str = Field(max_length=64, primary_key=True)
    n: int


class MessageTallyChange(SQLModel, table=True):
    """+1 or -1 on a `MessageTally` count, written by a trigger, not yet folded in."""

    id: int | None = Field(default=None, primary_key=True)
    quarter: datetime = Field(sa_column=_utc())
    kind: str = Field(max_length=16)
    status: str = Field(max_length=16)
    channel: str = Field(max_length=16)
    step: str = Field(max_length=64)
    n: int


class ReplyTally(SQLModel, table=True):
    """How many replies from patients arrived in a quarter hour after each plan step."""

    quarter: datetime = Field(sa_column=_quarter())
    step: str = Field(max_length=64, primary_key=True)
    n: int


class ReplyTallyChange(SQLModel, table=True):
    """+1 or -1 on a `ReplyTally` count, not yet folded in."""

    id: int | None = Field(default=None, primary_key=True)
    quarter: datetime = Field(sa_column=_utc())
    step: str = Field(max_length=64)
    n: int


# -- the staff dashboard (`notifier.staff`, `webhooks.dashboard`) ---------------------


class StaffAccount(SQLModel, table=True):
    """A person who signs in to the dashboard (`aftercare staff add NAME`)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)  # recorded with every change they make
    password_hash: str = Field(max_length=255)  # argon2id, with its parameters and salt
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())  # last password change
    last_login_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class LoginThrottle(SQLModel, table=True):
    """Failed sign-ins of one account name or one address: each beyond the first few
    makes the next attempt wait longer (`notifier.staff.throttle`)."""

    key: str = Field(primary_key=True, max_length=128)  # "account:NAME" or "address:IP"
    failures: int = 0
    last_failure_at: datetime = Field(sa_column=_utc())
    blocked_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


# The inbox: unhandled replies, urgent first, newest first, read as an index range.
Index(
    "ix_reply_inbox",
    col(Reply.urgent),
    col(Reply.received_at),
    col(Reply.id),
    postgresql_where=text("NOT handled"),
    sqlite_where=text("handled = 0"),  # as SQLAlchemy writes `not_(handled)` there
)
# Every reply, urgent first, then newest (the staff API's list, handled or not).
Index("ix_reply_urgent_newest", col(Reply.urgent), col(Reply.received_at), col(Reply.id))
# The delivery problems of the last days, by last change; counted by cause from the
# index alone.
Index(
    "ix_message_problems",
    col(Message.updated_at),
    col(Message.status),
    col(Message.error_code),
    postgresql_where=text("status IN ('failed', 'undelivered', 'expired')"),
    sqlite_where=text("status IN ('failed', 'undelivered', 'expired')"),
)
# The overview's opt-out and reply rates per step: the last days' rows, read from the
# index alone.
Index("ix_reply_received_step", col(Reply.received_at), col(Reply.after_step))
Index(
    "ix_consentchange_stops",
    col(ConsentChange.at),
    col(ConsentChange.after_step),
    postgresql_where=text("NOT consented"),
    sqlite_where=text("consented = 0"),
)
