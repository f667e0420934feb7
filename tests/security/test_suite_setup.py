"""The suite's own preconditions: the keys it attacks with work, and root inside a sandbox is what tests use."""

from conftest import root_run


def test_both_teams_and_the_admin_key_are_accepted(api, api_b, admin):
    for client in (api, api_b, admin):
        r = client.get("/v2/sandboxes")
        assert r.status_code == 200, r.text


def test_commands_run_as_root_inside(victim):
    r = root_run(victim, "id -u")
    assert r.exit_code == 0 and r.stdout.strip() == "0", r
