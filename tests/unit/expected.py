"""What the shipped datasets allow, written down independently of the contracts and generators,
so that the tests check them against each other rather than against themselves."""

from __future__ import annotations

ENUMS: dict[str, dict[str, set[str]]] = {
    "orders": {
        "currency": {"EUR", "USD", "GBP"},
        "payment_method": {"card", "paypal", "apple_pay", "klarna", "bank_transfer"},
        "channel": {"web", "app", "marketplace"},
        "category": {"electronics", "books", "fashion", "home", "beauty", "sports", "toys", "grocery"},
    },
    "sensors": {
        "sensor_type": {"temperature", "humidity", "pressure", "co2"},
        "unit": {"celsius", "percent", "hpa", "ppm"},
    },
}
