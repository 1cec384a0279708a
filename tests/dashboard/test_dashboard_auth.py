"""Signing in to the dashboard: accounts, sessions, CSRF, throttling, SECRET_KEY."""

from __future__ import annotations

import dataclasses
from http.cookies import SimpleCookie
from typing import Any

import pytest

from notifier import create_app
from notifier.settings import ConfigError, Settings
from notifier.staff import accounts, throttle
from notifier.store.db import transaction
from tests.dashboard.conftest import NAME, PASSWORD, SECRET_KEY, Staff, page


def test_without_secret_key_every_page_answers_503_saying_so(
    settings: Settings, engine: Any, clock: Any
) -> None:
    unset = dataclasses.replace(settings, secret_key=None)
    client = create_app(unset, engine=engine, clock=clock).test_client()
    for path in ("/staff/", "/staff/login", "/staff/patients/P-1", "/staff/overview"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "SECRET_KEY is not set" in response.get_data(as_text=True)
    assert client.post("/staff/login", data={"username": "a", "password": "b"}).status_code == 503


def test_secret_key_shorter_than_32_characters_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY: must be at least 32 characters"):
        Settings.from_env({"SECRET_KEY": "too-short"})
    assert Settings.from_env({"SECRET_KEY": "k" * 32}).secret_key == "k" * 32


def test_pages_redirect_to_sign_in_until_signed_in(staff: Staff) -> None:
    response = staff.get("/staff/problems")
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/login?next=/staff/problems"


def test_sign_in_and_out(staff: Staff, account: str) -> None:
    response = staff.login()
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/"
    inbox = staff.get("/staff/")
    assert inbox.status_code == 200
    assert f"Signed in as {NAME}" in " ".join(staff.last.get_text().split())
    assert staff.post("/staff/logout").headers["Location"] == "/staff/login"
    assert staff.get("/staff/").status_code == 302


def test_sign_in_returns_to_the_page_asked_for_but_never_elsewhere(
    staff: Staff, account: str
) -> None:
    staff.get("/staff/login?next=/staff/overview")
    response = staff.post(
        "/staff/login?next=/staff/overview", {"username": NAME, "password": PASSWORD}
    )
    assert response.headers["Location"] == "/staff/overview"
    staff.post("/staff/logout")
    for elsewhere in ("https://evil.example/staff/", "//evil.example/staff/", "/api/replies"):
        staff.get("/staff/login")
        response = staff.post(
            f"/staff/login?next={elsewhere}", {"username": NAME, "password": PASSWORD}
        )
        assert response.headers["Location"] == "/staff/", elsewhere
        staff.post("/staff/logout")


@pytest.mark.parametrize(
    ("name", "password"),
    [(NAME, "wrong password!"), ("nobody", PASSWORD), (NAME, ""), ("", PASSWORD)],
)
def test_a_wrong_name_or_password_is_refused_with_one_message(
    staff: Staff, account: str, name: str, password: str
) -> None:
    response = staff.login(name, password)
    assert response.status_code in (400, 401)
    assert staff.last.find(id="login-error") is not None
    assert staff.get("/staff/").status_code == 302


def test_the_session_cookie_is_httponly_samesite_lax_and_not_secure_over_http(
    staff: Staff, account: str
) -> None:
    response = staff.login()
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("aftercare_staff=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_the_session_cookie_is_secure_when_the_public_url_is_https(
    dashboard_settings: Settings, engine: Any, clock: Any, account: str
) -> None:
    settings = dataclasses.replace(dashboard_settings, public_base_url="https://clinic.example")
    staff = Staff(create_app(settings, engine=engine, clock=clock).test_client())
    cookie = staff.login().headers["Set-Cookie"]
    parsed = SimpleCookie(cookie)
    assert parsed["aftercare_staff"]["secure"]


def test_a_form_without_its_csrf_token_is_refused(staff: Staff, account: str) -> None:
    staff.get("/staff/login")
    response = staff.post("/staff/login", {"username": NAME, "password": PASSWORD}, csrf=False)
    assert response.status_code == 400
    assert "not sent from a page of this dashboard" in response.get_data(as_text=True)
    forged = staff.post(
        "/staff/login", {"username": NAME, "password": PASSWORD, "csrf_token": "forged"}
    )
    assert forged.status_code == 400
    assert staff.get("/staff/").status_code == 302  # not signed in


def test_an_action_without_csrf_token_changes_nothing(signed_in: Staff, clinic: Any) -> None:
    reply = clinic.reply(clinic.patient())
    response = signed_in.post(f"/staff/replies/{reply.id}/handled", csrf=False)
    assert response.status_code == 400
    assert "unhandled" in signed_in.get("/staff/").get_data(as_text=True)
    assert signed_in.last.find(id="unhandled-count").get_text() == "1"


def test_thirty_idle_minutes_sign_out(signed_in: Staff, clock: Any) -> None:
    clock.advance(minutes=29)
    assert signed_in.get("/staff/").status_code == 200  # activity keeps the session alive
    clock.advance(minutes=29)
    assert signed_in.get("/staff/").status_code == 200
    clock.advance(minutes=30)
    response = signed_in.get("/staff/")
    assert response.status_code == 302
    login = signed_in.get(response.headers["Location"])
    assert "signed out after 30 minutes" in login.get_data(as_text=True)


def test_a_changed_password_or_a_removed_account_ends_its_sessions(
    signed_in: Staff, engine: Any, clock: Any
) -> None:
    with transaction(engine) as session:
        accounts.set_password(session, NAME, "a new long password", clock.now)
    assert signed_in.get("/staff/").status_code == 302
    assert signed_in.login(NAME, "a new long password").status_code == 302
    with transaction(engine) as session:
        accounts.remove(session, NAME)
    assert signed_in.get("/staff/").status_code == 302


def test_repeated_failures_slow_down_the_account(staff: Staff, account: str, clock: Any) -> None:
    for _ in range(throttle.FREE_FAILURES):
        assert staff.login(NAME, "wrong password!").status_code == 401
    blocked = staff.login(NAME, PASSWORD)  # even the right password waits its turn
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "2"
    assert "Too many failed sign-ins" in blocked.get_data(as_text=True)
    clock.advance(seconds=2)
    assert staff.login(NAME, PASSWORD).status_code == 302


def test_the_wait_grows_and_is_also_kept_per_address(
    staff: Staff, account: str, clock: Any, dashboard_app: Any
) -> None:
    for n in range(throttle.FREE_FAILURES + 2):
        staff.login(f"guess{n}", "wrong password!")  # a new name each time
        clock.advance(seconds=60)
    staff.login("guess-last", "wrong password!")
    response = staff.login(NAME, PASSWORD)  # a right password from the same address
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) == 16
    other = Staff(dashboard_app.test_client(), address="192.0.2.99")
    assert other.login().status_code == 302


def test_throttle_waits_double_up_to_fifteen_minutes() -> None:
    waits = [throttle.wait(n).total_seconds() for n in range(1, 20)]
    assert waits[: throttle.FREE_FAILURES - 1] == [0] * (throttle.FREE_FAILURES - 1)
    assert waits[throttle.FREE_FAILURES - 1 : throttle.FREE_FAILURES + 3] == [2, 4, 8, 16]
    assert max(waits) == 900


def test_passwords_are_stored_as_argon2id_hashes(engine: Any, account: str) -> None:
    with transaction(engine) as session:
        stored = accounts.find(session, NAME)
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash


def test_an_unknown_staff_page_is_a_readable_404(signed_in: Staff) -> None:
    response = signed_in.get("/staff/nowhere")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert page(response).find("h1").get_text().startswith("Not Found")


def test_the_json_api_keeps_its_bearer_tokens(client: Any, staff_headers: dict[str, str]) -> None:
    assert client.get("/api/replies").status_code == 401
    assert client.get("/api/replies", headers=staff_headers).status_code == 200


def test_secret_key_is_kept_out_of_the_settings_repr() -> None:
    assert SECRET_KEY not in repr(Settings(secret_key=SECRET_KEY))
