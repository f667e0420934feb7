-- Per-template OCI runtime (issue 13): the runtime a build asked for (`runtime` in `POST /v3/templates`, e.g.
-- `runsc`); its steps run on it and its template's sandboxes do. NULL: the base template's, else the node's default.
ALTER TABLE template_builds ADD COLUMN runtime TEXT;
