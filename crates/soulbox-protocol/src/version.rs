//! Agent versions and the features they unlock (seed feature 3).
//!
//! Two numbers matter: the E2B protocol level envd reports as `envdVersion` (the official SDKs gate features on
//! it), and SoulBox's own crate version, reported separately in `/health`.

use semver::Version;

/// E2B envd protocol level SoulBox's agent implements; at least 0.6.4 so every SDK feature is enabled.
pub const ENVD_PROTOCOL_VERSION: &str = "0.6.13";
/// Oldest agent the SoulBox SDK talks to.
pub const MIN_SUPPORTED_ENVD_VERSION: &str = "0.1.0";
/// SoulBox's own version (all crates share the workspace version).
pub const SOULBOX_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A capability of the agent that only exists from some protocol version on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    RecursiveWatch,
    Metrics,
    DiskMetrics,
    CommandsStdin,
    DefaultUser,
    CloseStdin,
    OctetStreamUpload,
    FileMetadata,
    WatchEntryInfo,
    WatchNetworkMounts,
}

impl Feature {
    /// The first envd version with this feature (the constants of E2B's `envd/versions`).
    pub fn min_version(self) -> Version {
        let (major, minor, patch) = match self {
            Feature::RecursiveWatch => (0, 1, 4),
            Feature::Metrics => (0, 1, 5),
            Feature::DiskMetrics => (0, 2, 4),
            Feature::CommandsStdin => (0, 3, 0),
            Feature::DefaultUser => (0, 4, 0),
            Feature::CloseStdin => (0, 5, 2),
            Feature::OctetStreamUpload => (0, 5, 7),
            Feature::FileMetadata => (0, 6, 2),
            Feature::WatchEntryInfo => (0, 6, 3),
            Feature::WatchNetworkMounts => (0, 6, 4),
        };
        Version::new(major, minor, patch)
    }

    pub fn name(self) -> &'static str {
        match self {
            Feature::RecursiveWatch => "recursive watch",
            Feature::Metrics => "metrics",
            Feature::DiskMetrics => "disk metrics",
            Feature::CommandsStdin => "disabling command stdin",
            Feature::DefaultUser => "default user",
            Feature::CloseStdin => "closing stdin",
            Feature::OctetStreamUpload => "octet-stream upload",
            Feature::FileMetadata => "file metadata",
            Feature::WatchEntryInfo => "watch entry info",
            Feature::WatchNetworkMounts => "watching network mounts",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("agent version {0:?} is not a semantic version")]
    Unparsable(String),
    #[error("agent version {found} is too old: the minimum supported version is {minimum}")]
    TooOld { found: Version, minimum: Version },
    #[error("{feature} needs agent version {required} or newer, this sandbox runs {found}; rebuild the template")]
    FeatureUnsupported { feature: &'static str, required: Version, found: Version },
}

/// Parses an agent version, tolerating a leading `v` and missing minor/patch parts (`"0.2"`).
pub fn parse_version(raw: &str) -> Result<Version, VersionError> {
    let trimmed = raw.trim().trim_start_matches('v');
    let mut parts: Vec<&str> = trimmed.splitn(3, '.').collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    Version::parse(&parts.join(".")).map_err(|_| VersionError::Unparsable(raw.to_owned()))
}

/// Refuses agents older than [`MIN_SUPPORTED_ENVD_VERSION`].
pub fn check_supported(found: &Version) -> Result<(), VersionError> {
    let minimum = parse_version(MIN_SUPPORTED_ENVD_VERSION)?;
    if *found < minimum {
        return Err(VersionError::TooOld { found: found.clone(), minimum });
    }
    Ok(())
}

/// Errors with a message naming the version needed when `found` lacks `feature`.
pub fn require(found: &Version, feature: Feature) -> Result<(), VersionError> {
    let required = feature.min_version();
    if *found < required {
        return Err(VersionError::FeatureUnsupported { feature: feature.name(), required, found: found.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_version_enables_every_feature() {
        let v = parse_version(ENVD_PROTOCOL_VERSION).unwrap();
        assert!(v >= Version::new(0, 6, 4));
        for f in [Feature::RecursiveWatch, Feature::FileMetadata, Feature::WatchNetworkMounts] {
            require(&v, f).unwrap();
        }
    }

    #[test]
    fn gates_name_the_required_version() {
        let old = parse_version("0.1.3").unwrap();
        let err = require(&old, Feature::RecursiveWatch).unwrap_err();
        assert!(err.to_string().contains("0.1.4"), "{err}");
        assert_eq!(
            check_supported(&parse_version("0.0.9").unwrap()).unwrap_err().to_string(),
            "agent version 0.0.9 is too old: the minimum supported version is 0.1.0"
        );
    }

    #[test]
    fn lenient_parsing() {
        assert_eq!(parse_version("v0.2").unwrap(), Version::new(0, 2, 0));
        assert!(parse_version("banana").is_err());
    }
}
