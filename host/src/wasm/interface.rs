//! Versioned WIT interface names and version negotiation.
//!
//! A host adapter lists the interface versions it can bind (go-plugin's `VersionedPlugins`);
//! [`negotiate`] picks the highest of them that the component exports, or explains, with both
//! lists, why there is none.

use std::fmt;
use std::str::FromStr;

use semver::Version;

use crate::error::{Error, Result};

/// A WIT interface name such as `plinth:kv/store@0.1.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceName {
    package: String,
    interface: String,
    version: Option<Version>,
}

impl InterfaceName {
    /// The package, `namespace:name` (`plinth:kv`).
    pub fn package(&self) -> &str {
        &self.package
    }

    /// The interface within the package (`store`).
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The package version, if the name has one.
    pub fn version(&self) -> Option<&Version> {
        self.version.as_ref()
    }

    /// The name without its version (`plinth:kv/store`).
    pub fn unversioned(&self) -> String {
        format!("{}/{}", self.package, self.interface)
    }
}

impl FromStr for InterfaceName {
    type Err = Error;

    fn from_str(name: &str) -> Result<InterfaceName> {
        let invalid = |reason: &str| Error::Config {
            reason: format!(
                "{name:?} is not a WIT interface name ({reason}); expected \
                 `namespace:package/interface@version`"
            ),
        };
        let (path, version) = match name.split_once('@') {
            Some((path, version)) => {
                let version = Version::parse(version).map_err(|_| invalid("bad version"))?;
                (path, Some(version))
            }
            None => (name, None),
        };
        let (package, interface) = path.split_once('/').ok_or_else(|| invalid("no `/`"))?;
        let (namespace, package_name) = package.split_once(':').ok_or_else(|| invalid("no `:`"))?;
        if [namespace, package_name, interface]
            .iter()
            .any(|part| part.is_empty())
        {
            return Err(invalid("an empty part"));
        }
        Ok(InterfaceName {
            package: package.to_owned(),
            interface: interface.to_owned(),
            version,
        })
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.package, self.interface)?;
        if let Some(version) = &self.version {
            write!(f, "@{version}")?;
        }
        Ok(())
    }
}

/// Picks the highest version in `accepted` that the component `exported`.
///
/// Names must match exactly, version included. When nothing matches, the error says whether
/// the component exports the interface in other versions ([`Error::UnsupportedVersion`]) or not
/// at all ([`Error::InterfaceNotExported`]).
pub fn negotiate(
    plugin: &str,
    exported: &[String],
    accepted: &[InterfaceName],
) -> Result<InterfaceName> {
    let best = accepted
        .iter()
        .filter(|want| exported.iter().any(|e| *e == want.to_string()))
        .max_by(|a, b| a.version.cmp(&b.version));
    if let Some(best) = best {
        return Ok(best.clone());
    }
    let wanted: Vec<String> = accepted.iter().map(InterfaceName::unversioned).collect();
    let same_interface: Vec<String> = exported
        .iter()
        .filter(|e| {
            e.parse::<InterfaceName>()
                .is_ok_and(|name| wanted.contains(&name.unversioned()))
        })
        .cloned()
        .collect();
    if same_interface.is_empty() {
        let mut expected = wanted;
        expected.dedup();
        return Err(Error::InterfaceNotExported {
            plugin: plugin.to_owned(),
            expected: expected.join(" or "),
            exported: exported.to_vec(),
        });
    }
    Err(Error::UnsupportedVersion {
        plugin: plugin.to_owned(),
        exported: same_interface,
        accepted: accepted.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<InterfaceName> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_and_prints_names() {
        let name: InterfaceName = "plinth:kv/store@0.1.0".parse().unwrap();
        assert_eq!(name.package(), "plinth:kv");
        assert_eq!(name.interface(), "store");
        assert_eq!(name.version(), Some(&Version::new(0, 1, 0)));
        assert_eq!(name.to_string(), "plinth:kv/store@0.1.0");
        assert_eq!(name.unversioned(), "plinth:kv/store");
        let bare: InterfaceName = "wasi:cli/run".parse().unwrap();
        assert_eq!(bare.version(), None);
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "store",
            "plinth/store",
            "plinth:kv/",
            ":kv/store",
            "plinth:kv/store@x",
        ] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn picks_the_highest_common_version() {
        let exported = strings(&[
            "plinth:greeter/greeter@0.1.0",
            "plinth:greeter/greeter@0.2.0",
        ]);
        let accepted = names(&[
            "plinth:greeter/greeter@0.1.0",
            "plinth:greeter/greeter@0.2.0",
        ]);
        let picked = negotiate("g", &exported, &accepted).unwrap();
        assert_eq!(picked.to_string(), "plinth:greeter/greeter@0.2.0");
        let old_host = names(&["plinth:greeter/greeter@0.1.0"]);
        let picked = negotiate("g", &exported, &old_host).unwrap();
        assert_eq!(picked.to_string(), "plinth:greeter/greeter@0.1.0");
    }

    #[test]
    fn no_common_version_lists_both_sides() {
        let exported = strings(&["plinth:greeter/greeter@0.1.0"]);
        let accepted = names(&["plinth:greeter/greeter@0.2.0"]);
        let err = negotiate("g", &exported, &accepted).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::UnsupportedVersion { .. }), "{text}");
        assert!(
            text.contains("exports [plinth:greeter/greeter@0.1.0]"),
            "{text}"
        );
        assert!(
            text.contains("accepts [plinth:greeter/greeter@0.2.0]"),
            "{text}"
        );
    }

    #[test]
    fn another_interface_entirely_is_not_exported() {
        let exported = strings(&["plinth:kv/store@0.1.0"]);
        let accepted = names(&["plinth:greeter/greeter@0.2.0"]);
        let err = negotiate("g", &exported, &accepted).unwrap_err();
        assert!(matches!(err, Error::InterfaceNotExported { .. }), "{err}");
        assert!(err.to_string().contains("plinth:kv/store@0.1.0"), "{err}");
    }
}
