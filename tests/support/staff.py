"""The staff API read as the clinic's staff read it (with the test deployment's token)."""

from __future__ import annotations

from typing import Any

from tests.conftest import STAFF


def staff_view(client: Any, patient_id: str = "P-1001") -> Any:
    """The answer to GET /api/patients/<id>, whatever its status."""
    return client.get(f"/api/patients/{patient_id}", headers=STAFF)


def patient_view(client: Any, patient_id: str = "P-1001") -> dict[str, Any]:
    """The patient as staff see them; the patient must exist."""
    answer = staff_view(client, patient_id)
    assert answer.status_code == 200, answer.data
    return answer.get_json()


def message_view(client: Any, step: str, nth: int = 0) -> dict[str, Any]:
    """The nth message of a step in the staff view (in send order)."""
    found = [m for m in patient_view(client)["messages"] if m["step"] == step]
    return found[nth]


def consent_log(client: Any) -> list[tuple[str, bool, str]]:
    """The patient's consent changes: (at, consented, source)."""
    return [(c["at"], c["consented"], c["source"]) for c in patient_view(client)["consent_log"]]


def staff_replies(client: Any, handled: str | None = "false") -> list[dict[str, Any]]:
    """GET /api/replies, by default the replies not handled yet."""
    query = "" if handled is None else f"?handled={handled}"
    answer = client.get(f"/api/replies{query}", headers=STAFF)
    assert answer.status_code == 200, answer.data
    return answer.get_json()["replies"]
