//! One effective setting as `synguard get` shows it: its value and where it came from.

use serde::{Deserialize, Serialize};

/// Where an effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Default,
    File,
    Flag,
    Set,
}

/// One setting as `synguard get` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub value: Vec<String>,
    pub source: Source,
}
