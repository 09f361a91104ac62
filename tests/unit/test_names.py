"""Topic, group and lake-path names: built and parsed by ``archlab.core.names``, and nowhere else.

The round trips pin the naming convention; the scan below fails, naming file and line, when code in
``archlab/``, ``services/``, ``bench/`` or ``ui/`` spells a topic suffix or a lake prefix itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from archlab.contract import ContractError, load_contract
from archlab.core import names
from archlab.core.names import LAYERS, TopicKind
from archlab.core.settings import PROJECT_ROOT

DATASETS = ["orders", "sensors", "a", "orders_v2", "x9"]


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("kind", list(TopicKind))
def test_every_topic_parses_back_to_its_dataset_and_kind(dataset: str, kind: TopicKind) -> None:
    topic = names.topic(dataset, kind)
    assert names.parse_topic(topic) == (dataset, kind)
    assert (names.dataset_of(topic), names.kind_of(topic)) == (dataset, kind)


def test_the_per_kind_builders_and_the_dataset_topics_agree_with_topic() -> None:
    builders = {
        TopicKind.RAW: names.raw_topic, TopicKind.SILVER: names.silver_topic,
        TopicKind.QUARANTINE: names.quarantine_topic, TopicKind.GOLD: names.gold_topic, TopicKind.DQ: names.dq_topic,
        TopicKind.SILVER_DEDUP: names.dedup_topic, TopicKind.GOLD_SHUFFLE: names.gold_shuffle_topic,
        TopicKind.GOLD_STATE: names.gold_state_topic, TopicKind.ALERTS: names.alerts_topic,
    }
    assert set(builders) == set(TopicKind), "a kind without its builder"
    for kind, build in builders.items():
        assert build("orders") == names.topic("orders", kind) == names.topic("orders", kind.value)
    assert names.dataset_topics("orders") == [names.topic("orders", kind) for kind in TopicKind]
    assert len(set(names.dataset_topics("orders"))) == len(TopicKind)
    assert names.raw_topic("orders") == "orders.raw"  # the wire name other tools (kcat, lab tail) are given


def test_a_dotted_name_parses_by_its_last_dot() -> None:
    """Contracts forbid dots in dataset names (below), so a topic has exactly one; a dotted prefix
    (a benchmark peer's output prefix, say) still parses by the last dot."""
    assert names.parse_topic(names.gold_shuffle_topic("peer.v2")) == ("peer.v2", TopicKind.GOLD_SHUFFLE)


def test_a_contract_cannot_name_a_dataset_with_a_dot(tmp_path: Path) -> None:
    source = (PROJECT_ROOT / "contracts" / "orders.yaml").read_text(encoding="utf-8")
    path = tmp_path / "or.ders.yaml"
    path.write_text(re.sub(r"(?m)^dataset:.*$", "dataset: or.ders", source), encoding="utf-8")
    with pytest.raises(ContractError):
        load_contract(path)


@pytest.mark.parametrize("foreign", ["orders", "orders.limit", ".raw", "orders.raw.", "__consumer_offsets",
                                     "orders.gold-shuffle-repartition", "orders.RAW", ""])
def test_foreign_topics_are_rejected(foreign: str) -> None:
    with pytest.raises(ValueError):
        names.parse_topic(foreign)
    with pytest.raises(ValueError):
        names.dataset_of(foreign)


def test_consumer_groups_join_the_service_and_its_roles() -> None:
    assert names.group("silver_refiner") == "silver_refiner"
    assert names.group("silver_refiner", "dq", "lake") == "silver_refiner-dq-lake"
    assert names.group("gold_aggregator", "shuffle") == "gold_aggregator-shuffle"


def test_lake_paths() -> None:
    assert LAYERS == ("bronze", "silver", "quarantine", "dq", "gold")
    assert [names.table_path(layer, "orders") for layer in LAYERS] == [f"{layer}/orders" for layer in LAYERS]
    assert names.table_path("gold", "orders", "totals_1h") == "gold/orders/totals_1h"
    with pytest.raises(ValueError):
        names.table_path("platinum", "orders")
    assert names.app_id("bronze_sink", "orders.raw", 7) == "bronze_sink:orders.raw:7"


# --------------------------------------------------------------------------------------- enforcement
SCANNED = ("archlab", "services", "bench", "ui")
OWNER = Path("archlab/core/names.py")
KINDS = "|".join(re.escape(kind.value) for kind in sorted(TopicKind, key=len, reverse=True))
#: What only the naming module may write, searched in each string literal that is not a docstring,
#: written as ``"<text>"`` with every f-string field shown as ``{<its last name>}`` (``f"{self.group}-x"``
#: reads ``"{group}-x"``; a field that is not a plain name reads ``{}``). Comments are not literals.
FORBIDDEN = {
    # ``f"{d}.raw"``, ``"orders.gold"``: a topic kind after a dot, ending the name (not ".raw_bytes",
    # not a module path such as "archlab.pipeline.gold.stages", not a file name such as "gold.parquet").
    "topic suffix": re.compile(rf"\.(?:{KINDS})(?![\w.-])"),
    # the internal topics' kinds, wherever they appear in a literal
    "internal topic kind": re.compile(r"(?<![\w-])(?:silver-dedup|gold-shuffle|gold-state)(?![\w-])|-dedup\b"),
    # ``f"gold/{d}"``, ``"bronze/orders"``: a lake folder at the start of a path
    "lake prefix": re.compile(rf"""(?:^"|/)(?:{"|".join(LAYERS)})/"""),
    # ``f"{layer}/{dataset}"``, ``f"{d}.{layer}"``: a lake path or a topic joined from a layer or kind variable
    "name from a layer": re.compile(r"\{\w*layer\}/|\}\.\{\w*(?:layer|kind|suffix)\}"),
    # ``f"{group}-silver-lake"``: a consumer group assembled by hand (names.group)
    "consumer group": re.compile(r"\{\w*group\w*\}-|-(?:silver|quarantine|dq|gold)-lake\b"),
}
#: String methods that take a topic name apart (``tp.topic.removesuffix(".raw")``,
#: ``topic.rsplit(".", 1)``, ``topic.startswith(f"{dataset}.")``): names.parse_topic does that.
TOPIC_SURGERY = {"removesuffix", "removeprefix", "endswith", "startswith", "rsplit", "rpartition", "split", "partition"}
#: Occurrences in files that other work is rewriting now, to be swept into ``archlab.core.names``
#: calls; each entry is (file, the string literal's source text). Delete an entry with its literal.
NOT_YET_SWEPT: set[tuple[str, str]] = set()  # every file is swept; keep empty


class _Source:
    """One file's syntax tree, and the source text of any of its nodes (``ast.get_source_segment``
    splits the whole file on every call, too slow for every literal of the repository)."""

    def __init__(self, source: str) -> None:
        self.tree = ast.parse(source)
        self._lines = [line.encode() for line in source.splitlines(keepends=True)]

    def text(self, node: ast.expr) -> str:
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        if first == last:
            return self._lines[first][node.col_offset : node.end_col_offset].decode()
        middle = b"".join(self._lines[first + 1 : last])
        return (self._lines[first][node.col_offset :] + middle + self._lines[last][: node.end_col_offset]).decode()


def _field(value: ast.FormattedValue) -> str:
    expression = value.value
    name = expression.id if isinstance(expression, ast.Name) else getattr(expression, "attr", "")
    return "{" + name + "}"


def string_literals(source: _Source) -> list[tuple[ast.expr, str]]:
    """(node, ``"<text>"``) of every string literal but docstrings; an f-string is one literal, and
    the code in its fields is not text (``f"{len(self.raw)}"`` names no topic)."""
    skipped = {  # docstrings, and any string that is a statement of its own
        id(node.value) for node in ast.walk(source.tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }
    for node in ast.walk(source.tree):
        if isinstance(node, ast.JoinedStr):  # its parts are judged as the whole f-string
            skipped.update(id(part) for part in ast.walk(node) if part is not node)
    found: list[tuple[ast.expr, str]] = []
    for node in ast.walk(source.tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(_field(v) if isinstance(v, ast.FormattedValue) else str(v.value) for v in node.values)
            found.append((node, f'"{text}"'))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node, f'"{node.value}"'))
    return found


def topic_surgery(source: _Source) -> list[ast.Call]:
    """Each string method called on something named like a topic."""
    return [
        node for node in ast.walk(source.tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TOPIC_SURGERY
        and "topic" in source.text(node.func.value).lower()
    ]


def violations(path: Path, code: str) -> list[str]:
    """``file:line: rule: source`` for each name the file's code builds or takes apart by hand."""
    relative = str(path.relative_to(PROJECT_ROOT))
    source = _Source(code)
    found = [
        (node, rule) for node, text in string_literals(source)
        for rule, pattern in FORBIDDEN.items() if pattern.search(text)
    ]
    found += [(call, "topic name taken apart") for call in topic_surgery(source)]
    return [
        f"{relative}:{node.lineno}: {rule}: {source.text(node)}" for node, rule in found
        if (relative, source.text(node)) not in NOT_YET_SWEPT
    ]


def scanned_files() -> list[Path]:
    files = sorted(p for folder in SCANNED for p in (PROJECT_ROOT / folder).rglob("*.py"))
    return [p for p in files if p.relative_to(PROJECT_ROOT) != OWNER and ".venv" not in p.parts]


def test_only_the_naming_module_spells_topic_and_lake_names() -> None:
    files = scanned_files()
    assert len(files) > 30, "the scan found too few files to mean anything"
    found = [v for path in files for v in violations(path, path.read_text(encoding="utf-8"))]
    assert not found, "build these names with archlab.core.names:\n" + "\n".join(found)


@pytest.mark.parametrize("literal", [
    'f"{dataset}.raw"', '"orders.silver"', "f'{d}.quarantine'", 'f"{name}.gold"', 'f"{x}.dq"',
    'f"{d}.silver-dedup"', '"gold-shuffle"', 'f"{d}.gold-state"', 'f"bronze/{d}"', 'f"gold/{d}/{a}"',
    '"silver/orders"', 'f"{root}/dq/{d}"', 'f"{layer}/{dataset}"',
    'f"{d}.{layer}"', 'f"{group}-silver-lake"', '"silver_refiner-dq-lake"', 'f"{settings.gold_group}-shuffle"',
    'tp.topic.removesuffix(".gold-shuffle")', 'topic.rsplit(".", 1)[0]', 'tp.topic.startswith(f"{dataset}.")',
    'row["topic"].partition(".")',
])
def test_the_scan_catches_hand_built_names(literal: str) -> None:
    assert violations(PROJECT_ROOT / "archlab" / "example.py", f"x = {literal}\n")


@pytest.mark.parametrize("literal", [
    '"part-000.parquet"', '"compacted.parquet"', '"archlab.pipeline.gold.stages"', '"services.silver_refiner"',
    '"raw"', '"gold"', '"silver_schema"', '"lab_gold_windows"', '"~watermark/"', '"s3://bucket/key"',
    '"late_beyond_grace.{aggregate}"', 'f"{name}.yaml"', '"dt=2024-01-01/hour=00"', '"/v1/datasets/{dataset}/gold"',
    '"bench-gold-state-"', '"self.raw_bytes"', 'settings.kafka_bootstrap.rsplit(":", 1)', 'key.endswith(".parquet")',
])
def test_the_scan_leaves_unrelated_strings_alone(literal: str) -> None:
    assert violations(PROJECT_ROOT / "archlab" / "example.py", f"x = {literal}\n") == []


def test_docstrings_and_comments_may_describe_names() -> None:
    source = '"""Reads ``<dataset>.raw``, lands ``bronze/<dataset>/``."""\n\n# writes f"{d}.gold"\n'
    assert violations(PROJECT_ROOT / "archlab" / "example.py", source) == []
