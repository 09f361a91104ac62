"""Synthetic IoT readings from a seeded fleet of devices spread over a few sites.

Devices keep fixed metadata (site, sensor type, indoor or outdoor, reporting interval,
battery, firmware). Readings follow the physics loosely: a diurnal temperature curve in each
site's local time, humidity moving against temperature, slow pressure fronts and office CO2
rising with weekday occupancy, plus per-device bias and noise. Devices report on timers, so
the arrival rate is flat rather than seasonal.
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
    categorical,
    cdf_of,
    choose,
    labels,
    uuid4_strings,
)
from archlab.ingest.generators.clock import DAY_MS, HOUR_MS, ArrivalClock, flat_profile, iso_ms

# site: (share of devices, UTC offset in hours, mean outdoor celsius, diurnal amplitude, pressure offset hPa)
SITES: dict[str, tuple[float, float, float, float, float]] = {
    "ber-dc1": (0.22, 1, 10.5, 5.0, 0.0),
    "ams-hq": (0.18, 1, 11.0, 3.5, 1.5),
    "mad-plant": (0.16, 1, 16.0, 7.5, -2.0),
    "osl-wh2": (0.14, 1, 5.0, 4.0, -3.0),
    "dxb-lab": (0.12, 4, 30.0, 6.0, -4.0),
    "chi-store": (0.18, -6, 10.0, 6.0, 2.0),
}
# sensor type: (share of devices, unit, per-device bias spread, reading noise)
SENSOR_TYPES: dict[str, tuple[float, str, float, float]] = {
    "temperature": (0.40, "celsius", 0.4, 0.2),
    "humidity": (0.25, "percent", 2.0, 1.5),
    "pressure": (0.10, "hpa", 0.6, 0.2),
    "co2": (0.25, "ppm", 15.0, 12.0),
}
FIRMWARE: dict[str, float] = {"2.3.1": 0.15, "2.4.0": 0.45, "2.4.1": 0.3, "3.0.0": 0.1}
REPORT_INTERVALS_S = (10, 30, 60)
N_DEVICES = 600
READINGS_PER_BLOCK = 1024
PRESSURE_FRONT_DAYS = 3.7


class SensorsGenerator(DatasetGenerator):
    """Readings of temperature, humidity, pressure and CO2 sensors."""

    dataset = "sensors"
    fields = ("event_id", "event_time", "device_id", "site", "sensor_type", "value", "unit", "battery_pct",
              "firmware")
    oversized_field = "firmware"
    latin1_texts: ClassVar[dict[str, tuple[str, ...]]] = {
        "site": ("zürich-süd", "malmö-lager", "são-paulo"),
        "firmware": ("2.4.0-béta",),
    }

    def __init__(self, contract: Contract, seed: int, start_ms: int, events_per_second: float,
                 dirty: DirtyRates) -> None:
        super().__init__(contract, seed, dirty)
        rng, n = self._catalogue_rng, N_DEVICES
        self._start_ms = start_ms
        self._clock = ArrivalClock(start_ms, events_per_second, flat_profile, 1.0)
        site_table = np.array(list(SITES.values()))
        type_table = list(SENSOR_TYPES.values())

        self._device_ids = labels(f"D-{i:05d}" for i in range(1, n + 1))
        self._site_names = labels(SITES)
        site = categorical(rng, cdf_of(site_table[:, 0]), n)
        self._site = site
        self._utc_offset_ms = site_table[site, 1] * HOUR_MS
        self._outdoor_mean, self._amplitude, self._pressure_offset = (site_table[site, i] for i in (2, 3, 4))
        self._front_phase = rng.uniform(0, 2 * np.pi, len(SITES))[site]  # one weather front per site
        self._type_names = labels(SENSOR_TYPES)
        self._unit_names = labels(spec[1] for spec in type_table)
        kind = categorical(rng, cdf_of([spec[0] for spec in type_table]), n)
        self._type = kind
        self._bias = np.array([spec[2] for spec in type_table])[kind] * rng.standard_normal(n)
        self._noise = np.array([spec[3] for spec in type_table])[kind]
        self._indoor = (kind == list(SENSOR_TYPES).index("co2")) | (rng.random(n) < 0.6)
        interval = np.array(REPORT_INTERVALS_S)[rng.integers(len(REPORT_INTERVALS_S), size=n)]
        self._device_cdf = cdf_of(1.0 / interval)
        self._has_battery = rng.random(n) < 0.7
        self._battery_start = rng.uniform(30, 100, n)
        self._battery_drain_per_day = rng.uniform(0.3, 1.5, n)
        self._firmware = labels(FIRMWARE)[categorical(rng, cdf_of(list(FIRMWARE.values())), n)]

    def _clean_block(self) -> tuple[np.ndarray, list[Event]]:
        rng, n = self._rng, READINGS_PER_BLOCK
        times = self._clock.advance(rng.standard_exponential(n))
        device = categorical(rng, self._device_cdf, n)
        noise = rng.standard_normal(n) * self._noise[device]
        value = np.round(self._physics(device, times) + self._bias[device] + noise, 2)
        humidity = self._type[device] == list(SENSOR_TYPES).index("humidity")
        value = np.where(humidity, np.clip(value, 1.0, 100.0), value)
        days = (times - self._start_ms) / DAY_MS
        # Batteries drain linearly and are swapped for a full one when they reach 5%.
        level = self._battery_start[device] - self._battery_drain_per_day[device] * days
        level = np.floor(5 + np.mod(level - 5, 95)).astype(np.int64)
        battery = np.where(self._has_battery[device], level, -1).tolist()
        columns = zip(
            uuid4_strings(rng, n),
            iso_ms(times),
            self._device_ids[device].tolist(),
            self._site_names[self._site[device]].tolist(),
            self._type_names[self._type[device]].tolist(),
            value.tolist(),
            self._unit_names[self._type[device]].tolist(),
            battery,
            self._firmware[device].tolist(),
            strict=True,
        )
        events = [
            {"event_id": e, "event_time": t, "device_id": d, "site": s, "sensor_type": k, "value": v,
             "unit": u, "battery_pct": b if b >= 0 else None, "firmware": f}
            for e, t, d, s, k, v, u, b, f in columns
        ]
        return times, events

    def _physics(self, device: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The noiseless reading of each device at each time, by sensor type."""
        local_ms = times + self._utc_offset_ms[device]
        hour = (local_ms % DAY_MS) / HOUR_MS
        diurnal = np.cos(2 * np.pi * (hour - 15) / 24)  # warmest mid-afternoon
        swing = self._amplitude[device] * diurnal
        indoor = self._indoor[device]
        temperature = np.where(indoor, 21.5 + 0.8 * diurnal, self._outdoor_mean[device] + swing)
        humidity = np.where(indoor, 42 - 0.5 * swing, 70 - 2.0 * swing)
        front = np.sin(2 * np.pi * times / (PRESSURE_FRONT_DAYS * DAY_MS) + self._front_phase[device])
        pressure = 1013.25 + self._pressure_offset[device] + 7.0 * front
        weekday = ((local_ms // DAY_MS).astype(np.int64) + 3) % 7 < 5
        office_hours = weekday & (hour >= 8) & (hour < 18)
        occupancy = np.where(office_hours, np.sin(np.pi * (hour - 8) / 10), 0.0)
        co2 = np.where(indoor, 430 + 600 * occupancy, 415)
        return np.choose(self._type[device], [temperature, humidity, pressure, co2])

    def _wrong_type(self, event: Event, rng: Rng) -> None:
        """The value as text (decimal comma or 'n/a'), or the battery as '85%'."""
        draw = rng.random()
        if draw < 0.3 and event["battery_pct"] is not None:
            event["battery_pct"] = f"{event['battery_pct']}%"
        elif draw < 0.5:
            event["value"] = "n/a"
        else:
            event["value"] = f"{event['value']:.2f}".replace(".", ",")

    def _out_of_range(self, event: Event, rng: Rng) -> None:
        """A physically impossible reading, or a battery level outside 0-100."""
        if rng.random() < 0.2 and event["battery_pct"] is not None:
            event["battery_pct"] = choose(rng, (-1, 255))
            return
        sensor_type = event["sensor_type"]
        if sensor_type == "temperature":
            event["value"] = choose(rng, (-999.0, -300.5))  # below absolute zero: a fault code
        elif sensor_type == "humidity":
            event["value"] = choose(rng, (-3.5, 112.0, 150.0))
        else:
            event["value"] = -abs(event["value"])

    def _unknown_enum(self, event: Event, rng: Rng) -> None:
        """A sensor type or unit outside the allowed set."""
        if rng.random() < 0.5:
            event["sensor_type"] = choose(rng, ("vibration", "radiation"))
        else:
            event["unit"] = choose(rng, ("fahrenheit", "kelvin", "mbar"))
