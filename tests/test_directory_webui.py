"""Directory sign-in on a running appliance: set up and tested with `balancer directory`, then
a directory user signs in through the WebUI in Chromium (DOMAIN\\user against a real slapd over
LDAPS) and an administrator's Test button says in one line what works or what failed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.appliance import appliance
from tests.browser import chromium, needs_chromium, open_page, playwright, sign_in
from tests.directory_servers import BASE_DN, READER_DN, READER_PASSWORD, USERS, authority, slapd
from tests.test_cli import balancer
from tests.test_webui_accessibility import AXE, RUN_AXE, SERIOUS


@needs_chromium
def test_set_up_from_the_command_line_and_signed_in_through_the_webui(tmp_path: Path) -> None:
    ca = tmp_path / "directory-ca.pem"
    with slapd(tmp_path / "slapd") as server, appliance(tmp_path / "box") as box:
        ca.write_text(server.ca.pem)
        admins = f"cn=balancer-admins,ou=groups,{BASE_DN}"
        done = balancer(
            box, "directory", "set", "--kind", "ldaps",
            "--server", f"127.0.0.1:{server.ldaps_port}", "--base-dn", BASE_DN,
            "--bind-dn", READER_DN, "--domain", "example.test", "--ca-file", str(ca),
            "--role", f"{admins}=administrator", "--role", "balancer-operators=operator",
            "--secret-stdin", stdin=READER_PASSWORD + "\n",
        )  # fmt: skip
        assert done.stdout == f"directory sign-in set: ldaps 127.0.0.1:{server.ldaps_port}\n"
        shown = balancer(box, "directory", "show")
        assert f"role              {admins} -> administrator\n" in shown.stdout
        assert "secret            set\n" in shown.stdout
        assert (
            READER_PASSWORD
            not in shown.stdout + balancer(box, "directory", "show", "--json").stdout
        )
        # A change of one setting keeps the rest, the secret too.
        balancer(box, "directory", "set", "--timeout", "4")
        settings = json.loads(balancer(box, "directory", "show", "--json").stdout)
        assert (settings["timeout"], settings["secret"], settings["bind_dn"]) == (
            4,
            "set",
            READER_DN,
        )
        tested = balancer(
            box, "directory", "test", "bob", "--password-stdin", stdin=USERS["bob"][0] + "\n"
        )
        assert tested.stdout.startswith("bob signs in as operator (groups: "), tested.stderr
        refused = balancer(box, "directory", "test", "carol", "--password-stdin", stdin="x\n")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: password: "), refused.stderr

        with chromium() as browser:
            page = open_page(browser, 1024, 900, bypass_csp=True)
            page.goto(box.webui)
            page.wait_for_url("**/lbadmin/sign-in")
            page.fill("#username", "EXAMPLE\\alice")
            page.fill("#password", USERS["alice"][0])
            page.click("button[type=submit]")
            page.wait_for_url("**/lbadmin/")
            playwright.expect(page.get_by_role("heading", name="System Overview")).to_be_visible()
            assert "alice" in page.content()
            # alice is an administrator: Local Configuration > Remote Authentication, Test.
            page.goto(f"{box.webui}local-configuration/remote-authentication")
            page.fill("#test-name", "bob@example.test")
            page.fill("#test-password", USERS["bob"][0])
            page.click("#directory-test-button")
            verdict = page.locator("#directory-verdict")
            playwright.expect(verdict).to_have_text(
                "bob signs in as operator (groups: "
                f"cn=helpdesk,ou=groups,{BASE_DN}, cn=balancer-operators,ou=groups,{BASE_DN})"
            )
            assert READER_PASSWORD not in page.content()
            page.add_script_tag(path=str(AXE))
            violations = page.evaluate(RUN_AXE, list(SERIOUS))
            assert violations == [], [(v["id"], v["targets"]) for v in violations]
            # The CA replaced by another: the Test says the certificate is not trusted.
            page.fill("#directory-ca", authority("Another CA").pem)
            page.click("#directory-settings button.primary")
            playwright.expect(page.get_by_role("status")).to_have_text(
                "Remote authentication saved; it holds at the next sign-in."
            )
            page.fill("#test-name", "alice")
            page.fill("#test-password", USERS["alice"][0])
            page.click("#directory-test-button")
            playwright.expect(verdict).to_contain_text("certificate: ")
            playwright.expect(verdict).to_contain_text("the server's certificate is not trusted")

            # A local user signs in with the directory unable to take anyone.
            other = browser.new_context(ignore_https_errors=True).new_page()
            sign_in(other, box)
        assert balancer(box, "directory", "off").stdout == "directory sign-in is off\n"
        shown = balancer(box, "directory", "show")
        assert shown.stdout == "directory sign-in is off: only local users sign in\n"
