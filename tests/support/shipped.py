"""What the repository ships, as the tests read it: its root, and the plans and the example
WhatsApp templates in config/."""

from __future__ import annotations

from pathlib import Path

from notifier.delivery.whatsapp import load_templates
from notifier.planning.plan import load_plans
from tests.conftest import CLINIC

ROOT = Path(__file__).resolve().parents[2]
PLANS_DIR = ROOT / "config" / "plans"
PLANS = load_plans(PLANS_DIR)
SMP = PLANS["scalp_micropigmentation"]
# The example WhatsApp template mapping (after_treatment in en and ar, yearly_checkup in en).
EXAMPLE_TEMPLATES = load_templates(ROOT / "config" / "whatsapp_templates.example.toml", PLANS)
# The SPEC's steps of scalp micropigmentation aftercare, in plan order.
SMP_STEPS = (
    "after_treatment",
    "no_wash_reminder",
    "water_rinse",
    "moisturise",
    "sunscreen",
    "long_term_care",
    "yearly_checkup",
)


def rendered(step: str, language: str, first_name: str = "Omar") -> str:
    """An SMP step's text as the test clinic sends it."""
    plan_step = SMP.step(step)
    assert plan_step is not None
    return SMP.render(plan_step, language, {"first_name": first_name, **CLINIC})
