//! Structural checks on a step graph, done before a run starts.

use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DagError {
    #[error("step {0} is defined twice")]
    Duplicate(String),
    #[error("step {step} depends on unknown step {dep}")]
    UnknownDep { step: String, dep: String },
    #[error("steps form a cycle through {0}")]
    Cycle(String),
}

/// Checks names are unique, dependencies exist and there is no cycle; returns a topological
/// order (dependencies first), stable with respect to the input order.
pub fn validate_dag<'a>(
    steps: impl Iterator<Item = (&'a str, &'a [String])>,
) -> Result<Vec<String>, DagError> {
    let steps: Vec<(&str, &[String])> = steps.collect();
    let mut deps: HashMap<&str, &[String]> = HashMap::new();
    for (name, d) in &steps {
        if deps.insert(name, d).is_some() {
            return Err(DagError::Duplicate(name.to_string()));
        }
    }
    for (name, d) in &steps {
        if let Some(dep) = d.iter().find(|dep| !deps.contains_key(dep.as_str())) {
            return Err(DagError::UnknownDep {
                step: name.to_string(),
                dep: dep.clone(),
            });
        }
    }
    // Depth-first search with an explicit "on the current path" set to find cycles.
    fn visit<'a>(
        n: &'a str,
        deps: &HashMap<&'a str, &'a [String]>,
        done: &mut HashSet<&'a str>,
        path: &mut HashSet<&'a str>,
        order: &mut Vec<String>,
    ) -> Result<(), DagError> {
        if done.contains(n) {
            return Ok(());
        }
        if !path.insert(n) {
            return Err(DagError::Cycle(n.to_string()));
        }
        for d in deps[n] {
            visit(d.as_str(), deps, done, path, order)?;
        }
        path.remove(n);
        done.insert(n);
        order.push(n.to_string());
        Ok(())
    }
    let (mut done, mut path, mut order) = (HashSet::new(), HashSet::new(), Vec::new());
    for (name, _) in &steps {
        visit(name, &deps, &mut done, &mut path, &mut order)?;
    }
    Ok(order)
}
