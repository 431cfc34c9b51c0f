//! Reattach: connecting to a plugin that is already running, instead of launching one.
//!
//! [`ReattachConfig`] has the fields go-plugin's has and serialises as Terraform's
//! `TF_REATTACH_PROVIDERS` entries do (`{"Protocol":"grpc","ProtocolVersion":1,"Pid":41234,
//! "Test":true,"Addr":{"Network":"unix","String":"/tmp/plugin3061958823"}}`). Plinth reads a
//! JSON object of them keyed by plugin name from [`ENV`]. A reattached plugin is not ours:
//! unless the config says otherwise it is only killed when the host asks, and with `Test` set
//! never. AutoMTLS is not re-established; reattach to plaintext plugins, or give TLS material.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::handshake::{Address, Protocol};

/// The environment variable holding reattach configs: a JSON object keyed by plugin name.
pub const ENV: &str = "PLINTH_REATTACH_PLUGINS";

/// Where a running plugin listens and which process it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReattachConfig {
    /// `grpc` or `netrpc` (empty means netrpc, as in go-plugin).
    #[serde(default)]
    pub protocol: String,
    /// The application protocol version the plugin serves.
    #[serde(default)]
    pub protocol_version: u32,
    /// The listening address.
    pub addr: ReattachAddr,
    /// The plugin's process id (watched for exit, and killed when the host kills the plugin).
    #[serde(default)]
    pub pid: u32,
    /// The plugin runs in test (debug) mode: the host never kills it.
    #[serde(default)]
    pub test: bool,
}

/// A network address as go-plugin's JSON has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReattachAddr {
    /// `unix` or `tcp`.
    pub network: String,
    /// The path or `host:port`.
    pub string: String,
}

impl ReattachConfig {
    /// A config for a plugin at `address` speaking `protocol` version `version`, process `pid`.
    pub fn new(address: &Address, protocol: Protocol, version: u32, pid: u32) -> ReattachConfig {
        ReattachConfig {
            protocol: protocol.to_string(),
            protocol_version: version,
            addr: ReattachAddr {
                network: address.network().to_owned(),
                string: address.to_string(),
            },
            pid,
            test: false,
        }
    }

    /// The config as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one config from JSON.
    pub fn from_json(json: &str) -> Result<ReattachConfig> {
        serde_json::from_str(json).map_err(|error| Error::Config {
            reason: format!("invalid reattach config: {error}"),
        })
    }

    /// The address, checked as a handshake's would be.
    pub fn address(&self) -> Result<Address> {
        Address::parse(&self.addr.network, &self.addr.string).map_err(|error| Error::Config {
            reason: format!("invalid reattach address: {error}"),
        })
    }

    /// The protocol, checked.
    pub fn protocol(&self) -> Result<Protocol> {
        self.protocol.parse().map_err(|error| Error::Config {
            reason: format!("invalid reattach protocol: {error}"),
        })
    }
}

/// Parses a JSON object of reattach configs keyed by plugin name.
pub fn parse_map(json: &str) -> Result<BTreeMap<String, ReattachConfig>> {
    serde_json::from_str(json).map_err(|error| Error::Config {
        reason: format!("invalid reattach map (expected {{\"name\": {{\"Protocol\": ..., \"Addr\": ...}}}}): {error}"),
    })
}

/// The reattach configs in [`ENV`]; empty when it is unset.
pub fn from_env() -> Result<BTreeMap<String, ReattachConfig>> {
    match std::env::var(ENV) {
        Ok(json) if !json.trim().is_empty() => parse_map(&json),
        _ => Ok(BTreeMap::new()),
    }
}

/// Whether process `pid` exists (signal 0).
#[cfg(unix)]
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends SIGKILL to process `pid`.
#[cfg(unix)]
pub(crate) fn kill_process(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid)
        && pid > 0
    {
        // SAFETY: plain kill(2) on a positive pid.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terraform_style_json_round_trips() {
        let json = r#"{"kv":{"Protocol":"grpc","ProtocolVersion":6,"Pid":41234,"Test":true,"Addr":{"Network":"unix","String":"/tmp/plugin3061958823"}}}"#;
        let map = parse_map(json).unwrap();
        let config = &map["kv"];
        assert_eq!(config.protocol().unwrap(), Protocol::Grpc);
        assert_eq!(config.protocol_version, 6);
        assert!(config.test);
        assert_eq!(
            config.address().unwrap(),
            Address::Unix("/tmp/plugin3061958823".into())
        );
        assert_eq!(
            ReattachConfig::from_json(&config.to_json()).unwrap(),
            *config
        );
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        assert!(parse_map("[]").is_err());
        let relative = r#"{"Protocol":"grpc","Addr":{"Network":"unix","String":"rel"}}"#;
        assert!(
            ReattachConfig::from_json(relative)
                .unwrap()
                .address()
                .is_err()
        );
        let udp = r#"{"Protocol":"grpc","Addr":{"Network":"udp","String":"1.2.3.4:5"}}"#;
        assert!(ReattachConfig::from_json(udp).unwrap().address().is_err());
    }
}
