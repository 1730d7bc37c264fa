"""What webhook, Slack and Alertmanager receivers get, checked on the bytes a real server received."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime

from cgwatch.sinks.base import build_sinks
from tests.sinks.conftest import Receiver, note, send

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def test_webhook_body_and_hmac(receiver: Receiver) -> None:
    sink = build_sinks({"w": {"type": "webhook", "url": receiver.url(), "secret": "s3cret"}})["w"]
    group = [note(1), note(2, state="resolved", ends_at=1732492900.0)]
    assert send(sink, group).ok  # type: ignore[arg-type]
    req = receiver.requests[0]
    doc = json.loads(req.body)
    assert doc["version"] == "1" and doc["host"] == "node-1"
    assert doc["alerts"] == [n.to_json() for n in group]
    assert {"ts", "rule", "container", "state", "severity", "value", "summary", "id"} <= doc["alerts"][0].keys()
    expected = "sha256=" + hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req.headers["X-Cgwatch-Signature"], expected)
    assert req.headers["Content-Type"] == "application/json"


def test_webhook_without_secret_is_unsigned(receiver: Receiver) -> None:
    sink = build_sinks({"w": {"type": "webhook", "url": receiver.url()}})["w"]
    assert send(sink, [note(1)]).ok  # type: ignore[arg-type]
    assert "X-Cgwatch-Signature" not in receiver.requests[0].headers


def test_webhook_answer_body_does_not_matter(receiver: Receiver) -> None:
    receiver.body = b"\x00\xff garbage {"
    sink = build_sinks({"w": {"type": "webhook", "url": receiver.url()}})["w"]
    assert send(sink, [note(1)]).ok  # type: ignore[arg-type]


def test_slack_single_alert_shows_every_fact(receiver: Receiver) -> None:
    sink = build_sinks({"s": {"type": "slack", "url": receiver.url(), "channel": "#ops"}})["s"]
    assert send(sink, [note(1, severity="critical", value=1.5)]).ok  # type: ignore[arg-type]
    doc = json.loads(receiver.requests[0].body)
    assert doc["channel"] == "#ops"
    assert "critical" in doc["text"] and "cpu-hog" in doc["text"] and "web-1" in doc["text"] \
        and "1.5" in doc["text"] and "node-1" in doc["text"] and "used 0.97 cores" in doc["text"]
    everything = json.dumps(doc["blocks"])
    for fact in ("critical", "web-1", "cpu-hog", "1.5", "used 0.97 cores for 30s", "node-1"):
        assert fact in everything


def test_slack_storm_is_one_message_within_limits(receiver: Receiver) -> None:
    sink = build_sinks({"s": {"type": "slack", "url": receiver.url()}})["s"]
    group = [note(i, summary="x" * 400) for i in range(50)]
    assert send(sink, group).ok  # type: ignore[arg-type]
    assert len(receiver.requests) == 1
    doc = json.loads(receiver.requests[0].body)
    assert len(doc["blocks"]) <= 50
    assert doc["blocks"][0]["type"] == "header" and "50 alerts" in doc["blocks"][0]["text"]["text"]
    assert len(doc["blocks"][0]["text"]["text"]) <= 150
    for b in doc["blocks"]:
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= 3000
    listing = doc["blocks"][1]["text"]["text"]
    assert "web-0" in listing and "web-49" not in listing
    assert "more" in doc["blocks"][2]["text"]["text"]       # long lines: fewer than 20 fit in 3000 chars
    assert "50 alerts" in doc["text"] and "web-0" in doc["text"] and len(doc["text"]) <= 3000


def test_slack_20_lines_then_and_n_more(receiver: Receiver) -> None:
    sink = build_sinks({"s": {"type": "slack", "url": receiver.url()}})["s"]
    assert send(sink, [note(i) for i in range(50)]).ok  # type: ignore[arg-type]
    doc = json.loads(receiver.requests[0].body)
    assert doc["blocks"][1]["text"]["text"].count("\n") == 19
    assert doc["blocks"][2]["text"]["text"] == "… and 30 more"


def test_slack_200_without_ok_is_a_failure(receiver: Receiver) -> None:
    receiver.body = b"invalid_payload"
    sink = build_sinks({"s": {"type": "slack", "url": receiver.url()}})["s"]
    r = send(sink, [note(1)])  # type: ignore[arg-type]
    assert (r.ok, r.retry) == (False, False) and "invalid_payload" in r.error and "SECRETPATH" not in r.error


def test_slack_escapes_mrkdwn(receiver: Receiver) -> None:
    sink = build_sinks({"s": {"type": "slack", "url": receiver.url()}})["s"]
    assert send(sink, [note(1, summary="<!channel> & co")]).ok  # type: ignore[arg-type]
    body = receiver.requests[0].body.decode()
    assert "<!channel>" not in body and "&lt;!channel&gt; &amp; co" in body


def test_alertmanager_shape_and_times(receiver: Receiver) -> None:
    sink = build_sinks({"a": {"type": "alertmanager", "url": receiver.url("/am/")}})["a"]
    group = [note(1, labels={"team": "web", "severity": "ignored"}),
             note(2, state="resolved", ends_at=1732492900.0, description="long text")]
    assert send(sink, group).ok  # type: ignore[arg-type]
    req = receiver.requests[0]
    assert req.path == "/am/api/v2/alerts"
    doc = json.loads(req.body)
    assert isinstance(doc, list) and len(doc) == 2
    firing, resolved = doc
    assert firing["labels"] == {"alertname": "cpu-hog", "container": "web-1", "severity": "warning",
                                "instance": "node-1", "team": "web"}
    assert firing["annotations"]["summary"] == "web-1 used 0.97 cores for 30s"
    assert firing["annotations"]["description"] == firing["annotations"]["summary"]
    assert resolved["annotations"]["description"] == "long text"
    assert firing["startsAt"] == "2024-11-25T00:00:00Z" and "endsAt" not in firing
    assert RFC3339.match(resolved["endsAt"])
    assert datetime.strptime(resolved["endsAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() == 1732492900.0


PROFILE = {"id": "20241125T000000.000Z-000000000001", "samples": 490, "partial": "",
           "url": "http://node-1:9477/containers/c1#profile=20241125T000000.000Z-000000000001",
           "top": [{"function": "hot_alpha", "share": 0.7}, {"function": "hot_beta", "share": 0.3}]}


def test_a_profile_reaches_every_http_sink_in_its_own_shape(receiver: Receiver) -> None:
    sinks = build_sinks({"w": {"type": "webhook", "url": receiver.url("/w")},
                         "s": {"type": "slack", "url": receiver.url("/s")},
                         "a": {"type": "alertmanager", "url": receiver.url("/am")}})
    n = note(1, profile=PROFILE)
    for name in ("w", "s", "a"):
        assert send(sinks[name], [n]).ok  # type: ignore[arg-type]
    by_path = {r.path: json.loads(r.body) for r in receiver.requests}
    assert by_path["/w"]["alerts"][0]["profile"] == PROFILE           # the webhook: a field
    blocks = json.dumps(by_path["/s"]["blocks"])                       # Slack: a small code block and a link
    assert "```" in blocks and " 70%  hot_alpha" in blocks and " 30%  hot_beta" in blocks
    assert PROFILE["url"] in blocks and "490 samples" in blocks
    [am] = by_path["/am/api/v2/alerts"]                                # Alertmanager: annotations
    assert am["annotations"]["profile"] == " 70%  hot_alpha\n 30%  hot_beta"
    assert am["annotations"]["profile_url"] == PROFILE["url"]
    plain = note(2)
    assert send(sinks["a"], [plain]).ok  # type: ignore[arg-type]
    assert "profile" not in json.loads(receiver.requests[-1].body)[0]["annotations"]


CARD = {"changed": [{"metric": "mem.usage_bytes", "before": 104857600.0, "now": 314572800.0, "z": 27.0}],
        "events": [{"ts": 1732492790.0, "kind": "exit", "fields": {"code": 3, "comm": "app"}}],
        "neighbours": "80% behind batch-7", "missing": []}


def test_a_card_reaches_every_http_sink_in_its_own_shape(receiver: Receiver) -> None:
    sinks = build_sinks({"w": {"type": "webhook", "url": receiver.url("/w")},
                         "s": {"type": "slack", "url": receiver.url("/s")},
                         "a": {"type": "alertmanager", "url": receiver.url("/am")}})
    n = note(1, card=CARD)
    for name in ("w", "s", "a"):
        assert send(sinks[name], [n]).ok  # type: ignore[arg-type]
    by_path = {r.path: json.loads(r.body) for r in receiver.requests}
    assert by_path["/w"]["alerts"][0]["card"] == CARD                 # the webhook: a field
    lines = ["changed: mem.usage_bytes 100.00MiB → 300.00MiB (z 27)", "events: exit (code=3 comm=app)",
             "waited behind: 80% behind batch-7"]
    blocks = json.dumps(by_path["/s"]["blocks"])                       # Slack: a short block
    assert "Around the onset" in blocks and all(json.dumps(x)[1:-1] in blocks for x in lines), blocks
    [am] = by_path["/am/api/v2/alerts"]                                # Alertmanager: an annotation
    assert am["annotations"]["card"] == "\n".join(lines)


def test_alertmanager_cluster_every_member_gets_each_alert_and_one_is_enough(receiver: Receiver) -> None:
    """As Prometheus does: the same alerts to each member; the cluster deduplicates. A member
    refusing connections or failing costs nothing while another takes the group."""
    from tests.receiver import free_port

    down = f"http://127.0.0.1:{free_port()}"           # nothing listens there
    members = [receiver.url("/am-0"), receiver.url("/am-1"), down]
    sink = build_sinks({"a": {"type": "alertmanager", "url": members}})["a"]
    assert send(sink, [note(1)]).ok  # type: ignore[arg-type]
    paths = sorted(r.path for r in receiver.requests)
    assert paths == ["/am-0/api/v2/alerts", "/am-1/api/v2/alerts"]
    assert receiver.requests[0].body == receiver.requests[1].body
    receiver.status = 503                               # every member failing: retried, all named
    sink = build_sinks({"a": {"type": "alertmanager", "url": members}})["a"]
    r = send(sink, [note(2)])  # type: ignore[arg-type]
    assert not r.ok and r.retry and r.error.startswith("every Alertmanager failed")
    assert "HTTP 503" in r.error and "127.0.0.1" in r.error
