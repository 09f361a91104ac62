"""Synthetic web-shop order lines: a seeded catalogue, Zipf-popular products and customers.

Each order has 1-4 lines sharing order id, customer and event time. Orders arrive as a
seasonal Poisson process (quiet nights, an evening peak, busier weekends); the rate is scaled
so the number of lines per second averages ``events_per_second``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from archlab.contract import Contract
from archlab.ingest.generators.base import (
    DatasetGenerator,
    DirtyRates,
    Event,
    Rng,
    StreamShape,
    categorical,
    cdf_of,
    choose,
    labels,
    uuid4_strings,
    zipf_cdf,
)
from archlab.ingest.generators.clock import DAY_MS, HOUR_MS, MINUTE_MS, ArrivalClock, iso_ms

# name: (share of the catalogue, median EUR price, log-spread, min, max, chance of a bulk quantity)
CATEGORIES: dict[str, tuple[float, float, float, float, float, float]] = {
    "electronics": (0.12, 120.0, 1.0, 9.0, 2500.0, 0.01),
    "books": (0.15, 16.0, 0.45, 4.0, 90.0, 0.04),
    "fashion": (0.18, 45.0, 0.7, 8.0, 450.0, 0.03),
    "home": (0.14, 40.0, 0.9, 5.0, 900.0, 0.04),
    "beauty": (0.10, 22.0, 0.6, 3.0, 150.0, 0.06),
    "sports": (0.10, 50.0, 0.9, 6.0, 1200.0, 0.03),
    "toys": (0.09, 25.0, 0.7, 4.0, 300.0, 0.05),
    "grocery": (0.12, 4.5, 0.6, 0.5, 45.0, 0.25),
}
# country: (share of customers, currency); Switzerland and Sweden are billed in USD.
COUNTRIES: dict[str, tuple[float, str]] = {
    "DE": (0.22, "EUR"),
    "FR": (0.15, "EUR"),
    "GB": (0.14, "GBP"),
    "US": (0.13, "USD"),
    "NL": (0.08, "EUR"),
    "ES": (0.08, "EUR"),
    "IT": (0.08, "EUR"),
    "BE": (0.05, "EUR"),
    "CH": (0.04, "USD"),
    "SE": (0.03, "USD"),
}
CURRENCIES: dict[str, float] = {"EUR": 1.0, "USD": 1.08, "GBP": 0.86}  # units per EUR
PAYMENT_METHODS: dict[str, float] = {"card": 0.45, "paypal": 0.22, "apple_pay": 0.13, "klarna": 0.10,
                                     "bank_transfer": 0.10}
CHANNELS: dict[str, float] = {"web": 0.55, "app": 0.35, "marketplace": 0.10}
COUPONS: dict[str, float] = {"WELCOME10": 0.35, "FREESHIP": 0.25, "SPRING15": 0.2, "VIP20": 0.1,
                             "BLACKFRIDAY30": 0.1}
COUPON_SHARE = 0.08
LINES_PER_ORDER = (0.60, 0.25, 0.10, 0.05)  # 1, 2, 3 or 4 lines
MEAN_LINES = sum((i + 1) * p for i, p in enumerate(LINES_PER_ORDER))
QUANTITY = (0.72, 0.2, 0.08)  # 1, 2 or 3 units, unless a bulk quantity is drawn
PRICE_ENDINGS = (99, 95, 49, 89, 79, 29)  # cents; never a trailing zero, so prices print 2 decimals
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

N_PRODUCTS = 400
N_CUSTOMERS = 40_000
MOST_PRODUCTS, MOST_CUSTOMERS = 99_999, 999_999  # what the contract's id patterns can number
ORDERS_PER_BLOCK = 640

# Relative order rate by UTC hour (Europe-heavy shop: dead of night ~03:00, peak 19:00-21:00).
HOURLY = np.array([0.35, 0.22, 0.15, 0.12, 0.11, 0.14, 0.25, 0.45, 0.70, 0.90, 1.00, 1.10,
                   1.20, 1.15, 1.05, 1.00, 1.05, 1.15, 1.35, 1.65, 1.85, 1.80, 1.35, 0.75])
WEEKDAY = np.array([0.96, 0.95, 0.96, 0.98, 1.02, 1.08, 1.12])  # Monday .. Sunday


def _raw_profile(times_ms: np.ndarray) -> np.ndarray:
    hour = (times_ms % DAY_MS) / HOUR_MS
    by_hour = np.interp(hour, np.arange(25), np.append(HOURLY, HOURLY[0]))
    weekday = ((times_ms // DAY_MS).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    return by_hour * WEEKDAY[weekday]


_WEEK = 4 * DAY_MS + MINUTE_MS * (np.arange(7 * 24 * 60) + 0.5)  # every minute of Mon 1970-01-05 ..
_NORM = float(_raw_profile(_WEEK).mean())
PROFILE_MIN = float(_raw_profile(_WEEK).min()) / _NORM


def orders_profile(times_ms: np.ndarray) -> np.ndarray:
    """Seasonal multiplier of the order rate, averaging 1 over a week."""
    return _raw_profile(times_ms) / _NORM


class OrdersGenerator(DatasetGenerator):
    """Order lines of a web shop."""

    dataset = "orders"
    fields = ("event_id", "event_time", "order_id", "customer_id", "product_id", "category", "quantity",
              "unit_price", "currency", "country", "payment_method", "channel", "coupon_code")
    oversized_field = "coupon_code"
    latin1_texts: ClassVar[dict[str, tuple[str, ...]]] = {
        "coupon_code": ("ÉTÉ2024", "NOËL15", "FRÜHLING10", "SOMMAR-ÅÄÖ"),
        "category": ("électronique", "maison & déco", "spielwaren-größe"),
    }

    def __init__(self, contract: Contract, seed: int, start_ms: int, events_per_second: float,
                 dirty: DirtyRates, shape: StreamShape | None = None) -> None:
        super().__init__(contract, seed, dirty, shape)
        rng = self._catalogue_rng
        n_products = min(MOST_PRODUCTS, round(N_PRODUCTS * self._shape.cardinality))
        n_customers = min(MOST_CUSTOMERS, round(N_CUSTOMERS * self._shape.cardinality))
        self._clock = ArrivalClock(start_ms, events_per_second / MEAN_LINES, orders_profile, PROFILE_MIN)
        self._next_order = int(rng.integers(10_000_000, 90_000_000))

        cat = list(CATEGORIES.values())
        self._category_names = labels(CATEGORIES)
        self._product_category = categorical(rng, cdf_of([c[0] for c in cat]), n_products)
        median, spread, low, high, bulk = (np.array([c[i] for c in cat])[self._product_category]
                                           for i in range(1, 6))
        price_eur = np.clip(median * np.exp(spread * rng.standard_normal(n_products)), low, high)
        ending = np.array(PRICE_ENDINGS)[rng.integers(len(PRICE_ENDINGS), size=n_products)]
        whole = np.floor(price_eur[:, None] * np.array(list(CURRENCIES.values()))[None, :])
        self._prices = (whole * 100 + ending[:, None]) / 100  # [product, currency]
        self._product_bulk = bulk
        self._product_ids = labels(f"P-{i:05d}" for i in range(1, n_products + 1))
        self._product_cdf = zipf_cdf(rng, n_products, exponent=1.0, offset=2.7)

        self._country_names = labels(COUNTRIES)
        self._country_cdf = cdf_of([share for share, _ in COUNTRIES.values()])
        currency_index = {name: i for i, name in enumerate(CURRENCIES)}
        self._country_currency = np.array([currency_index[cur] for _, cur in COUNTRIES.values()])
        self._currency_names = labels(CURRENCIES)
        self._payment_names = labels(PAYMENT_METHODS)
        self._payment_cdf = cdf_of(list(PAYMENT_METHODS.values()))
        self._channel_names = labels(CHANNELS)
        self._channel_cdf = cdf_of(list(CHANNELS.values()))
        self._coupon_names = labels([*COUPONS, None])
        self._coupon_cdf = cdf_of(list(COUPONS.values()))
        self._lines_cdf = cdf_of(LINES_PER_ORDER)
        self._quantity_cdf = cdf_of(QUANTITY)

        # Customers keep a home country and habits; popular ones order far more often.
        self._customer_ids = labels(f"C-{i:06d}" for i in range(1, n_customers + 1))
        self._customer_cdf = zipf_cdf(rng, n_customers, exponent=0.7, offset=1.0)
        self._customer_country = categorical(rng, self._country_cdf, n_customers)
        self._customer_payment = categorical(rng, self._payment_cdf, n_customers)
        self._customer_channel = categorical(rng, self._channel_cdf, n_customers)

    def _clean_block(self) -> tuple[np.ndarray, list[Event]]:
        rng, n = self._rng, ORDERS_PER_BLOCK
        times = self._clock.advance(rng.standard_exponential(n))
        lines = categorical(rng, self._lines_cdf, n) + 1
        customer = categorical(rng, self._customer_cdf, n)
        country = np.where(rng.random(n) < 0.97, self._customer_country[customer],
                           categorical(rng, self._country_cdf, n))
        currency = self._country_currency[country]
        payment = np.where(rng.random(n) < 0.8, self._customer_payment[customer],
                           categorical(rng, self._payment_cdf, n))
        channel = np.where(rng.random(n) < 0.75, self._customer_channel[customer],
                           categorical(rng, self._channel_cdf, n))
        coupon = np.where(rng.random(n) < COUPON_SHARE, categorical(rng, self._coupon_cdf, n), len(COUPONS))
        first_order = self._next_order
        self._next_order += n

        line = np.repeat(np.arange(n), lines)  # the order of each line
        m = len(line)
        product = categorical(rng, self._product_cdf, m)
        quantity = categorical(rng, self._quantity_cdf, m) + 1
        bulk = rng.random(m) < self._product_bulk[product]
        quantity = np.where(bulk, np.minimum(3 + rng.geometric(0.3, m), 24), quantity)
        line_times = times[line]
        columns = zip(
            uuid4_strings(rng, m),
            iso_ms(line_times),
            [f"O-{first_order + i:08d}" for i in line.tolist()],
            self._customer_ids[customer[line]].tolist(),
            self._product_ids[product].tolist(),
            self._category_names[self._product_category[product]].tolist(),
            quantity.tolist(),
            self._prices[product, currency[line]].tolist(),
            self._currency_names[currency[line]].tolist(),
            self._country_names[country[line]].tolist(),
            self._payment_names[payment[line]].tolist(),
            self._channel_names[channel[line]].tolist(),
            self._coupon_names[coupon[line]].tolist(),
            strict=True,
        )
        events = [
            {"event_id": e, "event_time": t, "order_id": o, "customer_id": c, "product_id": p, "category": k,
             "quantity": q, "unit_price": u, "currency": cu, "country": co, "payment_method": pm,
             "channel": ch, "coupon_code": cc}
            for e, t, o, c, p, k, q, u, cu, co, pm, ch, cc in columns
        ]
        return line_times, events

    def _wrong_type(self, event: Event, rng: Rng) -> None:
        """A price with a decimal comma, as a string, or the quantity spelled out."""
        if rng.random() < 0.5:
            event["unit_price"] = f"{event['unit_price']:.2f}".replace(".", ",")
        else:
            quantity = event["quantity"]
            event["quantity"] = NUMBER_WORDS[quantity - 1] if quantity <= len(NUMBER_WORDS) else "lots"

    def _out_of_range(self, event: Event, rng: Rng) -> None:
        """A zero or negative quantity, or a negative price."""
        draw = rng.random()
        if draw < 0.35:
            event["quantity"] = 0
        elif draw < 0.7:
            event["quantity"] = -int(rng.integers(1, 6))
        else:
            event["unit_price"] = -event["unit_price"]

    def _unknown_enum(self, event: Event, rng: Rng) -> None:
        """A currency, payment method or channel outside the allowed set."""
        draw = rng.random()
        if draw < 0.5:
            event["currency"] = choose(rng, ("XXX", "EURO", "usd"))
        elif draw < 0.75:
            event["payment_method"] = choose(rng, ("bitcoin", "cheque"))
        else:
            event["channel"] = choose(rng, ("fax", "teletext"))
