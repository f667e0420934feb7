"""Secrets with the official e2b SDK's `Secret` / `AsyncSecret` against `soulbox server`: create, get_info by id
and by name, update (new versions), list page by page, exists, destroy. Values are write-only: no answer carries
one, and the server's log never shows one.

Secrets live in the run's persistent data dir: names carry the run id, and the fixture destroys what a test made
(team scoping is proven by the Rust API tests and tests/security)."""

from __future__ import annotations

import uuid

import e2b
import pytest

from conftest import RUN_ID, SERVER_LOG

Secret = getattr(e2b, "Secret", None)
AsyncSecret = getattr(e2b, "AsyncSecret", None)
pytestmark = pytest.mark.skipif(Secret is None, reason="this e2b SDK has no Secret class (secrets came later)")


def canary() -> str:
    return f"e2e-secret-value-{uuid.uuid4().hex}"


@pytest.fixture
def names(api):
    """Secret names a test made; destroyed at teardown (raw HTTP, so a failed SDK call cannot skip it)."""
    made: list[str] = []
    yield made
    for name in made:
        api.delete(f"/secrets/{name.lower()}")


def no_value_in(text: str, *values: str) -> None:
    for value in values:
        assert value not in text, f"a secret value leaked: {text[:500]}"


def test_secret_lifecycle_through_the_sdk(api, names):
    name = f"E2E-{RUN_ID}-openai"
    names.append(name)
    values = [canary(), canary(), canary()]

    info = Secret.create(name, values[0], metadata={"run": RUN_ID})
    assert info.name == name.lower(), "names are stored lower-cased"
    assert info.secret_id.startswith("sec_"), info.secret_id
    assert (info.version, info.metadata) == (1, {"run": RUN_ID})
    assert info.created_at == info.updated_at
    for key in (info.secret_id, name, name.lower()):
        assert Secret.get_info(key) == info, key
    assert Secret.exists(name)

    # Each update is the next version; metadata stays unless given.
    updated = Secret.update(name, values[1])
    assert (updated.secret_id, updated.version, updated.metadata) == (info.secret_id, 2, {"run": RUN_ID})
    assert updated.updated_at >= info.updated_at and updated.created_at == info.created_at
    updated = Secret.update(info.secret_id, values[2], metadata={})
    assert (updated.version, updated.metadata) == (3, {})
    assert Secret.get_info(name).version == 3

    # Page by page: ours exactly once, in creation order among the others.
    others = [Secret.create(f"e2e-{RUN_ID}-page-{i}", canary()).name for i in range(3)]
    names.extend(others)
    paginator = Secret.list(limit=2)
    listed = []
    while paginator.has_next:
        page = paginator.next_items()
        assert len(page) <= 2
        listed.extend(page)
    ours = [s.name for s in listed if RUN_ID in s.name]
    assert ours == [name.lower(), *others], ours

    # Raw answers carry no value either (the SDK's models would drop an extra field).
    for path in ("/secrets", f"/secrets/{info.secret_id}", f"/secrets/{name.lower()}"):
        r = api.get(path)
        assert r.status_code == 200, r.text
        no_value_in(r.text + str(r.headers), *values)

    assert Secret.destroy(name) is True
    assert Secret.destroy(info.secret_id) is False, "already gone"
    assert not Secret.exists(name)
    with pytest.raises(e2b.SecretNotFoundException):
        Secret.get_info(info.secret_id)
    with pytest.raises(e2b.SecretNotFoundException):
        Secret.update(name, canary())

    if SERVER_LOG:
        with open(SERVER_LOG, encoding="utf-8", errors="replace") as f:
            no_value_in(f.read(), *values)


def test_refusals_name_no_value(names):
    name = f"e2e-{RUN_ID}-dup"
    names.append(name)
    value = canary()
    Secret.create(name, value)
    with pytest.raises(e2b.SecretException) as dup:
        Secret.create(name.upper(), value)
    assert "409" in str(dup.value), dup.value
    for bad in ("sec_reserved", "with{brace}", "tab\tinside", "x" * 257):
        with pytest.raises(e2b.SecretException) as refused:
            Secret.create(bad, value)
        assert "400" in str(refused.value), (bad, refused.value)
        no_value_in(str(refused.value), value)
    with pytest.raises(e2b.SecretException) as big:
        Secret.create(f"e2e-{RUN_ID}-big", "x" * (64 * 1024 + 1))
    assert "400" in str(big.value)
    no_value_in(str(dup.value), value)
    # The SDK's own placeholder helper accepts the stored (canonical) name.
    assert Secret.fill(name) == f"${{e2b.secrets.{name}}}"


async def test_async_secret(names):
    if AsyncSecret is None:
        pytest.skip("this e2b SDK has no AsyncSecret")
    name = f"e2e-{RUN_ID}-async"
    names.append(name)
    info = await AsyncSecret.create(name, canary(), metadata={"k": "v"})
    assert (await AsyncSecret.get_info(info.secret_id)).metadata == {"k": "v"}
    assert (await AsyncSecret.update(name, canary())).version == 2
    assert await AsyncSecret.exists(name)
    assert await AsyncSecret.destroy(name)
    assert not await AsyncSecret.exists(info.secret_id)
