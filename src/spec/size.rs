//! Size classes: named shapes for the common cases, instead of raw CPU and memory.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub vcpus: u32,
    pub memory_gib: u32,
}

/// A named size; `dbctl create --size medium`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClass {
    pub name: &'static str,
    pub resources: Resources,
}

pub const SIZE_CLASSES: &[SizeClass] = &[
    SizeClass {
        name: "small",
        resources: Resources {
            vcpus: 1,
            memory_gib: 1,
        },
    },
    SizeClass {
        name: "medium",
        resources: Resources {
            vcpus: 2,
            memory_gib: 4,
        },
    },
    SizeClass {
        name: "large",
        resources: Resources {
            vcpus: 4,
            memory_gib: 16,
        },
    },
    SizeClass {
        name: "xlarge",
        resources: Resources {
            vcpus: 8,
            memory_gib: 32,
        },
    },
];

impl SizeClass {
    pub fn find(name: &str) -> Option<SizeClass> {
        SIZE_CLASSES.iter().copied().find(|c| c.name == name)
    }

    pub fn names() -> String {
        SIZE_CLASSES
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
