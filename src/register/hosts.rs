//! Hosts-format blocks: each instance owns the lines between `# dbctl:begin <id>` and
//! `# dbctl:end <id>`, so one file (the operator's hosts file, a node's /etc/hosts) holds many
//! instances and each is replaced or removed without touching anything else.

/// `text` with the block of `id` replaced by `lines` (appended if absent; removed if `lines`
/// is empty). Everything outside the block is kept byte for byte.
pub fn replace_block(text: &str, id: &str, lines: &[String]) -> String {
    let begin = format!("# dbctl:begin {id}");
    let end = format!("# dbctl:end {id}");
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for line in text.lines() {
        if line == begin {
            inside = true;
        } else if inside && line == end {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !lines.is_empty() {
        out.push_str(&begin);
        out.push('\n');
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str(&end);
        out.push('\n');
    }
    out
}

const NODE_SCRIPT: &str = include_str!("../../templates/node/hosts-block.sh");

/// [`replace_block`] on a node's /etc/hosts, under a lock on the node (several steps edit it
/// concurrently).
pub async fn set_node_block(
    pg: &crate::postgres::Pg,
    ctx: &crate::saga::StepCtx,
    node: &str,
    id: &str,
    lines: &[String],
) -> Result<(), crate::saga::StepError> {
    pg.run_script(
        ctx,
        node,
        &format!("/etc/hosts block {id}"),
        &crate::postgres::as_root(&[id, &lines.join("\n")]),
        Some(NODE_SCRIPT.as_bytes()),
        std::time::Duration::from_secs(60),
    )
    .await
    .map(|_| ())
}

/// The addresses `name` has in hosts-format `text` (what a resolver reading it would return).
pub fn lookup(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?;
            f.any(|n| n.eq_ignore_ascii_case(name))
                .then(|| addr.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn blocks_are_added_replaced_and_removed_alone() {
        let base = "127.0.0.1 localhost\n::1 localhost\n";
        let a = replace_block(base, "i-a", &l(&["10.0.0.1 a.p.x"]));
        let ab = replace_block(&a, "i-b", &l(&["10.0.0.2 b.p.x", "10.0.0.3 b-ro.p.x"]));
        assert_eq!(lookup(&ab, "a.p.x"), ["10.0.0.1"]);
        assert_eq!(lookup(&ab, "B-RO.p.x"), ["10.0.0.3"]);
        let ab2 = replace_block(&ab, "i-a", &l(&["10.0.0.9 a.p.x"]));
        assert_eq!(lookup(&ab2, "a.p.x"), ["10.0.0.9"]);
        assert_eq!(lookup(&ab2, "b.p.x"), ["10.0.0.2"]);
        let b = replace_block(&ab2, "i-a", &[]);
        assert!(lookup(&b, "a.p.x").is_empty());
        assert_eq!(replace_block(&b, "i-b", &[]), base);
        // Idempotent: the same block twice is one block.
        assert_eq!(
            replace_block(&ab, "i-b", &l(&["10.0.0.2 b.p.x", "10.0.0.3 b-ro.p.x"])),
            ab
        );
    }

    #[test]
    fn a_file_without_trailing_newline_keeps_its_lines() {
        let t = replace_block("127.0.0.1 localhost", "i", &l(&["10.0.0.1 n"]));
        assert_eq!(lookup(&t, "localhost"), ["127.0.0.1"]);
        assert_eq!(lookup(&t, "n"), ["10.0.0.1"]);
    }
}
