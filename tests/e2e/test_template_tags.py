"""Template tags (issue 5) through the official SDK: `Template.build(..., "name:tag", tags=[...])`,
`Template.get_tags`, `Template.assign_tags`, `Template.remove_tags`, `Template.exists`, and sandboxes created from
`name:tag`. Every template a test builds is deleted at teardown."""

from __future__ import annotations

import uuid
from typing import List

import pytest

from e2b import Sandbox, Template

from conftest import RUN_ID, Sandboxes

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def name(api):
    n = f"e2e-tags-{RUN_ID}-{uuid.uuid4().hex[:6]}".replace("+", "-").replace(".", "-")
    yield n
    api.delete(f"/templates/{n}")


def version_recipe(version: str):
    return Template().from_template("base").run_cmd(f"echo {version} > /home/user/version")


def read_version(sandboxes: Sandboxes, template: str) -> str:
    sbx = sandboxes.create(template=template)
    return sbx.commands.run("cat /home/user/version").stdout.strip()


def test_tags_point_names_at_builds(name, sandboxes: Sandboxes):
    v1 = Template.build(version_recipe("one"), f"{name}:v1", tags=["stable"])
    tags = {t.tag: t.build_id for t in Template.get_tags(name)}
    assert tags == {"v1": v1.build_id, "stable": v1.build_id}
    assert all(t.created_at is not None for t in Template.get_tags(name))
    assert Template.exists(name)
    assert not Template.exists(f"{name}-missing")

    v2 = Template.build(version_recipe("two"), f"{name}:v2")
    assert v2.build_id != v1.build_id
    assigned = Template.assign_tags(f"{name}:v2", ["prod", "default"])
    assert assigned.build_id == v2.build_id
    assert sorted(assigned.tags) == ["default", "prod"]

    # Each tag starts its own build; `name` alone is the `default` tag.
    for template, want in [(f"{name}:v1", "one"), (f"{name}:stable", "one"), (f"{name}:v2", "two"),
                           (f"{name}:prod", "two"), (name, "two")]:
        assert read_version(sandboxes, template) == want, template

    # Moving a tag: `stable` now points at v2's build.
    Template.assign_tags(f"{name}:v2", "stable")
    assert {t.tag: t.build_id for t in Template.get_tags(name)}["stable"] == v2.build_id
    assert read_version(sandboxes, f"{name}:stable") == "two"

    Template.remove_tags(name, ["prod"])
    assert "prod" not in {t.tag for t in Template.get_tags(name)}
    with pytest.raises(Exception, match="not found"):
        Sandbox.create(f"{name}:prod", timeout=60)
    assert read_version(sandboxes, f"{name}:v1") == "one", "other tags stay"


def test_tag_errors(name):
    with pytest.raises(Exception):
        Template.assign_tags(f"{name}:nope", ["x"])
    with pytest.raises(Exception):
        Template.get_tags(name)
    Template.build(version_recipe("one"), name)
    assert [t.tag for t in Template.get_tags(name)] == ["default"]
    with pytest.raises(Exception):
        Template.assign_tags(name, ["not a tag"])
