"""Aftercare plans: TOML files in `config/plans/`, parsed into small typed objects.

A plan is data a clinic edits. Every problem in a file is reported at once, each
naming the file and the step, so `aftercare plan check` is a useful editor loop.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Any

PLACEHOLDERS = frozenset({"first_name", "clinic_name", "clinic_phone"})
DEFAULT_SEND_TIME = time(10, 0)
DEFAULT_WINDOW = (time(9, 0), time(20, 0))

_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_STEP_FIELDS = frozenset(
    {
        "key",
        "after",
        "day",
        "yearly",
        "at",
        "send_window",
        "every_days",
        "until_day",
        "valid_until_day",
        "valid_for",
        "text",
    }
)
_PLAN_FIELDS = frozenset(
    {
        "kind",
        "name",
        "default_language",
        "languages",
        "send_time",
        "send_window",
        "default_name",
        "steps",
    }
)


class PlanError(Exception):
    """One or more problems in plan files; `problems` lists each with its place."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_rules(path: Path, what: str, error: type[PlanError]) -> str:
    """The text of a rules file that plans' languages must cover (keywords, triage);
    `error` (a PlanError kind) names the file when it cannot be read."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as failure:
        raise error([f"{path}: cannot read the {what} file ({failure.strerror})"]) from None
    except UnicodeDecodeError:
        raise error([f"{path}: not UTF-8 text"]) from None


def parse_rules(
    text: str, source: str, needed: Mapping[str, str], error: type[PlanError]
) -> tuple[dict[str, Any], list[str]]:
    """A rules file's TOML, and a problem for each language a plan carries (`needed`:
    language -> plan kind) that it has no table for."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as failure:
        raise error([f"{source}: not valid TOML: {failure}"]) from None
    missing = [
        f"no [{lang}] table, but plan {kind!r} carries language {lang!r}"
        for lang, kind in needed.items()
        if lang not in data
    ]
    return data, missing


def read_template(
    where: str, raw: object, known: frozenset[str], problems: list[str]
) -> tuple[str, set[str]]:
    """A one-line text of a rules file with `{placeholders}` (an answer, an alert): the
    text stripped and the placeholders it uses; what is wrong goes to `problems`, each
    naming `where` (an empty text and no placeholders then)."""
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{where} is missing")
        return "", set()
    try:
        used = {n for _, n, _, _ in string.Formatter().parse(raw) if n is not None}
    except ValueError as error:
        problems.append(f"{where}: broken braces ({error}); write {{{{ or }}}} for a brace")
        return "", set()
    names = ", ".join(sorted(known))
    for unknown in sorted(used - known):
        problems.append(f"{where}: unknown placeholder {{{unknown}}} (known: {names})")
    return raw.strip(), used


def languages_needed(plans: Mapping[str, Plan]) -> dict[str, str]:
    """Each language a plan carries, and (the first) plan that carries it."""
    return {lang: kind for kind, plan in sorted(plans.items()) for lang in plan.languages}


@dataclass(frozen=True)
class Window:
    """The local hours a message may go out in: start inclusive, end exclusive."""

    start: time
    end: time


@dataclass(frozen=True)
class Step:
    """One instruction of a plan and when it goes out.

    Exactly one anchor is set: `after` (relative to the treatment), `day`
    (a local time on day N), or `yearly` (each anniversary of the treatment day).
    """

    key: str
    after: timedelta | None
    day: int | None
    yearly: bool
    at: time  # local send time for day-N and yearly steps
    window: Window
    every_days: int | None  # repeat a day-N step every N days ...
    until_day: int | None  # ... through this day
    valid_until_day: int | None  # valid through the end of this local day
    valid_for: timedelta | None  # or for this long after each planned time
    text: dict[str, str]


