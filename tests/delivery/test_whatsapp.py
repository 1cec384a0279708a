"""WhatsApp's rules as data: the 24-hour window and the clinic's template mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.delivery.whatsapp import in_window, load_templates
from notifier.planning.plan import PlanError
from tests.support.shipped import PLANS, ROOT

NOW = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ago", "inside"),
    [
        (None, False),
        (timedelta(hours=23, minutes=59), True),
        (timedelta(hours=24), False),
        (timedelta(hours=24, minutes=1), False),
        (timedelta(0), True),
    ],
)
def test_the_24_hour_window_edges(ago: timedelta | None, inside: bool) -> None:
    assert in_window(None if ago is None else NOW - ago, NOW) is inside


def test_the_example_mapping_is_valid_against_the_shipped_plans() -> None:
    templates = load_templates(ROOT / "config" / "whatsapp_templates.example.toml", PLANS)
    template = templates.find("scalp_micropigmentation", "after_treatment", "ar")
    assert template is not None
    assert template.content_sid == "HX00000000000000000000000000000002"
    variables = json.loads(
        template.content_variables(
            {"first_name": "عمر", "clinic_name": "Skin Clinic", "clinic_phone": "+971"}
        )
    )
    assert variables == {"1": "عمر", "2": "Skin Clinic"}
    assert templates.find("scalp_micropigmentation", "water_rinse", "en") is None


def test_an_absent_mapping_is_empty_unless_it_was_named(tmp_path: Path) -> None:
    assert load_templates(tmp_path / "none.toml", PLANS).by_step == {}
    with pytest.raises(PlanError, match="not found"):
        load_templates(tmp_path / "none.toml", PLANS, required=True)


def test_every_problem_in_a_mapping_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "templates.toml"
    path.write_text(
        '[tattoo.after.en]\ncontent_sid = "HX' + "0" * 32 + '"\n'
        '[scalp_micropigmentation.no_such_step.en]\ncontent_sid = "HX' + "0" * 32 + '"\n'
        '[scalp_micropigmentation.water_rinse.fr]\ncontent_sid = "HX123"\n'
        'variables = { "1" = "surname" }\ncolour = "blue"\n'
    )
    with pytest.raises(PlanError) as caught:
        load_templates(path, PLANS)
    problems = "\n".join(caught.value.problems)
    assert "[tattoo]: no plan of that kind" in problems
    assert "[scalp_micropigmentation.no_such_step]: the plan has no step" in problems
    where = "[scalp_micropigmentation.water_rinse.fr]: "
    assert where + "language 'fr' is not one of the plan's" in problems
    assert where + "content_sid must be HX followed by 32 hex digits" in problems
    assert where + "variables.1: unknown placeholder 'surname'" in problems
    assert where + "unknown field 'colour'" in problems
