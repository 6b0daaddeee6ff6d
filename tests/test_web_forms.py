"""The Cluster Configuration forms and wizards in process, on a fake engine: what each saves,
and that a refused form saves nothing, keeps what was typed and names the field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from balancer import configuration, help
from balancer.model import Config, RealServer, VirtualService
from balancer.presets.psm import RDP_PORT, WEB_PORT, add_psm
from balancer.web.cluster_configuration import shown
from tests.webapp import WebApp, webapp

VS = "/lbadmin/virtual-services"
RS = "/lbadmin/real-servers"
PSM_WIZARD = "/lbadmin/wizards/psm"
# The guide's answers to the PSM wizard: its VIPs and its two PSM servers.
GUIDE_PSM = {
    "rdp_vip": "192.168.94.100",
    "web_vip": "192.168.94.101",
    "servers__0__ip": "192.168.94.105",
    "servers__1__ip": "192.168.94.106",
}


class Fields(HTMLParser):
    """The fields of the page's last form with a ``revision``, as a browser would send them."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.action = ""
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method") == "post" and "sign-out" not in a.get("action", ""):
            self.action = a["action"]
        elif tag == "input" and "name" in a and a.get("type") not in ("submit",):
            if a.get("type") != "checkbox" or "checked" in a:
                self.values[a["name"]] = a.get("value", "")
        elif tag == "select":
            self._select = a["name"]
        elif (
            tag == "option"
            and self._select
            and ("selected" in a or self._select not in self.values)
        ):
            self.values[self._select] = a["value"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def fields(page: str) -> Fields:
    found = Fields()
    found.feed(page)
    return found


def submit(client: TestClient, url: str, **changes: str | None) -> Any:
    """Open ``url``, change its form as a user would (None unticks or clears), and send it."""
    form = fields(client.get(url).text)
    values = dict(form.values)
    for name, value in changes.items():
        name = name.replace("__", ".")
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return client.post(form.action, data=values, follow_redirects=False)


def field_error(page: str, name: str) -> str:
    """The reason shown next to field ``name``."""
    field = page.split(f'data-field="{name}"', 1)[1].split("data-field=", 1)[0]
    found = re.search(r'class="field-error"[^>]*>([^<]*)<', field)
    assert found, f"no error shown next to {name}"
    return unescape(found.group(1))


def cell_error(page: str, control: str) -> str:
    """The reason shown under a control in a row of servers."""
    found = re.search(rf'id="{re.escape(control)}-error"[^>]*>([^<]*)<', page)
    assert found, f"no error shown for {control}"
    return unescape(found.group(1))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        running.sign_in()
        yield running


def saved(app: WebApp, label: str) -> VirtualService:
    """The newest revision's virtual service ``label``, which must be there."""
    vs = app.store.head().config.virtual_service(label)
    assert vs is not None, f"no virtual service {label} saved"
    return vs


def psm_wizard(app: WebApp, **changes: str) -> Any:
    """The PSM wizard sent with the guide's answers, but for ``changes``."""
    return submit(app.network, PSM_WIZARD, **{**GUIDE_PSM, **changes})


def web_service(app: WebApp) -> None:
    reply = submit(app.network, f"{VS}/add", label="Web", ip="10.0.0.1", ports="80")
    assert reply.status_code == 303, reply.text


def test_add_a_virtual_service_as_the_guide_does(app: WebApp) -> None:
    reply = submit(
        app.network, f"{VS}/add", label="CyberArk-PSM", ip="192.168.94.100", ports="3389"
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == VS
    vs = saved(app, "CyberArk-PSM")
    assert (str(vs.ip), vs.ports, vs.protocol) == ("192.168.94.100", ((3389, 3389),), "tcp")
    assert app.store.head().author == "loadbalancer"
    listing = app.network.get(VS).text
    assert 'data-service="CyberArk-PSM"' in listing
    assert "192.168.94.100" in listing


def test_modify_sets_the_guides_persistence_and_health_check(app: WebApp) -> None:
    web_service(app)
    reply = submit(
        app.network,
        f"{VS}/Web/modify",
        persistence__mode="source_ip",
        health_check__type="https:GET",
        health_check__port="443",
        health_check__path="/psm/api/health",
        health_check__expect="PASS",
    )
    assert reply.status_code == 303, reply.text
    vs = saved(app, "Web")
    check = vs.health_check.model_dump(mode="json")
    assert check["type"] == "https"
    assert check["method"] == "GET"
    assert (check["port"], check["path"], check["expect"]) == (443, "/psm/api/health", "PASS")
    assert vs.persistence.mode.value == "source_ip"
    # The Modify page shows what was saved, in the guide's words.
    again = fields(app.network.get(f"{VS}/Web/modify").text).values
    assert again["health_check.type"] == "https:GET"
    assert again["health_check.port"] == "443"
    listed = app.network.get(VS).text
    assert ">Negotiate HTTPS (GET)</span>" in listed
    assert ">/psm/api/health for PASS, port 443</span>" in listed

    # Another kind of check leaves the negotiate fields behind, hidden on the page.
    reply = submit(app.network, f"{VS}/Web/modify", health_check__type="connect")
    assert reply.status_code == 303, reply.text
    vs = saved(app, "Web")
    assert (vs.health_check.type.value, vs.health_check.path) == ("connect", None)


def test_every_field_has_the_guides_help(app: WebApp) -> None:
    web_service(app)
    pages = {
        f"{VS}/Web/modify": help.VIRTUAL_SERVICE,
        f"{VS}/add": {name: help.VIRTUAL_SERVICE[name] for name in ("label", "ip", "ports")},
        f"{RS}/Web/add": help.REAL_SERVER,
        "/lbadmin/wizards/psm": help.PSM,
    }
    for url, about in pages.items():
        page = unescape(app.network.get(url).text)
        for name, entry in about.items():
            assert f"Help: {entry.label}" in page, (url, name)
            assert entry.text in page, (url, name)
    # Every control a form sends has a "?" of its own.
    page = app.network.get(f"{VS}/Web/modify").text
    sent = set(fields(page).values) - {"csrf_token", "revision"}
    sent |= {"health_check.also_check_service_port"}  # unticked, so not sent
    assert sent == set(help.VIRTUAL_SERVICE)
    assert "Default: 43200." in unescape(page)  # client_timeout, from balancer.defaults


def test_a_bad_address_is_refused_next_to_its_field_and_nothing_is_saved(app: WebApp) -> None:
    before = app.store.head().id
    reply = submit(app.network, f"{VS}/add", label="Web", ip="10.0.0.1O", ports="80")
    assert reply.status_code == 422
    assert field_error(reply.text, "ip") == "'10.0.0.1O' is not an IPv4 or IPv6 address"
    assert 'aria-invalid="true"' in reply.text
    kept = fields(reply.text).values
    assert (kept["label"], kept["ip"], kept["ports"]) == ("Web", "10.0.0.1O", "80")
    assert kept["revision"] == str(before)
    assert app.store.head().id == before
    # The same form, put right, is saved: nothing about the refusal sticks.
    fixed = app.network.post(f"{VS}/add", data={**kept, "ip": "10.0.0.1"}, follow_redirects=False)
    assert fixed.status_code == 303


def test_a_port_clash_names_the_service_it_clashes_with(app: WebApp) -> None:
    web_service(app)
    before = app.store.head().id
    reply = submit(app.network, f"{VS}/add", label="Other", ip="10.0.0.1", ports="443,80")
    assert reply.status_code == 422
    assert field_error(reply.text, "ports") == "10.0.0.1:80 is already used by 'Web'"
    assert app.store.head().id == before


def test_problems_in_the_modify_sections_are_named_by_field(app: WebApp) -> None:
    web_service(app)
    before = app.store.head().id
    reply = submit(
        app.network,
        f"{VS}/Web/modify",
        health_check__rise="many",
        fallback__ip="10.0.0.9",
    )
    assert reply.status_code == 422
    assert field_error(reply.text, "health_check.rise") == "'many' is not a whole number"
    assert field_error(reply.text, "fallback.port")
    assert fields(reply.text).values["health_check.rise"] == "many"
    reply = submit(app.network, f"{VS}/Web/modify", health_check__type="https:GET")
    assert field_error(reply.text, "health_check.path") == "a negotiate HTTPS check needs a path"
    reply = submit(
        app.network,
        f"{VS}/Web/modify",
        health_check__type="https:HEAD",
        health_check__path="/",
        health_check__expect="PASS",
    )
    assert "a HEAD request has no body" in field_error(reply.text, "health_check.expect")
    assert app.store.head().id == before


def test_a_stale_form_is_refused_rather_than_overwriting(app: WebApp) -> None:
    web_service(app)
    opened = fields(app.network.get(f"{VS}/Web/modify").text).values
    # Someone else changes the service after the page was opened.
    changed = app.local.patch("/api/v1/virtual-services/Web", json={"retries": 5})
    assert changed.status_code == 200, changed.text
    after = app.store.head()
    reply = app.network.post(
        f"{VS}/Web/modify", data={**opened, "retries": "7"}, follow_redirects=False
    )
    assert reply.status_code == 409
    assert "changed by someone else since you opened this page" in reply.text
    assert fields(reply.text).values["retries"] == "7"
    assert app.store.head().id == after.id
    vs = saved(app, "Web")
    assert vs.retries == 5


def test_real_servers_add_modify_and_delete(app: WebApp) -> None:
    web_service(app)
    reply = submit(app.network, f"{RS}/Web/add", label="PSM1", ip="10.0.0.5", port="8080")
    assert reply.status_code == 303, reply.text
    assert reply.headers["location"] == RS
    listing = app.network.get(RS).text
    assert 'data-server="Web/PSM1"' in listing

    reply = submit(app.network, f"{RS}/Web/PSM1/modify", weight="50", port="")
    assert reply.status_code == 303, reply.text
    vs = saved(app, "Web")
    rs = vs.real_server("PSM1")
    assert rs is not None
    assert (rs.weight, rs.port, str(rs.ip)) == (50, None, "10.0.0.5")

    before = app.store.head().id
    reply = submit(app.network, f"{RS}/Web/add", label="PSM1", ip="10.0.0.256")
    assert reply.status_code == 422
    assert field_error(reply.text, "ip") == "'10.0.0.256' is not an IPv4 or IPv6 address"
    assert app.store.head().id == before
    reply = submit(app.network, f"{RS}/Web/add", label="PSM1", ip="10.0.0.6")
    assert field_error(reply.text, "label") == "'PSM1' is used twice"

    confirm = app.network.get(f"{RS}/Web/PSM1/delete").text
    assert "Delete the real server PSM1 (10.0.0.5) of virtual service Web?" in confirm
    reply = submit(app.network, f"{RS}/Web/PSM1/delete")
    assert reply.status_code == 303
    vs = saved(app, "Web")
    assert vs.real_servers == ()
    assert app.network.get(f"{RS}/Web/PSM1/modify").status_code == 404


def test_delete_a_virtual_service_after_asking(app: WebApp) -> None:
    web_service(app)
    assert app.network.get(f"{VS}/Web/delete").status_code == 200
    assert app.store.head().config.virtual_service("Web") is not None  # asking deletes nothing
    reply = submit(app.network, f"{VS}/Web/delete")
    assert reply.status_code == 303
    assert app.store.head().config.virtual_services == ()
    assert ("loadbalancer", "remove", "Web") in {
        (e.author, e.action, e.target) for e in app.store.audit_log(5)
    }
    assert app.network.get(f"{VS}/Web/modify").status_code == 404


def test_a_form_without_its_csrf_token_is_refused(app: WebApp) -> None:
    form = fields(app.network.get(f"{VS}/add").text).values
    form.update(label="Web", ip="10.0.0.1", ports="80")
    del form["csrf_token"]
    reply = app.network.post(f"{VS}/add", data=form, follow_redirects=False)
    assert reply.status_code == 403
    assert app.store.head().config.virtual_services == ()


def test_the_psm_wizard_makes_what_the_preset_makes(app: WebApp) -> None:
    reply = psm_wizard(app)
    assert reply.status_code == 303, reply.text
    servers = [("PSM1", "192.168.94.105"), ("PSM2", "192.168.94.106")]
    expected = add_psm(
        Config(), rdp_vip="192.168.94.100", web_vip="192.168.94.101", servers=servers
    )
    assert app.store.head().config == expected


def test_the_psm_wizard_grows_a_row_and_takes_cyberarks_recommendations(app: WebApp) -> None:
    grown = submit(app.network, PSM_WIZARD, rdp_vip="192.168.94.100", more="1")
    assert grown.status_code == 200
    assert app.store.head().id == 0  # adding a row saves nothing
    form = fields(grown.text).values
    assert form["rows"] == "3"
    assert form["rdp_vip"] == "192.168.94.100"
    form.update(
        {
            "web_vip": "192.168.94.101",
            "servers.0.ip": "192.168.94.105",
            "servers.1.ip": "192.168.94.106",
            "servers.2.label": "PSM3",
            "servers.2.ip": "192.168.94.107",
            "recommended": "on",
            "rdp_port": "13389",
        }
    )
    reply = app.network.post(PSM_WIZARD, data=form, follow_redirects=False)
    assert reply.status_code == 303, reply.text
    rdp = saved(app, "CyberArk-PSM")
    assert [rs.label for rs in rdp.real_servers] == ["PSM1", "PSM2", "PSM3"]
    assert rdp.ports == ((13389, 13389),)
    assert rdp.balancing.value == "least_connections"
    assert rdp.health_check.also_check_service_port


def test_the_psm_wizard_names_the_field_of_each_problem(app: WebApp) -> None:
    reply = psm_wizard(app, servers__1__ip="192.168.94.1O6")
    assert reply.status_code == 422
    assert (
        cell_error(reply.text, "f-servers-1-ip")
        == "'192.168.94.1O6' is not an IPv4 or IPv6 address"
    )
    reply = psm_wizard(app, rdp_port="RDP")
    assert field_error(reply.text, "rdp_port") == "'RDP' is not a whole number"
    reply = psm_wizard(app, web_vip="192.168.94.100", rdp_port="443")
    assert (
        field_error(reply.text, "web_port")
        == "192.168.94.100:443 is already used by 'CyberArk-PSM'"
    )
    assert app.store.head().id == 0


def test_the_setup_wizard_makes_a_service_and_its_servers_in_one_revision(app: WebApp) -> None:
    wizard = "/lbadmin/wizards/layer-7"
    reply = submit(
        app.network,
        wizard,
        label="Gateway",
        ip="10.0.0.1",
        ports="443",
        health_check__type="https:GET",
        health_check__path="/psm/api/health",
        health_check__expect="PASS",
        real_servers__0__label="GW1",
        real_servers__0__ip="10.0.0.5",
    )  # the second row is left empty
    assert reply.status_code == 303, reply.text
    document = {
        "label": "Gateway",
        "ip": "10.0.0.1",
        "ports": "443",
        "health_check": {"type": "https", "path": "/psm/api/health", "expect": "PASS"},
        "real_servers": [{"label": "GW1", "ip": "10.0.0.5"}],
    }
    assert app.store.head().config == configuration.add_virtual_service(Config(), document)
    assert app.store.head().id == 1

    reply = submit(
        app.network,
        wizard,
        label="Gateway2",
        ip="10.0.0.2",
        ports="443",
        real_servers__0__label="GW1",
        real_servers__0__ip="10.0.0.5",
        real_servers__1__label="GW 2",
        real_servers__1__ip="10.0.0.6",
    )
    assert reply.status_code == 422
    assert cell_error(reply.text, "f-real_servers-1-label") == (
        "use letters, digits, dots, dashes and underscores, up to 64 characters, "
        "starting with a letter or digit"
    )
    assert app.store.head().id == 1


def model_default(model: type[BaseModel], name: str) -> str | None:
    """What the form should show in field ``name`` (dotted, as "persistence.mode") of a new
    ``model``: its default as a form shows it, or None where the field is required."""
    *sections, last = name.split(".")
    for section in sections:
        annotation = model.model_fields[section].annotation
        assert isinstance(annotation, type), name
        assert issubclass(annotation, BaseModel), name
        model = annotation
    info = model.model_fields[last]
    return None if info.is_required() else shown(info.get_default(call_default_factory=True))


FORMS = {
    f"{VS}/add": lambda name: model_default(VirtualService, name),
    f"{RS}/Web/add": lambda name: model_default(RealServer, name),
    "/lbadmin/wizards/layer-7": lambda name: model_default(
        *(
            (RealServer, name.split(".", 2)[2])
            if name.startswith("real_servers.")
            else (VirtualService, name)
        )
    ),
}


@pytest.mark.parametrize("url", FORMS)
def test_every_field_of_a_new_form_is_empty_or_the_models_default(app: WebApp, url: str) -> None:
    web_service(app)
    page = app.network.get(url).text
    values = fields(page).values
    assert "PydanticUndefined" not in page
    for name, value in values.items():
        if name in ("csrf_token", "revision", "rows"):
            continue
        default = FORMS[url](name)
        assert value == (default or ""), name
        assert value not in ("None", "PydanticUndefined"), name


def test_the_psm_wizard_starts_with_the_presets_defaults_and_no_addresses(app: WebApp) -> None:
    values = fields(app.network.get(PSM_WIZARD).text).values
    assert (values["rdp_port"], values["web_port"]) == (str(RDP_PORT), str(WEB_PORT))
    assert (values["servers.0.label"], values["servers.1.label"]) == ("PSM1", "PSM2")
    for name in ("rdp_vip", "web_vip", "check_port", "servers.0.ip", "servers.1.ip"):
        assert values[name] == "", name


def test_local_configuration_and_passwords_start_with_what_is_saved(app: WebApp) -> None:
    node = app.store.node_settings()
    page = app.network.get("/lbadmin/local-configuration").text
    for text in ("PydanticUndefined", 'value="None"'):
        assert text not in page
    assert f'value="{node.https_port}"' in page
    assert 'name="http_port" value=""' in page
    assert 'name="listen_address" value=""' in page
    passwords = app.network.get("/lbadmin/maintenance/passwords").text
    assert "PydanticUndefined" not in passwords
    assert not re.search(r'type="password"[^>]* value=', passwords)


def status(page: str) -> str:
    found = re.search(r'role="status">([^<]*)<', page)
    return unescape(found.group(1)) if found else ""


def test_every_save_says_what_it_saved_once(app: WebApp) -> None:
    web_service(app)
    assert status(app.network.get(VS).text) == (
        "Saved: virtual service Web added. Commit to put it in service."
    )
    assert status(app.network.get(VS).text) == ""  # a reload does not say it again
    reply = submit(app.network, f"{RS}/Web/add", label="PSM2", ip="10.0.0.6")
    assert reply.status_code == 303
    assert app.network.get(VS).status_code == 200  # said on the next page only
    assert status(app.network.get(RS).text) == ""
    submit(app.network, f"{RS}/Web/add", label="PSM1", ip="10.0.0.5")
    assert status(app.network.get(RS).text) == (
        "Saved: real server PSM1 added to Web. Commit to put it in service."
    )
    submit(app.network, f"{RS}/Web/PSM1/modify", weight="50")
    assert status(app.network.get(RS).text).startswith("Saved: real server PSM1 of Web modified")
    submit(app.network, f"{RS}/Web/PSM1/delete")
    assert status(app.network.get(RS).text).startswith("Saved: real server PSM1 deleted from Web")
    submit(app.network, f"{VS}/Web/modify", retries="2")
    assert status(app.network.get(VS).text).startswith("Saved: virtual service Web modified")
    psm_wizard(app)
    assert status(app.network.get(VS).text).startswith(
        "Saved: virtual services CyberArk-PSM and CyberArk-PSM-Web added with PSM servers "
        "PSM1, PSM2"
    )
    submit(app.network, f"{VS}/Web/delete")
    assert status(app.network.get(VS).text).startswith("Saved: virtual service Web deleted")
