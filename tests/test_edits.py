"""One edit, one value: every kind of Edit says its audit action, target, revision message and
"Saved: ..." sentence, and applies; the API's routes and the WebUI's forms save exactly that."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer.edits import Edit
from balancer.front.gate import WEBUI
from balancer.model import Config, RealServerState
from balancer.presets import psm
from balancer.web.wizards import LAYER_7
from tests.test_configuration import WEB, base
from tests.test_web_forms import RS, VS, psm_wizard, status, submit
from tests.webapp import WebApp, webapp

PSM3 = {"label": "PSM3", "ip": "192.168.94.107", "port": 3389}
BACKUP = {
    "format": "balancer-configuration",
    "version": 1,
    "revision": 4,
    "config": {"virtual_services": [WEB]},
}
PRESET = {"rdp_vip": "192.168.94.110", "web_vip": "192.168.94.111", "servers": [("P1", "10.0.0.1")]}


def labels(config: Config) -> list[str]:
    return [vs.label for vs in config.virtual_services]


def servers(config: Config, service: str = "CyberArk-PSM") -> dict[str, Any]:
    vs = config.virtual_service(service)
    return {} if vs is None else {rs.label: rs for rs in vs.real_servers}


KINDS: list[tuple[Edit, tuple[str, str, str, str], Callable[[Config], bool]]] = [
    (
        Edit.add_virtual_service(WEB),
        (
            "add",
            "CyberArk-PSM-Web",
            "add virtual service CyberArk-PSM-Web",
            "virtual service CyberArk-PSM-Web added",
        ),
        lambda c: labels(c) == ["CyberArk-PSM", "CyberArk-PSM-Web"],
    ),
    (
        Edit.add_virtual_service({**WEB, "real_servers": [PSM3]}),
        (
            "add",
            "CyberArk-PSM-Web",
            "add virtual service CyberArk-PSM-Web",
            "virtual service CyberArk-PSM-Web added with real servers PSM3",
        ),
        lambda c: list(servers(c, "CyberArk-PSM-Web")) == ["PSM3"],
    ),
    (
        Edit.modify_virtual_service("CyberArk-PSM", {"label": "PSM-RDP"}),
        (
            "modify",
            "CyberArk-PSM",
            "modify virtual service CyberArk-PSM",
            "virtual service PSM-RDP modified",  # by the name it has now
        ),
        lambda c: labels(c) == ["PSM-RDP"],
    ),
    (
        Edit.remove_virtual_service("CyberArk-PSM"),
        (
            "remove",
            "CyberArk-PSM",
            "remove virtual service CyberArk-PSM",
            "virtual service CyberArk-PSM deleted",
        ),
        lambda c: labels(c) == [],
    ),
    (
        Edit.add_real_server("CyberArk-PSM", PSM3),
        (
            "add",
            "CyberArk-PSM/PSM3",
            "add real server CyberArk-PSM/PSM3",
            "real server PSM3 added to CyberArk-PSM",
        ),
        lambda c: list(servers(c)) == ["PSM1", "PSM2", "PSM3"],
    ),
    (
        Edit.modify_real_server("CyberArk-PSM", "PSM2", {"weight": 50}),
        (
            "modify",
            "CyberArk-PSM/PSM2",
            "modify real server CyberArk-PSM/PSM2",
            "real server PSM2 of CyberArk-PSM modified",
        ),
        lambda c: servers(c)["PSM2"].weight == 50,
    ),
    (
        Edit.remove_real_server("CyberArk-PSM", "PSM2"),
        (
            "remove",
            "CyberArk-PSM/PSM2",
            "remove real server CyberArk-PSM/PSM2",
            "real server PSM2 deleted from CyberArk-PSM",
        ),
        lambda c: list(servers(c)) == ["PSM1"],
    ),
    *(
        (
            Edit.set_state("CyberArk-PSM", "PSM2", state),
            (
                state.value,
                "CyberArk-PSM/PSM2",
                f"{state.value} real server CyberArk-PSM/PSM2",
                f"real server PSM2 of CyberArk-PSM {said}",
            ),
            lambda c, state=state: servers(c)["PSM2"].state is state,
        )
        for state, said in (
            (RealServerState.DRAIN, "drained"),
            (RealServerState.HALT, "halted"),
            (RealServerState.ONLINE, "brought online"),
        )
    ),
    (
        Edit.restore(BACKUP),
        (
            "restore",
            "",
            "restored from a backup of revision 4",
            "the configuration restored from a backup of revision 4",
        ),
        lambda c: labels(c) == ["CyberArk-PSM-Web"],
    ),
    (
        Edit.psm_preset(**PRESET),
        (
            "preset",
            "psm",
            "add CyberArk PSM preset",
            "virtual services CyberArk-PSM and CyberArk-PSM-Web added with PSM servers P1",
        ),
        lambda c: labels(c) == [psm.RDP_LABEL, psm.WEB_LABEL],
    ),
]


@pytest.mark.parametrize(("edit", "words", "applied"), KINDS, ids=lambda k: getattr(k, "done", ""))
def test_every_kind_of_edit_says_itself_and_applies(
    edit: Edit, words: tuple[str, str, str, str], applied: Callable[[Config], bool]
) -> None:
    assert (edit.action, edit.target, edit.message, edit.done) == words
    # The preset is added to nothing: its first service's label is the base's own.
    before = Config() if edit.action == "preset" else base()
    after = edit.apply(before)
    assert applied(after)
    assert not applied(before) or edit.action == "online"  # online is what PSM2 already is


def last(app: WebApp) -> tuple[str, str, str, str]:
    """The newest audit entry's action, target and message, and the newest revision's."""
    entry = app.store.audit_log(1)[0]
    return entry.action, entry.target, entry.detail["message"], app.store.head().message


def said(edit: Edit) -> tuple[str, str, str, str]:
    return edit.action, edit.target, edit.message, edit.message


API = "/api/v1/virtual-services"
VIP = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        running.sign_in()
        yield running


def test_the_api_audits_and_saves_each_edit_as_the_edit_says(app: WebApp) -> None:
    on_psm3 = f"{API}/CyberArk-PSM/real-servers/PSM3"
    for method, url, body, edit in (
        ("POST", API, VIP, Edit.add_virtual_service(VIP)),
        (
            "PATCH",
            f"{API}/CyberArk-PSM",
            {"retries": 2},
            Edit.modify_virtual_service("CyberArk-PSM", {"retries": 2}),
        ),
        (
            "POST",
            f"{API}/CyberArk-PSM/real-servers",
            PSM3,
            Edit.add_real_server("CyberArk-PSM", PSM3),
        ),
        (
            "PATCH",
            on_psm3,
            {"weight": 5},
            Edit.modify_real_server("CyberArk-PSM", "PSM3", {"weight": 5}),
        ),
        (
            "POST",
            f"{on_psm3}/state",
            {"state": "drain"},
            Edit.set_state("CyberArk-PSM", "PSM3", RealServerState.DRAIN),
        ),
        ("DELETE", on_psm3, None, Edit.remove_real_server("CyberArk-PSM", "PSM3")),
        ("DELETE", f"{API}/CyberArk-PSM", None, Edit.remove_virtual_service("CyberArk-PSM")),
        ("POST", "/api/v1/presets/psm", PRESET, Edit.psm_preset(**PRESET)),
        ("POST", "/api/v1/restore", BACKUP, Edit.restore(BACKUP)),
    ):
        reply = app.local.request(method, url, json=body)
        assert reply.is_success, reply.text
        assert reply.json()["revision"] == app.store.head().id
        assert last(app) == said(edit), url


def test_the_webui_audits_saves_and_confirms_each_edit_as_the_edit_says(app: WebApp) -> None:
    wizard = {
        "label": "Web",
        "ip": "10.0.0.1",
        "ports": "80",
        "real_servers__0__label": "W1",
        "real_servers__0__ip": "10.0.0.5",
    }
    for url, changes, edit in (
        (f"{VS}/add", VIP, Edit.add_virtual_service(VIP)),
        (
            f"{VS}/CyberArk-PSM/modify",
            {"retries": "2"},
            Edit.modify_virtual_service("CyberArk-PSM", {}),
        ),
        (f"{RS}/CyberArk-PSM/add", PSM3, Edit.add_real_server("CyberArk-PSM", PSM3)),
        (
            f"{RS}/CyberArk-PSM/PSM3/modify",
            {"weight": "5"},
            Edit.modify_real_server("CyberArk-PSM", "PSM3", {}),
        ),
        (f"{RS}/CyberArk-PSM/PSM3/delete", {}, Edit.remove_real_server("CyberArk-PSM", "PSM3")),
        (f"{VS}/CyberArk-PSM/delete", {}, Edit.remove_virtual_service("CyberArk-PSM")),
        (LAYER_7, wizard, Edit.add_virtual_service({**wizard, "real_servers": [{"label": "W1"}]})),
        (f"{WEBUI}wizards/psm", None, Edit.psm_preset(servers=[("PSM1", ""), ("PSM2", "")])),
    ):
        if changes is None:
            reply = psm_wizard(app)
        else:
            reply = submit(app.network, url, **{k: str(v) for k, v in changes.items()})
        assert reply.status_code == 303, reply.text
        assert last(app) == said(edit), url
        page = app.network.get(reply.headers["location"]).text
        assert status(page) == f"Saved: {edit.done}. Commit to put it in service.", url
