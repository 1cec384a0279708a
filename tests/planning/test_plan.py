"""Plans are data: parsed, validated, every problem reported with its file and step."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.planning.plan import PlanError, load_plans, parse_plan
from tests.support.shipped import PLANS_DIR, SMP_STEPS

GOOD = """
kind = "demo"
default_language = "en"
languages = ["en"]
[[steps]]
key = "hello"
day = 1
valid_until_day = 2
[steps.text]
en = "Hi {first_name}"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PlanError) as caught:
        parse_plan(text, source="plans/demo.toml")
    return caught.value.problems


def test_the_shipped_smp_plan_has_every_step_of_the_spec() -> None:
    plan = load_plans(PLANS_DIR)["scalp_micropigmentation"]
    assert [s.key for s in plan.steps] == list(SMP_STEPS)


def test_a_good_plan_parses_with_defaults() -> None:
    plan = parse_plan(GOOD, source="demo.toml")
    step = plan.steps[0]
    assert (step.at.hour, step.window.start.hour, step.window.end.hour) == (10, 9, 20)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("day = 1", "step 'hello': set exactly one of after, day or yearly"),
        ("valid_until_day = 2", "step 'hello': set exactly one of valid_until_day or valid_for"),
        ('en = "Hi {name}"', "step 'hello': text.en: unknown placeholder {name}"),
        ('en = "Hi {first_name"', "step 'hello': text.en: broken braces"),
        ('key = "Hello!"', "key must be lower_snake_case"),
        ("day = -1", "day must be a whole number >= 0"),
    ],
)
def test_a_broken_step_is_reported_with_its_file_and_step(change: str, expected: str) -> None:
    name = change.split(" = ")[0]
    replacement = {
        "day": 'day = 1\nafter = "1h"' if change == "day = 1" else change,
        "valid_until_day": 'valid_until_day = 2\nvalid_for = "3d"',
    }.get(name, change)
    broken = "\n".join(
        replacement if line.startswith(name + " = ") else line for line in GOOD.splitlines()
    )
    found = problems(broken)
    assert any(p.startswith("plans/demo.toml: ") and expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    broken = (
        GOOD.replace("day = 1", "day = 1\nevery_days = 7")
        .replace("valid_until_day = 2", 'valid_until_day = 2\nsend_window = ["20:00", "09:00"]')
        .replace('en = "Hi {first_name}"', 'fr = "Salut"')
    )
    found = problems(broken)
    assert len(found) >= 4, found
    joined = "\n".join(found)
    assert "every_days and until_day go together" in joined
    assert "send_window must be" in joined
    assert "text.en is missing" in joined
    assert "text.fr: language not listed" in joined


def test_unknown_fields_are_typos_not_silence() -> None:
    assert any(
        "unknown field 'valid_untill_day'" in p
        for p in problems(GOOD.replace("day = 1", "day = 1\nvalid_untill_day = 3"))
    )


def test_not_toml_is_reported() -> None:
    assert "not valid TOML" in problems("kind = ")[0]


def test_a_plan_directory_with_a_bad_file_lists_it(tmp_path: Path) -> None:
    (tmp_path / "demo.toml").write_text(GOOD)
    (tmp_path / "other.toml").write_text(GOOD)  # kind 'demo' again, in other.toml
    with pytest.raises(PlanError) as caught:
        load_plans(tmp_path)
    assert any(
        "other.toml" in p and "kind 'demo' is already defined" in p for p in caught.value.problems
    )


def test_an_empty_plan_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no plan files"):
        load_plans(tmp_path)


def test_a_missing_name_falls_back_to_the_plans_default_name() -> None:
    plan = parse_plan(GOOD + '\n[default_name]\nen = "there"\n', source="demo.toml")
    assert plan.render(plan.steps[0], "en", {"first_name": ""}) == "Hi there"
    assert plan.render(plan.steps[0], "ar", {"first_name": "Omar"}) == "Hi Omar"