@dataclass(frozen=True)
class Plan:
    kind: str
    name: str
    default_language: str
    languages: tuple[str, ...]
    default_name: dict[str, str]
    steps: tuple[Step, ...]
    source: str

    def step(self, key: str) -> Step | None:
        return next((s for s in self.steps if s.key == key), None)

    def language_for(self, wanted: str) -> str:
        """The patient's language if the plan has it, else the plan's default."""
        return wanted if wanted in self.languages else self.default_language

    def render(self, step: Step, language: str, values: dict[str, str]) -> str:
        """The step's text in `language` (or the default), placeholders filled."""
        lang = self.language_for(language)
        return step.text[lang].format_map(self.fill(lang, values))

    def fill(self, language: str, values: dict[str, str]) -> dict[str, str]:
        """Placeholder values, a missing first name replaced by the plan's word for it."""
        fields = dict(values)
        if not fields.get("first_name"):
            fields["first_name"] = self.default_name.get(self.language_for(language), "")
        return fields


def load_plans(directory: Path) -> dict[str, Plan]:
    """Every `*.toml` plan in `directory`, keyed by kind; `PlanError` lists all problems."""
    problems: list[str] = []
    plans: dict[str, Plan] = {}
    files = sorted(directory.glob("*.toml")) if directory.is_dir() else []
    if not files:
        raise PlanError([f"{directory}: no plan files (*.toml) found"])
    for path in files:
        try:
            plan = parse_plan(path.read_bytes().decode("utf-8"), source=str(path))
        except PlanError as error:
            problems.extend(error.problems)
            continue
        except UnicodeDecodeError:
            problems.append(f"{path}: not UTF-8 text")
            continue
        if plan.kind in plans:
            problems.append(
                f"{path}: kind {plan.kind!r} is already defined by {plans[plan.kind].source}"
            )
        elif plan.kind != path.stem:
            problems.append(f"{path}: kind {plan.kind!r} must match the file name {path.stem!r}")
        else:
            plans[plan.kind] = plan
    if problems:
        raise PlanError(problems)
    return plans


