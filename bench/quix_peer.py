"""The peer for the end-to-end benchmark: silver + gold of `orders` written idiomatically with
Quix Streams, run on the same broker over the same raw topic (``python -m bench pipeline``
starts it as its own process and times it by its consumer group's committed offsets).

What it does, as our pipeline does for `orders`:

* parse each raw record's JSON; check the contract's field rules (null tokens, required, types,
  min/max, allowed values, regex, length), the payload limit and the two quarantining rules
  (event time not more than 10 minutes after the Kafka timestamp, a euro rate for the currency),
  in plain Python; derive ``amount`` and ``amount_eur``;
* send invalid records with their reasons to ``<prefix>.quarantine``;
* de-duplicate valid records on ``event_id`` with a Quix State store (per record key), send the
  rest to ``<prefix>.silver``;
* tumbling one-minute event-time windows by category (``group_by`` re-partitions), grace 10
  minutes, with count and sums, ``.final()`` to ``<prefix>.gold``.

Simpler than ours (the peer's advantage): no exact decimals in gold (float sums), no
count_distinct, one aggregate instead of three, no lake landing, no de-duplication horizon.

    python -m bench.quix_peer --bootstrap 127.0.0.1:9092 --topic <ds>.raw --prefix peer --group peer
"""

from __future__ import annotations

import argparse
import csv
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT

FUTURE_TOLERANCE_MS = 10 * 60 * 1000
CENT = Decimal("0.01")


class Validator:
    """The `orders` contract's field rules, checked in plain Python."""

    def __init__(self, contract_path: Path) -> None:
        self.contract = load_contract(contract_path)
        self.fields = []
        for name, spec in self.contract.fields.items():
            tokens = set(spec.null_tokens if spec.null_tokens is not None else self.contract.null_tokens)
            pattern = re.compile(spec.regex) if spec.regex else None
            allowed = set(spec.allowed) if spec.allowed else None
            self.fields.append((name, spec, tokens, pattern, allowed))
        with (contract_path.parent / "reference" / "fx_rates.csv").open() as f:
            self.fx = {row["currency"]: Decimal(row["rate_to_eur"]) for row in csv.DictReader(f)}

    def __call__(self, raw: bytes, timestamp_ms: int) -> dict[str, Any]:
        if len(raw) > self.contract.max_payload_bytes:
            return {"ok": False, "errors": ["payload_too_large"], "raw": raw[:1000].decode(errors="replace")}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"ok": False, "errors": ["malformed_json"], "raw": raw.decode(errors="replace")}
        if not isinstance(data, dict):
            return {"ok": False, "errors": ["not_an_object"], "raw": raw.decode(errors="replace")}
        row: dict[str, Any] = {}
        errors: list[str] = []
        for name, spec, tokens, pattern, allowed in self.fields:
            value = data.get(name)
            if isinstance(value, str) and value.strip() in tokens:
                value = None
            if value is None:
                if spec.required:
                    errors.append(f"{name}.required")
                row[name] = None
                continue
            try:
                value = self._typed(spec.type, value)
            except (TypeError, ValueError, InvalidOperation):
                errors.append(f"{name}.type")
                continue
            if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
                errors.append(f"{name}.range")
            if allowed is not None and value not in allowed:
                errors.append(f"{name}.allowed")
            if pattern is not None and not pattern.search(value):
                errors.append(f"{name}.regex")
            if spec.max_length is not None and len(value) > spec.max_length:
                errors.append(f"{name}.max_length")
            row[name] = value
        if not errors:
            if row["event_time"] > timestamp_ms + FUTURE_TOLERANCE_MS:
                errors.append("event_not_in_future")
            rate = self.fx.get(row["currency"])
            if rate is None:
                errors.append("currency_has_fx_rate")
        if errors:
            return {"ok": False, "errors": errors, "raw": raw.decode(errors="replace")}
        amount = row["quantity"] * row["unit_price"]
        row["amount"] = float(amount)
        row["amount_eur"] = float((amount * rate).quantize(CENT, ROUND_HALF_UP))
        row["unit_price"] = float(row["unit_price"])
        row["event_ms"] = row["event_time"]
        row["event_time"] = datetime.fromtimestamp(row["event_time"] / 1000, UTC).isoformat()
        return {"ok": True, "row": row}

    @staticmethod
    def _typed(kind: str, value: Any) -> Any:
        if kind == "string":
            if isinstance(value, bool) or isinstance(value, dict | list):
                raise TypeError(kind)
            return value if isinstance(value, str) else str(value)
        if kind == "int":
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise TypeError(kind)
            return int(value)
        if kind.startswith("decimal"):
            if isinstance(value, bool) or isinstance(value, str) and "," in value:
                raise TypeError(kind)
            number = Decimal(str(value).strip())
            if not number.is_finite():
                raise ValueError(kind)
            return number
        if kind == "timestamp":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if not isinstance(value, str):
                raise TypeError(kind)
            text = value.strip()
            if text.isdigit():
                return int(text)
            parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise ValueError("no offset")
            return int(parsed.timestamp() * 1000)
        raise TypeError(kind)


def _quiet(*_args: Any, **_kwargs: Any) -> bool:
    """Late events (the generator sends some hours late) are dropped without a log line each."""
    return False


def build(app: Application, topic: str, prefix: str, contract_path: Path) -> None:
    validate = Validator(contract_path)
    raw = app.topic(topic, value_deserializer="bytes", key_deserializer="bytes")
    silver = app.topic(names.silver_topic(prefix), value_serializer="json", key_serializer="bytes")
    quarantine = app.topic(names.quarantine_topic(prefix), value_serializer="json", key_serializer="bytes")
    gold = app.topic(names.gold_topic(prefix), value_serializer="json")

    def dedup(row: dict[str, Any], state: Any) -> bool:
        if state.exists(row["event_id"]):
            return False
        state.set(row["event_id"], True)
        return True

    sdf = app.dataframe(raw)
    sdf = sdf.apply(lambda value, key, timestamp, headers: validate(value, timestamp), metadata=True)
    sdf[~sdf["ok"]].to_topic(quarantine)
    rows = sdf[sdf["ok"]].apply(lambda v: v["row"])
    rows = rows.filter(dedup, stateful=True)
    rows.to_topic(silver)
    rows = rows.set_timestamp(lambda value, key, timestamp, headers: value["event_ms"])
    rows = rows.group_by("category")
    windows = rows.tumbling_window(timedelta(minutes=1), grace_ms=timedelta(minutes=10), on_late=_quiet).agg(
        events=Count(), units=Sum("quantity"), revenue_eur=Sum("amount_eur"),
    )
    windows.final().to_topic(gold)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True, help="the raw topic to read")
    parser.add_argument("--prefix", required=True, help="names the output topics as if it were a dataset: its silver, quarantine and gold topics")
    parser.add_argument("--group", required=True, help="consumer group (also the state's name)")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--guarantee", default="exactly-once", choices=["exactly-once", "at-least-once"])
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--contract", default=str(PROJECT_ROOT / "contracts" / "orders.yaml"))
    args = parser.parse_args(argv)
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      processing_guarantee=args.guarantee, commit_interval=args.commit_interval,
                      state_dir=args.state_dir, loglevel="WARNING")
    build(app, args.topic, args.prefix, Path(args.contract))
    app.run()


if __name__ == "__main__":
    main()
