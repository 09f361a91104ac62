"""The dashboard's alerts without a browser: the banner names every open alert (dataset, message, since
when) and nothing else, escapes what it shows, and the panel writes values in their units."""

from __future__ import annotations

from datetime import UTC, datetime

from ui import alerts as alerting

NOW = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)


def alert(dataset: str, objective: str, state: str, opened: str, resolved: str | None = None, value: float = 192.0,
          threshold: float = 120.0, unit: str = "s", message: str = "no event for 3 min 12 s (objective 2m)") -> dict:
    message = f"{dataset}: {message}"  # as the observer writes it
    return {"alert_id": f"{dataset}/{objective}/1", "dataset": dataset, "objective": objective, "state": state,
            "opened_at": opened, "resolved_at": resolved, "updated_at": resolved or opened, "value": value,
            "threshold": threshold, "unit": unit, "message": message}


def test_the_banner_names_each_open_alert_with_since_when_and_no_resolved_one() -> None:
    alerts = [alert("orders", "freshness", "open", "2026-11-30T08:55:30Z"),
              alert("sensors", "freshness", "resolved", "2026-11-30T08:00:00Z", "2026-11-30T08:10:00Z")]
    [line] = alerting.banner(alerts, NOW)
    assert line.dataset == "orders"
    assert line.text == "orders · freshness: no event for 3 min 12 s (objective 2m)"
    assert line.since == "open since 08:55:30 UTC (4 min 30 s ago)"
    html = alerting.banner_html([line])
    assert 'data-open="1"' in html and line.text in html
    assert alerting.banner_html(alerting.banner(alerts[1:], NOW)) == ""


def test_the_banner_escapes_messages_and_counts_what_it_does_not_name() -> None:
    many = [alert(f"d{i}", "volume", "open", "2026-11-30T08:59:00Z", message="<script>x</script>") for i in range(6)]
    html = alerting.banner_html(alerting.banner(many, NOW), late="alerts as of 12 s ago: the API answered 500")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count('class="alert-line" data-alert-id=') == alerting.BANNER_LINES
    assert "and 2 more open alerts" in html and "the API answered 500" in html


def test_the_panel_writes_values_in_their_units_and_dates_other_days() -> None:
    rows = alerting.panel_rows([
        alert("orders", "quarantine_rate", "open", "2026-11-30T08:50:00Z", value=0.1234, threshold=0.05,
              unit="ratio"),
        alert("orders", "volume", "resolved", "2026-11-29T23:50:00Z", "2026-11-30T00:05:00Z", value=4.0,
              threshold=10.0, unit="events/min"),
    ], NOW)
    assert (rows[0]["value"], rows[0]["threshold"], rows[0]["resolved"]) == ("12.34%", "5.00%", "–")
    assert (rows[1]["value"], rows[1]["threshold"]) == ("4 events/min", "10 events/min")
    assert (rows[1]["opened"], rows[1]["resolved"]) == ("2026-11-29 23:50:00 UTC", "00:05:00 UTC")
    assert rows[0]["message"] == "no event for 3 min 12 s (objective 2m)"  # the dataset has its column
    resolved = alert("orders", "freshness", "resolved", "2026-11-30T08:00:00Z", "2026-11-30T08:01:00Z",
                     message="no new record for 0s (objective 10s)")
    resolved["message"] = f"resolved: {resolved['message']}"  # as the observer words a resolution
    assert alerting.panel_rows([resolved], NOW)[0]["message"] == "no new record for 0s (objective 10s)"
    assert (alerting.measured(192.0, "s"), alerting.measured(120.0, "s"), alerting.measured(10.0, "s")) == (
        "3 min 12 s", "2 min", "10 s")
