//! Team scoping of the lifecycle (issue 11): a team's sandboxes and templates, and its limits on what it runs.

use crate::node::TemplateInfo;
use crate::store::{SandboxRecord, StoreError};

use super::{Lifecycle, LifecycleError, Result};
use crate::ids;

/// How long a team's admission holds its capacity when the replica that took it dies mid-create (a create with
/// a slow ready command fits).
const TEAM_HOLD_MS: i64 = 5 * 60 * 1000;

impl Lifecycle {
    /// The team's sandbox `id`; another team's answers exactly like a missing one (E2B's 404, no existence
    /// confirmed).
    pub async fn team_sandbox(&self, team_id: &str, id: &str) -> Result<SandboxRecord> {
        match self.store.get_sandbox(id).await {
            Ok(record) if record.team_id == team_id => Ok(record),
            Ok(_) | Err(StoreError::NotFound(_)) => Err(LifecycleError::NotFound(format!("sandbox {id} not found"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `team_id` may see and start the template `name`: a server template (no record: `base`, ...) is
    /// public, an API-built one belongs to its team unless public, a build's own runtime template (`sbb-...`) is
    /// reached only through its template's tags.
    pub async fn template_visible(&self, team_id: &str, name: &str) -> Result<bool> {
        if crate::names::is_internal_template(name) {
            return Ok(false);
        }
        Ok(match self.store.get_template_record(name).await? {
            Some(record) => record.team_id == team_id || record.public,
            None => true,
        })
    }

    /// The template `wanted` (`name` or `name:tag`) as `team_id` may start it; another team's private template
    /// is not found.
    pub async fn resolve_template(&self, team_id: &str, wanted: &str) -> Result<TemplateInfo> {
        let not_found = || LifecycleError::NotFound(format!("template '{wanted}' not found"));
        // `name:tag`: `default` is the runtime template `name`; another tag is the build it points at.
        let (name, tag) = crate::names::split_tag(wanted);
        let runtime_name = match tag {
            "default" => name.to_string(),
            tag if self.template_visible(team_id, name).await? => match self.store.tag_build(name, tag).await? {
                Some(build) => crate::names::build_template_name(&build),
                None => return Err(not_found()),
            },
            _ => return Err(not_found()),
        };
        let mut templates = self.template_node.templates().await?;
        let named = |t: &TemplateInfo| t.template_id == runtime_name || t.aliases.contains(&runtime_name);
        // A template SoulBox ships (`code-interpreter-v1`) is built the first time a create names it.
        if tag == "default" && self.ensure_shipped_template(&runtime_name).await? {
            templates = self.template_node.templates().await?;
        }
        let mut found = templates.into_iter().find(|t| named(t)).ok_or_else(not_found)?;
        // What was found must be visible itself (an alias could name another team's template); a tag's build
        // template was vouched for by its template above.
        let reached_by_tag = tag != "default" && found.template_id == runtime_name;
        if !reached_by_tag && !self.template_visible(team_id, &found.template_id).await? {
            return Err(not_found());
        }
        if tag != "default" {
            found.aliases = vec![wanted.to_string()];
        }
        Ok(found)
    }

    /// Admits a sandbox of `cpu`/`memory_mb` under the team's limits and holds that room until its record
    /// counts; `LimitExceeded` (429) when it does not fit.
    pub(super) async fn hold_team_capacity(&self, team_id: &str, cpu: u32, memory_mb: u32) -> Result<String> {
        let hold = format!("team-{}", ids::access_token());
        self.store.hold_team_capacity(&hold, team_id, cpu, memory_mb, TEAM_HOLD_MS, &self.config.team_limits).await?;
        Ok(hold)
    }

    pub(super) async fn release_team_hold(&self, hold: &str) {
        if let Err(e) = self.store.release_team_hold(hold).await {
            tracing::warn!(hold, error = %e, "could not release a team hold; it expires on its own");
        }
    }
}
