"""The dashboard in a real browser: Debian's Chromium driven by Playwright against the
app served on a loopback port. A receptionist's round: sign in, read the inbox, mark a
reply handled, find a patient by the last digits of their phone, read an Arabic reply
right to left, look at the charts. axe-core checks every page; each page is saved as
a screenshot in docs/screenshots/ (or $SCREENSHOTS_DIR).

Without Chromium these tests skip, saying so; with CI set they fail instead, as the
PostgreSQL tests do."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from notifier import create_app
from notifier.staff import accounts
from notifier.store import migrate
from notifier.store.db import make_engine, transaction
from tests.conftest import make_settings
from tests.dashboard.conftest import NAME, PASSWORD, SECRET_KEY, Clinic
from tests.support.serving import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or ROOT / "docs" / "screenshots")
ARABIC = "عندي حكة شديدة وتورم بعد العلاج"
RUSSIAN = "Можно ли мыть голову?"
TABLET = {"width": 1024, "height": 768}


def chromium_path() -> str:
    """Debian's Chromium, or a skip (a failure in CI) saying how to get it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "no Chromium on PATH (apt-get install chromium); browser tests need it"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: required in CI")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app on a free loopback port, over a SQLite database with a staff account,
    two patients (one writing in Arabic), replies and messages."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'aftercare.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    seed(engine, datetime.now(UTC))
    settings = make_settings(url)
    import dataclasses

    app = create_app(dataclasses.replace(settings, secret_key=SECRET_KEY), engine=engine)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{base}/healthz")
    yield base
    server.shutdown()
    thread.join(timeout=5)
    engine.dispose()


def seed(engine: Any, now: datetime) -> None:
    with transaction(engine) as session:
        accounts.create(session, NAME, PASSWORD, now)
    clinic = Clinic(engine, now)
    omar = clinic.patient("P-1001", phone="+971501234567", first_name="Omar", language="en")
    layla = clinic.patient(
        "P-2002", phone="+971502228899", first_name="ليلى", language="ar", timezone="Asia/Dubai"
    )
    ivan = clinic.patient(
        "P-3003", phone="+79161234500", first_name="Иван", language="ru", timezone="Europe/Moscow"
    )
    for patient, days in ((omar, 3), (layla, 2), (ivan, 1)):
        for day in range(days + 1):
            message = clinic.message(
                patient,
                f"day_{day}",
                body={"ar": "يرجى إبقاء المنطقة جافة", "ru": "Держите кожу сухой"}.get(
                    patient.language, "Keep the treated area dry today."
                ),
                send_at=now - timedelta(days=days - day, hours=3),
            )
            clinic.callbacks(message, "queued", "sent", "delivered")
    clinic.message(
        layla, "day_3", status="undelivered", error_code=30003, send_at=now - timedelta(hours=1)
    )
    clinic.message(
        omar, "day_7", status="failed", error_code=30005, send_at=now - timedelta(hours=2)
    )
    clinic.message(omar, "day_30", status="scheduled", send_at=now + timedelta(days=27))
    clinic.reply(omar, "Is a little redness normal?", received_at=now - timedelta(minutes=30))
    clinic.reply(
        layla,
        ARABIC,
        urgent=True,
        category="urgent",
        signs="itching,swelling",
        received_at=now - timedelta(hours=2),
    )
    clinic.reply(ivan, RUSSIAN, category="question", received_at=now - timedelta(hours=5))


@pytest.fixture
def page(browser: Any, served: str) -> Iterator[Any]:
    context = browser.new_context(viewport=TABLET, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def sign_in(page: Any, served: str) -> None:
    page.goto(f"{served}/staff/")
    assert page.url.endswith("/staff/login?next=/staff/")
    # By keyboard alone: the name field has focus, Tab moves on, Enter sends.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
    page.keyboard.type(NAME)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{served}/staff/")


def accessible(page: Any) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{page.url}: " + "; ".join(bad)


def fits_a_tablet(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= TABLET["width"], f"{page.url} is {width} px wide"


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_the_sign_in_page(page: Any, served: str) -> None:
    page.goto(f"{served}/staff/login")
    accessible(page)
    shoot(page, "login")
    page.get_by_label("User name").fill(NAME)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert "do not match an account" in page.get_by_role("alert").inner_text()


def test_a_receptionists_round(page: Any, served: str) -> None:
    sign_in(page, served)
    inbox = page.locator("article.reply")
    assert inbox.count() == 3
    first = inbox.first
    assert "Urgent" in first.locator("h3").inner_text()
    assert first.locator("blockquote").inner_text() == ARABIC
    assert page.locator("#unhandled-count").inner_text() == "3"
    fits_a_tablet(page)
    accessible(page)
    shoot(page, "inbox")

    english = page.locator("article.reply", has_text="Is a little redness normal?")
    english.get_by_role("button", name="Mark handled").click()
    page.wait_for_url(f"{served}/staff/")
    assert page.get_by_role("status").inner_text() == "Marked handled."
    assert page.locator("#unhandled-count").inner_text() == "2"
    assert page.locator("article.reply", has_text="Is a little redness normal?").count() == 0

    search = page.get_by_role("search").first
    search.get_by_label("Find a patient").fill("8899")
    search.get_by_label("Find a patient").press("Enter")
    page.get_by_role("link", name="P-2002").click()
    page.wait_for_url(f"{served}/staff/patients/P-2002")
    reply = page.locator("ol.timeline blockquote", has_text=ARABIC)
    assert reply.evaluate("e => getComputedStyle(e).direction") == "rtl"
    assert page.locator("html").evaluate("e => getComputedStyle(e).direction") == "ltr"
    assert "Error 30003: Unreachable handset" in page.locator("ol.timeline").inner_text()
    assert "queued → sent → delivered" in page.locator("ol.timeline").inner_text()
    assert "(Asia/Dubai)" in page.locator("ol.timeline").inner_text()
    fits_a_tablet(page)
    accessible(page)
    shoot(page, "patient")

    page.get_by_role("link", name="Overview").click()
    page.wait_for_url(f"{served}/staff/overview")
    charts = page.locator("svg.chart")
    assert charts.count() == 4
    for n in range(4):
        box = charts.nth(n).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 20
    assert charts.first.locator("rect.bar").count() > 0
    fits_a_tablet(page)
    accessible(page)
    shoot(page, "overview")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/staff/problems", "problems"),
        ("/staff/plans", "plans"),
        ("/staff/patients/P-3003", "patient-russian"),
        ("/staff/patients?q=4500", "search"),
    ],
)
def test_every_other_page_is_accessible(page: Any, served: str, path: str, name: str) -> None:
    sign_in(page, served)
    page.goto(f"{served}{path}")
    assert page.locator("h1").count() == 1
    fits_a_tablet(page)
    accessible(page)
    shoot(page, name)


def test_the_keyboard_reaches_the_content_first(page: Any, served: str) -> None:
    sign_in(page, served)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
