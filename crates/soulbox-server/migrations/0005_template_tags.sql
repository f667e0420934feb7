-- Template tags (issue 5): `name:tag` points at one build of the template. Each successful build is its own
-- runtime template (`sbb-<buildID>`); the `default` tag is also the runtime template `<name>` itself.
-- `template_builds.tags`: the tags a build asked for (JSON array), assigned when it succeeds.
ALTER TABLE template_builds ADD COLUMN tags TEXT;

CREATE TABLE template_tags (
    template_id TEXT NOT NULL,
    tag         TEXT NOT NULL,
    build_id    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (template_id, tag)
);
