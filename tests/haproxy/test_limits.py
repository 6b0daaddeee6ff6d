"""HAProxy sized to the open-files limit: the count of files is HAProxy's own, a configuration
too large for the limit is refused before HAProxy sees it, and what is rendered checks clean."""

from __future__ import annotations

import re
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from balancer.controller import Controller
from balancer.edits import Edit
from balancer.engines import EngineRejected
from balancer.engines.haproxy import HAPROXY, HaproxyEngine, runtime
from balancer.engines.haproxy.limits import Limit, problems
from balancer.engines.haproxy.paths import Paths
from balancer.engines.haproxy.render import files, render
from balancer.model import Config
from balancer.plan import make
from balancer.store import Store
from balancer.validate import Invalid, parse
from tests.backends import Addresses, EchoServer
from tests.engine import landing
from tests.engine.conftest import HAPROXY_MISSING
from tests.haproxy.test_render import CASES

LIMIT = Limit(open_files=20_000, threads=2)
needs_haproxy = pytest.mark.skipif(HAPROXY_MISSING, reason="HAProxy is not installed")


def many(net: Addresses, services: int, servers: int, check: dict[str, Any]) -> Config:
    """``services`` services of ``servers`` real servers each, one port each, persistence on."""
    ips = [net.ip() for _ in range(10)]
    return parse(
        {
            "virtual_services": [
                {
                    "label": f"s{i}",
                    "ip": ips[i % len(ips)],
                    "ports": str(20_000 + i),
                    "persistence": {"mode": "source_ip"},
                    "health_check": check,
                    "real_servers": [
                        {"label": f"r{j}", "ip": ips[j % len(ips)], "port": 30_000 + j}
                        for j in range(servers)
                    ],
                }
                for i in range(services)
            ]
        }
    )


def test_a_configuration_too_large_for_the_limit_names_the_limit_and_what_fits() -> None:
    # The 1,000 x 10 with checks on their own port: HAProxy asked for 21,243 files.
    found = problems(
        files(many(Addresses(), 1000, 10, {"type": "connect", "port": 9}), LIMIT), LIMIT
    )
    [problem] = found
    assert problem.field == "virtual_services"
    assert "would need 21,243 open files" in problem.reason
    assert "the open-files limit is 20,000" in problem.reason
    assert "1,243 fewer" in problem.reason


def test_the_rendered_configuration_says_what_it_was_sized_to() -> None:
    rendered = render(CASES["psm.cfg"](), Paths(Path("/var/lib/balancer")), LIMIT)
    assert "# Sized to this node's open-files limit, 20000:" in rendered
    assert "    ulimit-n 20000\n    maxconn 9973\n" in rendered


@needs_haproxy
@pytest.mark.parametrize("name", sorted(CASES))
def test_haproxy_checks_what_is_rendered_without_a_warning(name: str, tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.directory.mkdir()
    paths.state_file.write_text(runtime.NO_STATE)  # as the engine writes it when it starts
    paths.config.write_text(render(CASES[name](), paths, LIMIT, revision=1))
    checked = subprocess.run(
        [HAPROXY, "-c", "-f", str(paths.config)], capture_output=True, text=True, timeout=30
    )
    said = checked.stdout + checked.stderr
    assert checked.returncode == 0, said
    assert "[WARNING]" not in said, said
    assert "[ALERT]" not in said, said


@needs_haproxy
async def test_a_thousand_services_of_ten_servers_start_within_the_limit(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    config = many(net, 1000, 10, {"type": "connect", "interval": 60})
    vs = config.virtual_services[0]
    async with AsyncExitStack() as stack:
        for rs in vs.real_servers:
            assert rs.port is not None
            await stack.enter_async_context(EchoServer(rs.label, str(rs.ip), rs.port))
        await haproxy.apply(make(None, config, 1, None))
        info = await haproxy.master.cli(runtime.worker(None, "show info"))
        found = dict(re.findall(r"^(Maxsock|Maxconn|Ulimit-n): (\d+)$", info, re.MULTILINE))
        limit = Limit.of_this_process()
        counted = files(config, limit)
        assert int(found["Maxsock"]) == counted.fixed + 2 * int(found["Maxconn"])
        assert int(found["Maxsock"]) <= int(found["Ulimit-n"]) == limit.open_files
        landed = {await landing((str(vs.ip), vs.ports[0][0]), net.ip()) for _ in range(3)}
        assert landed, "it serves"
        assert landed <= {rs.label for rs in vs.real_servers}


@needs_haproxy
async def test_a_thousand_services_checked_on_their_own_port_are_refused(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    limit = Limit.of_this_process()
    servers = (limit.open_files // 2) // 1000 + 1  # two files a server: one too many
    config = many(net, 1000, servers, {"type": "connect", "port": 9, "interval": 60})
    with pytest.raises(EngineRejected, match=f"open-files limit is {limit.open_files:,}"):
        await haproxy.apply(make(None, config, 1, None))
    assert "\nlisten " not in await haproxy.configuration(), "HAProxy was never asked"


def test_a_save_too_large_for_the_limit_is_refused_and_nothing_is_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused at save, as a field's problem, not found later by a failed commit or start.
    monkeypatch.setattr(Limit, "of_this_process", classmethod(lambda cls: Limit(400, 2)))
    service = many(Addresses(), 1, 200, {"type": "connect", "port": 9}).virtual_services[0]
    with Store(tmp_path / "balancer.db") as store:
        controller = Controller(store, HaproxyEngine(tmp_path / "engine"))
        before = store.head()
        with pytest.raises(Invalid) as refused:
            controller.save(
                Edit.add_virtual_service(service.model_dump(mode="json")), base=None, author="t"
            )
        [problem] = refused.value.problems
        assert problem.field == "virtual_services"
        assert "the open-files limit is 400" in problem.reason
        assert store.head().id == before.id
        # What fits is saved.
        small = many(Addresses(), 1, 2, {"type": "connect"}).virtual_services[0]
        saved = controller.save(
            Edit.add_virtual_service(small.model_dump(mode="json")), base=None, author="t"
        )
        assert saved.id == before.id + 1


def test_an_edit_that_asks_no_more_files_is_saved_though_the_limit_holds_neither(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node whose limit was lowered below its configuration can still be put right.
    service = many(Addresses(), 1, 200, {"type": "connect", "port": 9}).virtual_services[0]
    document = service.model_dump(mode="json")
    with Store(tmp_path / "balancer.db") as store:
        controller = Controller(store, HaproxyEngine(tmp_path / "engine"))
        controller.save(Edit.add_virtual_service(document), base=None, author="t")
        monkeypatch.setattr(Limit, "of_this_process", classmethod(lambda cls: Limit(400, 2)))
        weight = Edit.modify_real_server(service.label, "r0", {"weight": 50})
        controller.save(weight, base=None, author="t")
        controller.save(Edit.remove_real_server(service.label, "r1"), base=None, author="t")
        saved = store.head()
        servers = saved.config.virtual_services[0].real_servers
        assert (servers[0].label, servers[0].weight, servers[1].label) == ("r0", 50, "r2")
        # Asking for more than the limit holds is still refused, and nothing is saved.
        grown = Edit.add_real_server(service.label, {"label": "r999", "ip": "127.0.0.1"})
        with pytest.raises(Invalid, match="the open-files limit is 400"):
            controller.save(grown, base=None, author="t")
        assert store.head().id == saved.id
