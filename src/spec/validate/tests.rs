use super::*;

fn defaults() -> Defaults {
    Defaults::for_tests()
}

fn check(toml_text: &str) -> Result<InstanceSpec, ValidationError> {
    let input: SpecInput = toml::from_str(toml_text).expect("test TOML parses");
    validate(input, &defaults())
}

#[test]
fn minimal_spec_gets_defaults() {
    let s = check(r#"name = "orders""#).unwrap();
    assert_eq!(s.project, "default");
    assert_eq!(s.version, DEFAULT_POSTGRES);
    assert_eq!(
        s.resources,
        Resources {
            vcpus: 1,
            memory_gib: 1
        }
    );
    assert_eq!((s.disk_gib, s.replicas, s.nodes()), (10, 0, 1));
    assert_eq!(s.region, "local");
    assert_eq!(s.database, "orders");
    assert_eq!(s.extensions, vec!["pg_stat_statements".to_string()]);
}

#[test]
fn ha_means_two_replicas_and_partial_resources_complete() {
    let s = check("name = \"a-b\"\nha = true\ncpus = 4").unwrap();
    assert_eq!((s.replicas, s.nodes()), (2, 3));
    assert_eq!(
        s.resources,
        Resources {
            vcpus: 4,
            memory_gib: 8
        }
    );
    assert_eq!(s.database, "a_b");
}

#[test]
fn default_key_is_stable_and_spec_sensitive() {
    let a = check("name = \"x\"\ntags = { b = \"2\", a = \"1\" }").unwrap();
    let b = check("name = \"x\"\ntags = { a = \"1\", b = \"2\" }").unwrap();
    assert_eq!(a.default_idempotency_key(), b.default_idempotency_key());
    let c = check("name = \"x\"\ndisk_gib = 11").unwrap();
    assert_ne!(a.default_idempotency_key(), c.default_idempotency_key());
}

/// Each bad spec must be rejected naming exactly this field.
#[test]
fn bad_specs_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("", "name"),
        (r#"name = """#, "name"),
        (r#"name = "Orders""#, "name"),
        (r#"name = "9lives""#, "name"),
        (r#"name = "ends-""#, "name"),
        (r#"name = "under_score""#, "name"),
        (
            r#"name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#,
            "name",
        ),
        ("name = \"x\"\nproject = \"Proj\"", "project"),
        ("name = \"x\"\nengine = \"mysql\"", "engine"),
        ("name = \"x\"\nversion = 9", "version"),
        ("name = \"x\"\nversion = 18", "version"),
        ("name = \"x\"\nsize = \"huge\"", "size"),
        ("name = \"x\"\nsize = \"small\"\ncpus = 2", "size"),
        ("name = \"x\"\ncpus = 0", "cpus"),
        ("name = \"x\"\ncpus = 65", "cpus"),
        ("name = \"x\"\nmemory_gib = 1024", "memory_gib"),
        ("name = \"x\"\ncpus = 2\nmemory_gib = 0", "memory_gib"),
        ("name = \"x\"\ndisk_gib = 0", "disk_gib"),
        ("name = \"x\"\ndisk_gib = 20000", "disk_gib"),
        ("name = \"x\"\nprovider = \"gcp\"", "provider"),
        ("name = \"x\"\nprovider = \"aws\"", "region"),
        ("name = \"x\"\nregion = \"US East\"", "region"),
        ("name = \"x\"\nzones = [\"a\", \"a\"]", "zones[1]"),
        ("name = \"x\"\nzones = [\"Zone A\"]", "zones[0]"),
        ("name = \"x\"\nimage = \"\"", "image"),
        ("name = \"x\"\nimage = \"my image\"", "image"),
        ("name = \"x\"\ndatabase = \"Bad-Name\"", "database"),
        ("name = \"x\"\ndatabase = \"postgres\"", "database"),
        (
            "name = \"x\"\nextensions = [\"pg_stat_statements\", \"timescaledb\"]",
            "extensions[1]",
        ),
        (
            "name = \"x\"\nextensions = [\"pgcrypto\", \"pgcrypto\"]",
            "extensions[1]",
        ),
        ("name = \"x\"\nusers = []", "users"),
        ("name = \"x\"\nusers = [\"postgres\"]", "users[0]"),
        // The exporter's and HA's roles, which dbctl makes itself.
        ("name = \"x\"\nusers = [\"prometheus\"]", "users[0]"),
        ("name = \"x\"\nusers = [\"app\", \"rewind\"]", "users[1]"),
        ("name = \"x\"\nusers = [\"replicator\"]", "users[0]"),
        ("name = \"x\"\nusers = [\"app\", \"pg_admin\"]", "users[1]"),
        (
            "name = \"x\"\nusers = [\"app\", \"DROP TABLE\"]",
            "users[1]",
        ),
        (
            "name = \"x\"\ntags = { \"dbctl:run\" = \"r\" }",
            "tags.dbctl:run",
        ),
        (
            "name = \"x\"\ntags = { \"bad\\nkey\" = \"v\" }",
            "tags.bad\nkey",
        ),
        (
            "name = \"x\"\ntags = { owner = \"a\\u0007b\" }",
            "tags.owner",
        ),
        ("name = \"x\"\nttl = \"soon\"", "ttl"),
        ("name = \"x\"\nttl = \"1m\"", "ttl"),
        ("name = \"x\"\nttl = \"400d\"", "ttl"),
        ("name = \"x\"\ninstance_type = \"huge\"", "instance_type"),
        ("name = \"x\"\nssh_cidr = \"0.0.0.0/0\"", "ssh_cidr"),
        ("name = \"x\"\nssh_cidr = \"10.0.0.300/8\"", "ssh_cidr"),
    ];
    assert!(cases.len() >= 25);
    for (toml_text, field) in cases {
        match check(toml_text) {
            Ok(_) => panic!("accepted bad spec {toml_text:?}"),
            Err(e) => {
                assert_eq!(&e.field, field, "spec {toml_text:?} gave {e}");
                assert!(
                    !e.message.is_empty() && !e.message.contains('\n'),
                    "one line: {e}"
                );
            }
        }
    }
}

#[test]
fn unknown_keys_in_a_spec_file_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, "name = \"x\"\ndisk_gb = 10\n").unwrap();
    let e = SpecInput::from_file(&path).unwrap_err();
    assert_eq!(e.field, "file");
    assert!(
        e.message.contains("disk_gb") && e.message.contains("line 2"),
        "{e}"
    );
}

#[test]
fn flags_override_the_file() {
    let file: SpecInput = toml::from_str("name = \"a\"\ndisk_gib = 20\nha = true").unwrap();
    let flags = SpecInput {
        disk_gib: Some(30),
        ..Default::default()
    };
    let s = validate(file.overlay(flags), &defaults()).unwrap();
    assert_eq!((s.name.as_str(), s.disk_gib, s.ha), ("a", 30, true));
}
