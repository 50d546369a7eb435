"""The sample templates (templates/*.j2) render for a device and pass config-apply's checks
(no secret-bearing line, no line break or '?' in a line, every variable defined)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import ValidationError
from toolkit.inventory import make_host
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "templates").glob("*.j2"))
VARS = {
    "ntp_servers": ["10.0.0.1", "10.0.0.2"],
    "syslog_servers": ["10.0.0.5"],
    "snmp_location": "Berlin, room 2.14",
}


def test_the_four_sample_templates_ship() -> None:
    assert [t.stem for t in TEMPLATES] == ["banner", "ntp", "snmpv3", "syslog"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_a_sample_template_renders_and_passes_the_checks(template: Path) -> None:
    host = make_host("sw-01", {"address": "127.0.0.1", "platform": "cisco_ios", **VARS}, (), "t")
    spec = Catalog.load([BUILTIN_TASKS]).get("network.config-apply").implementation("cisco_ios")
    assert spec is not None
    spec.cls({"file": str(template), "save": True}).prepare(host)  # raises on any problem


def test_a_template_variable_the_inventory_lacks_is_refused_before_connecting() -> None:
    host = make_host("sw-02", {"address": "127.0.0.1", "platform": "cisco_ios"}, (), "t")
    spec = Catalog.load([BUILTIN_TASKS]).get("network.config-apply").implementation("cisco_ios")
    assert spec is not None
    ntp = next(t for t in TEMPLATES if t.stem == "ntp")
    with pytest.raises(ValidationError, match="ntp_servers"):
        spec.cls({"file": str(ntp), "save": True}).prepare(host)


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("snmp-server user u g v3 auth sha S3cret priv aes 128 P4ss", False),
        ("snmp-server user u g v3 auth sha S3cret priv aes 128 read", False),  # a key named read
        ("snmp-server user u g v3 auth sha X priv Z", False),
        ("snmp-server group G v3 priv read V", True),  # a security level and a view: no secret
    ],
)
def test_snmpv3_keys_are_scrubbed_and_group_lines_are_not(line: str, kept: bool) -> None:
    from toolkit.remediation.network.config import scrub_line

    assert (scrub_line("cisco_ios", line) == line) is kept
