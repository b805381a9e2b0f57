"""The dashboard's "where the time goes" table: one row per stage, one per backend."""

from __future__ import annotations

import re

from gateway.web.dashboard_view import _stages


def test_each_backend_gets_its_delivery_row_between_the_two_stages() -> None:
    html = _stages(
        {
            "stages": {
                "customer_to_accepted": None,
                "accepted_to_backend": {
                    "zendesk": {"p50": 2.0, "p90": 4.0, "mean": 2.5},
                    "rt": {"p50": 0.4, "p90": 0.9, "mean": 0.5},
                },
                "accepted_to_reply": {"p50": 125.0, "p90": 250.0, "mean": 140.0},
            }
        }
    )
    keys = re.findall(r'data-stage="([^"]+)"', html)
    assert keys == [
        "customer_to_accepted",
        "accepted_to_backend.rt",
        "accepted_to_backend.zendesk",
        "accepted_to_reply",
    ]
    zendesk = html.split('data-stage="accepted_to_backend.zendesk"')[1].split("</tr>")[0]
    assert "Accepted → in zendesk" in zendesk and "<td>2 s</td>" in zendesk
    assert "no figures" in html.split('data-stage="customer_to_accepted"')[1].split("</tr>")[0]
