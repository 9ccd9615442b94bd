"""Workload files: validated before anything runs, unknown keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_sched.bench.settings import derive
from broker_sched.bench.workload import Cell, load_workload, parse_workload
from broker_sched.config import load_settings
from broker_sched.errors import ConfigError

EXAMPLE = """
transports = ["memory", "redis"]
policy = ["sharding", "acs"]
invokers = 4
slots = 8
users = [10, 20]
duration_s = 5
warmup_s = 1

[actions]
count = [1, 100]
run_ms = 2
max_containers = 10

[settings.simulated]
create_ms = [50, 130]
"""


def test_a_workload_file_is_read_and_expanded_into_cells(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(EXAMPLE)
    workload = load_workload(path)
    assert workload.name == "grid"
    assert workload.actions.count == [1, 100]
    assert workload.settings == {"simulated": {"create_ms": [50, 130]}}
    cells = workload.cells()
    assert len(cells) == 2 * 2 * 2 * 2
    assert cells[0] == Cell("memory", "sharding", 1, 10, None)
    assert cells[-1] == Cell("redis", "acs", 100, 20, None)


def test_scalars_are_accepted_where_lists_are_allowed() -> None:
    workload = parse_workload(
        {"transports": "kafka", "policy": "acs", "rate_per_s": 50, "actions": {"count": 3}}
    )
    assert workload.cells() == [Cell("kafka", "acs", 3, None, 50.0)]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"users": 1, "usres": 2}, "usres"),
        ({"users": 1, "actions": {"cuont": 3}}, "actions.cuont"),
        ({"users": 1, "policy": "round-robin"}, "policy"),
        ({"users": 0}, "users"),
    ],
)
def test_a_bad_key_is_an_error_naming_it(values: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_workload(values)


@pytest.mark.parametrize("values", [{}, {"users": 10, "rate_per_s": 5.0}])
def test_exactly_one_kind_of_load(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="exactly one of 'users'"):
        parse_workload(values)


def test_a_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_workload(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("users = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_workload(broken)


def test_derived_settings_merge_sections_and_validate() -> None:
    base = load_settings(transport="memory", redis={"password": "secret"})
    derived = derive(base, {"policy": "sharding", "invoker": {"slots": 3}})
    assert derived.policy == "sharding"
    assert derived.invoker.slots == 3
    assert derived.invoker.keep_alive_s == base.invoker.keep_alive_s
    assert derived.redis.password is not None
    assert derived.redis.password.get_secret_value() == "secret"
    with pytest.raises(ConfigError, match=r"invoker\.slotz"):
        derive(base, {"invoker": {"slotz": 3}})
