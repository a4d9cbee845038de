//! `shardctl cluster keygen | sign | verify` as an operator runs them.

use std::process::{Command, Output};

fn shardctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl")).args(args).output().expect("run shardctl")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const ROSTER: &str = r#"cluster = "cli-test"
epoch = 1

[[host]]
id = 1
gossip = "127.0.0.2:7946"
http = "127.0.0.2:8080"
domain = "a"

[[host]]
id = 2
gossip = "127.0.0.3:7946"
http = "127.0.0.3:8080"
domain = "b"
"#;

#[test]
fn keygen_sign_and_verify_a_roster() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let k = keys.to_str().unwrap();
    let o = shardctl(&["cluster", "keygen", k]);
    assert!(o.status.success(), "{}", text(&o));
    for (name, mode) in [("operator.key", 0o600), ("operator.pub", 0o644), ("gossip.keys", 0o600)] {
        let meta = std::fs::metadata(keys.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    // Never overwrites keys.
    let o = shardctl(&["cluster", "keygen", k]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("never overwrites"), "{}", text(&o));

    let roster = dir.path().join("roster.toml");
    std::fs::write(&roster, ROSTER).unwrap();
    let key = keys.join("operator.key");
    let o = shardctl(&["cluster", "sign", roster.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 hosts in 2 failure domains"), "{}", text(&o));
    let signed = dir.path().join("roster.toml.signed");
    let public = keys.join("operator.pub");
    let verify = |path: &std::path::Path| {
        shardctl(&["cluster", "verify", path.to_str().unwrap(), "--pub", public.to_str().unwrap()])
    };
    let o = verify(&signed);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("valid signature"), "{}", text(&o));

    // An edited signed roster no longer verifies.
    let tampered = dir.path().join("tampered");
    std::fs::write(&tampered, std::fs::read_to_string(&signed).unwrap().replace("epoch = 1", "epoch = 9")).unwrap();
    let o = verify(&tampered);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("does not verify"), "{}", text(&o));

    // A roster with a mistake is refused before signing, naming it.
    std::fs::write(&roster, ROSTER.replace("id = 2", "id = 1")).unwrap();
    let o =
        shardctl(&["cluster", "sign", roster.to_str().unwrap(), "--key", key.to_str().unwrap(), "--out", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("host id 1 appears twice"), "{}", text(&o));
}
