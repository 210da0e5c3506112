//! The `blindcall sframe seal|open` CLI on the RFC 9605 vectors and on failure cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    cipher_suite: u16,
    kid: u64,
    ctr: u64,
    base_key: String,
    metadata: String,
    pt: String,
    ct: String,
}

#[derive(Deserialize)]
struct RfcFile {
    sframe: Vec<Case>,
}

#[derive(Deserialize)]
struct Aes256File {
    sframe_aes_256_ctr_hmac: Vec<Case>,
}

/// `BLINDCALL_VECTORS_DIR`, else `<workspace root>/../shared/vectors`; loud skip if missing
/// unless `BLINDCALL_REQUIRE_VECTORS=1`.
fn vectors_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BLINDCALL_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors")),
    };
    if dir.join("rfc9605-test-vectors.json").is_file() {
        return Some(dir);
    }
    let required = std::env::var("BLINDCALL_REQUIRE_VECTORS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "RFC 9605 vectors not found in {} and BLINDCALL_REQUIRE_VECTORS=1",
        dir.display()
    );
    eprintln!(
        "\n!!!!! SKIPPED: RFC 9605 test vectors not found in {} (set BLINDCALL_VECTORS_DIR) !!!!!\n",
        dir.display()
    );
    None
}

fn all_cases(dir: &std::path::Path) -> Vec<Case> {
    let rfc: RfcFile = serde_json::from_str(
        &std::fs::read_to_string(dir.join("rfc9605-test-vectors.json")).unwrap(),
    )
    .unwrap();
    let aes256: Aes256File = serde_json::from_str(
        &std::fs::read_to_string(dir.join("test-vectors-aes256.json")).unwrap(),
    )
    .unwrap();
    let mut cases = rfc.sframe;
    cases.extend(aes256.sframe_aes_256_ctr_hmac);
    cases
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_blindcall"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The CLI may exit (e.g. on a bad argument) before reading stdin: ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

/// Asserts a failure: non-zero exit, nothing on stdout, exactly one line on stderr.
fn assert_fails(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure");
    assert!(o.stdout.is_empty(), "no output on failure");
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one-line reason, got {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

fn seal_args<'a>(c: &'a Case, kid: &'a str, ctr: &'a str, suite: &'a str) -> Vec<&'a str> {
    vec![
        "sframe",
        "seal",
        "--suite",
        suite,
        "--base-key",
        &c.base_key,
        "--kid",
        kid,
        "--ctr",
        ctr,
        "--metadata",
        &c.metadata,
    ]
}

// covers: SF-CLI-1, SF-TX-1, SF-RX-1
#[test]
fn seal_and_open_match_rfc9605_vectors() {
    let Some(dir) = vectors_dir() else { return };
    let cases = all_cases(&dir);
    assert_eq!(cases.len(), 8);
    for c in &cases {
        let (suite, kid, ctr) = (
            c.cipher_suite.to_string(),
            c.kid.to_string(),
            c.ctr.to_string(),
        );
        let o = run(&seal_args(c, &kid, &ctr, &suite), &c.pt);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(stdout(&o), c.ct, "seal suite {suite}");
        let open = [
            "sframe",
            "open",
            "--suite",
            &suite,
            "--base-key",
            &c.base_key,
            "--metadata",
            &c.metadata,
        ];
        let o = run(&open, &format!("{}\n", c.ct));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(stdout(&o), c.pt, "open suite {suite}");
    }
}

// covers: SF-CLI-2, SF-RX-2
#[test]
fn failures_exit_non_zero_with_one_line_reason() {
    let Some(dir) = vectors_dir() else { return };
    let cases = all_cases(&dir);
    let c = &cases[3]; // suite 4
    let suite = c.cipher_suite.to_string();
    let open = |metadata: &str, base_key: &str, suite: &str, input: &str| {
        run(
            &[
                "sframe",
                "open",
                "--suite",
                suite,
                "--base-key",
                base_key,
                "--metadata",
                metadata,
            ],
            input,
        )
    };
    // Bad tag: flip the last hex digit.
    let mut bad = c.ct.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    assert_fails(
        &open(&c.metadata, &c.base_key, &suite, &bad),
        "authentication failed",
    );
    // Wrong metadata, wrong key.
    assert_fails(
        &open("00", &c.base_key, &suite, &c.ct),
        "authentication failed",
    );
    assert_fails(
        &open(&c.metadata, "ff", &suite, &c.ct),
        "authentication failed",
    );
    // Truncated frames.
    assert_fails(&open(&c.metadata, &c.base_key, &suite, "99"), "truncated");
    assert_fails(
        &open(&c.metadata, &c.base_key, &suite, &c.ct[..20]),
        "too short",
    );
    // Bad input.
    assert_fails(
        &open(&c.metadata, &c.base_key, &suite, "zz"),
        "not valid hex",
    );
    assert_fails(&open(&c.metadata, &c.base_key, "9", &c.ct), "unsupported");
    assert_fails(&open(&c.metadata, "", &suite, &c.ct), "empty");
    let o = run(&seal_args(c, "1", "2", "0"), &c.pt);
    assert_fails(&o, "unsupported");
    let o = run(&seal_args(c, "1", "2", &suite), "abc");
    assert_fails(&o, "not valid hex");
}

#[derive(Deserialize)]
struct HeaderCase {
    kid: u64,
    ctr: u64,
    encoded: String,
}

#[derive(Deserialize)]
struct HeaderFile {
    header: Vec<HeaderCase>,
}

/// The 289 header vectors through the CLI: sealing under each (KID, CTR) must produce a frame
/// that starts with exactly the vector's encoded header, and opening it must give the plaintext
/// back (the CLI has no header-only command, so the header is checked as the frame's prefix).
// covers: SF-CLI-1, SF-HDR-1, SF-HDR-2
#[test]
fn every_header_vector_through_the_cli() {
    let Some(dir) = vectors_dir() else { return };
    let file: HeaderFile = serde_json::from_str(
        &std::fs::read_to_string(dir.join("rfc9605-test-vectors.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file.header.len(), 289);
    let key = "000102030405060708090a0b0c0d0e0f";
    for h in &file.header {
        let (kid, ctr) = (h.kid.to_string(), h.ctr.to_string());
        let sealed = run(
            &[
                "sframe",
                "seal",
                "--suite",
                "4",
                "--base-key",
                key,
                "--kid",
                &kid,
                "--ctr",
                &ctr,
            ],
            "00",
        );
        assert!(sealed.status.success(), "seal kid={kid} ctr={ctr}");
        let ct = stdout(&sealed);
        assert!(
            ct.starts_with(&h.encoded),
            "kid={kid} ctr={ctr}: frame {ct} does not start with header {}",
            h.encoded
        );
        // header + 1 byte of ciphertext + 16-byte tag
        assert_eq!(ct.len(), h.encoded.len() + 2 * (1 + 16));
        let opened = run(&["sframe", "open", "--suite", "4", "--base-key", key], &ct);
        assert!(opened.status.success(), "open kid={kid} ctr={ctr}");
        assert_eq!(stdout(&opened), "00");
    }
}

// covers: OPS-KEY-1
#[test]
fn base_keys_come_from_a_file_or_the_environment_never_only_the_command_line() {
    let key = "000102030405060708090a0b0c0d0e0f";
    let dir = std::env::temp_dir().join(format!("blindcall-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("key.hex");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let seal = |extra: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_blindcall"));
        cmd.args(["sframe", "seal", "--suite", "4", "--kid", "1", "--ctr", "0"])
            .args(extra)
            .env_remove("BLINDCALL_SFRAME_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(k) = env {
            cmd.env("BLINDCALL_SFRAME_KEY", k);
        }
        let mut child = cmd.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"0011");
        child.wait_with_output().unwrap()
    };
    let from_arg = seal(&["--base-key", key], None);
    let from_file = seal(&["--base-key-file", file.to_str().unwrap()], None);
    let from_env = seal(&[], Some(key));
    for o in [&from_arg, &from_file, &from_env] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(stdout(&from_arg), stdout(&from_file));
    assert_eq!(stdout(&from_arg), stdout(&from_env));
    // No key at all: one clear line naming the two safe ways, and no secret echoed.
    let none = seal(&[], None);
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.contains("--base-key-file") && err.contains("BLINDCALL_SFRAME_KEY"),
        "{err}"
    );
    let bad = seal(&[], Some("zz-not-hex-secret"));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && !err.contains("zz-not-hex-secret"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