def parse_plan(text: str, source: str) -> Plan:
    """Parse and validate one plan file's text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PlanError([f"{source}: not valid TOML: {error}"]) from None
    return _PlanReader(data, source).read()


class _PlanReader:
    """Reads one plan's TOML data, collecting every problem instead of stopping."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}{message}")

    def read(self) -> Plan:
        data = self.data
        self._unknown(data, _PLAN_FIELDS, "")
        kind = self._string(data, "kind", "")
        default_language = data.get("default_language", "en")
        if not isinstance(default_language, str) or not _KEY.match(default_language):
            self.problem("", "default_language must be a language tag such as 'en'")
            default_language = "en"
        languages = data.get("languages", [default_language])
        if not (
            isinstance(languages, list) and languages and all(isinstance(x, str) for x in languages)
        ):
            self.problem("", "languages must be a list of language tags")
            languages = [default_language]
        if default_language not in languages:
            self.problem("", f"default_language {default_language!r} is not in languages")
        send_time = self._time(data, "send_time", "", DEFAULT_SEND_TIME)
        window = self._window(data, "", Window(*DEFAULT_WINDOW))
        steps = self._steps(data.get("steps"), tuple(languages), send_time, window)
        default_name = data.get("default_name", {})
        if not isinstance(default_name, dict):
            self.problem("", "default_name must be a table of language = text")
            default_name = {}
        if self.problems:
            raise PlanError(self.problems)
        return Plan(
            kind=kind,
            name=str(data.get("name") or kind),
            default_language=default_language,
            languages=tuple(languages),
            default_name=default_name,
            steps=steps,
            source=self.source,
        )

    def _steps(
        self, raw: object, languages: tuple[str, ...], send_time: time, window: Window
    ) -> tuple[Step, ...]:
        if not isinstance(raw, list) or not raw:
            self.problem("", "a plan needs at least one [[steps]] entry")
            return ()
        steps: list[Step] = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                self.problem(f"steps[{index}]: ", "must be a table")
                continue
            step = self._step(item, index, languages, send_time, window)
            if step is not None and any(s.key == step.key for s in steps):
                self.problem(f"step {step.key!r}: ", "key is used twice")
            elif step is not None:
                steps.append(step)
        return tuple(steps)

    def _step(
        self,
        item: dict[str, Any],
        index: int,
        languages: tuple[str, ...],
        send_time: time,
        window: Window,
    ) -> Step | None:
        key = item.get("key")
        where = f"step {key!r}: " if isinstance(key, str) else f"steps[{index}]: "
        before = len(self.problems)
        if not isinstance(key, str) or not _KEY.match(key):
            self.problem(where, "key must be lower_snake_case letters, digits and _")
        self._unknown(item, _STEP_FIELDS, where)
        after = self._duration(item, "after", where)
        day = self._int(item, "day", where, low=0)
        yearly = item.get("yearly", False) is True
        if sum(x is not None and x is not False for x in (after, day, yearly or None)) != 1:
            self.problem(where, "set exactly one of after, day or yearly")
        every_days = self._int(item, "every_days", where, low=1)
        until_day = self._int(item, "until_day", where, low=0)
        if (every_days is None) != (until_day is None) or (every_days and day is None):
            self.problem(where, "every_days and until_day go together, on a day step")
        elif day is not None and until_day is not None and until_day < day:
            self.problem(where, "until_day is before day")
        valid_until_day = self._int(item, "valid_until_day", where, low=0)
        valid_for = self._duration(item, "valid_for", where)
        if (valid_until_day is None) == (valid_for is None):
            self.problem(where, "set exactly one of valid_until_day or valid_for")
        text = self._texts(item.get("text"), languages, where)
        at = self._time(item, "at", where, send_time)
        step_window = self._window(item, where, window)
        if len(self.problems) > before:
            return None
        return Step(
            key=str(key),
            after=after,
            day=day,
            yearly=yearly,
            at=at,
            window=step_window,
            every_days=every_days,
            until_day=until_day,
            valid_until_day=valid_until_day,
            valid_for=valid_for,
            text=text,
        )

    def _texts(self, raw: object, languages: tuple[str, ...], where: str) -> dict[str, str]:
        if not isinstance(raw, dict):
            self.problem(where, "needs a [steps.text] table with one text per language")
            return {}
        for lang in languages:
            text = raw.get(lang)
            if not isinstance(text, str) or not text.strip():
                self.problem(where, f"text.{lang} is missing")
                continue
            for name in _placeholders(
                text, lambda msg, lang=lang: self.problem(where, f"text.{lang}: {msg}")
            ):
                if name not in PLACEHOLDERS:
                    known = ", ".join(sorted(PLACEHOLDERS))
                    self.problem(
                        where, f"text.{lang}: unknown placeholder {{{name}}} (known: {known})"
                    )
        for lang in raw:
            if lang not in languages:
                self.problem(where, f"text.{lang}: language not listed in the plan's languages")
        return {k: v.strip() for k, v in raw.items() if isinstance(v, str)}

    def _unknown(self, data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
        for name in sorted(set(data) - allowed):
            self.problem(where, f"unknown field {name!r}")

    def _string(self, data: dict[str, Any], name: str, where: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not _KEY.match(value):
            self.problem(where, f"{name} must be lower_snake_case text")
            return ""
        return value

    def _int(self, data: dict[str, Any], name: str, where: str, low: int) -> int | None:
        value = data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.problem(where, f"{name} must be a whole number >= {low}")
            return None
        return value

    def _duration(self, data: dict[str, Any], name: str, where: str) -> timedelta | None:
        value = data.get(name)
        if value is None:
            return None
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) == 0:
            self.problem(where, f"{name} must be a positive duration such as '90m', '1h' or '30d'")
            return None
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})

    def _time(self, data: dict[str, Any], name: str, where: str, default: time) -> time:
        value = data.get(name)
        if value is None:
            return default
        parsed = _parse_time(value)
        if parsed is None:
            self.problem(where, f"{name} must be a local time 'HH:MM'")
            return default
        return parsed

    def _window(self, data: dict[str, Any], where: str, default: Window) -> Window:
        value = data.get("send_window")
        if value is None:
            return default
        times = [_parse_time(v) for v in value] if isinstance(value, list) else []
        if len(times) != 2 or times[0] is None or times[1] is None or times[0] >= times[1]:
            self.problem(where, "send_window must be ['HH:MM', 'HH:MM'] with start before end")
            return default
        return Window(times[0], times[1])


def _parse_time(value: object) -> time | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{2}:\d{2}", value):
        return None
    hour, minute = int(value[:2]), int(value[3:])
    return time(hour, minute) if hour < 24 and minute < 60 else None


def _placeholders(text: str, report: Any) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as error:
        report(f"broken braces ({error}); write {{{{ or }}}} for a literal brace")
        return []
