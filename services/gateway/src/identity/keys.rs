//! API keys: a file of hashed keys (`SOPHIA_GATEWAY_KEYS`), each standing for
//! a principal with roles, and `sophia-gateway keys new`, which makes one.
//!
//! ```toml
//! [[keys]]
//! id = "a1b2c3d4"                 # optional; names the key in logs and errors
//! principal = "alice"
//! roles = ["analyst"]
//! sha256 = "<64 hex digits: SHA-256 of the key>"
//! expires = "2027-01-01T00:00:00Z" # optional, RFC 3339
//! ```
//!
//! The file holds only hashes; a key is shown once, by `keys new`. A file
//! ending in `.json` is read as JSON (`{"keys": [...]}`), any other as TOML.
//! Every problem, down to a malformed hash or date, is reported with the
//! file's line and column, because it is found while parsing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::mcp::Identity;

/// What every key starts with, so a leaked one is recognisable (secret
/// scanners, logs) and cannot be mistaken for a JWT.
pub const KEY_PREFIX: &str = "sk_sophia_";
/// The longest principal or role name accepted.
const MAX_NAME_LEN: usize = 256;

/// `sophia-gateway keys new`: make a key for a principal.
#[derive(Clone, Debug, clap::Args)]
pub struct NewKeyArgs {
    /// Who the key stands for; workers see it as the caller.
    #[arg(long)]
    pub principal: String,
    /// A role of the key (repeat for several); the policy maps roles to tools.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// When the key stops working, RFC 3339 (e.g. `2027-01-01T00:00:00Z`).
    #[arg(long, value_parser = parse_expiry)]
    pub expires: Option<DateTime<Utc>>,
    /// A name for the key in logs and errors (default: the first 8 hex
    /// digits of its hash, which name it without revealing it).
    #[arg(long)]
    pub id: Option<String>,
}

/// A new key: the secret, to hand over once, and its entry for the file.
#[derive(Debug)]
pub struct NewKey {
    /// The key itself (`sk_sophia_...`). Not stored anywhere.
    pub key: String,
    /// The TOML entry (`[[keys]]`) to append to the keys file.
    pub entry: String,
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NewKeyError {
    /// The operating system gave no randomness.
    #[error("could not get random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    /// A principal or role name is not acceptable.
    #[error("{0}")]
    Name(String),
}

/// Why the keys file was refused. Displays as one line naming the file and,
/// where it can, the line and column.
#[derive(Debug, thiserror::Error)]
#[error("keys file {}: {problem}", path.display())]
pub struct KeysFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and where.
    pub problem: String,
}

/// Makes a key: 256 random bits, base64url after [`KEY_PREFIX`], and the
/// file entry holding its SHA-256.
pub fn new_key(args: &NewKeyArgs) -> Result<NewKey, NewKeyError> {
    let principal = checked_name("principal", &args.principal).map_err(NewKeyError::Name)?;
    let roles = args
        .roles
        .iter()
        .map(|r| checked_name("role", r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(NewKeyError::Name)?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(NewKeyError::Random)?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = hex(&Sha256::digest(key.as_bytes()));
    let entry = EntryOut {
        id: args.id.clone().unwrap_or_else(|| hash[..8].to_owned()),
        principal,
        roles,
        sha256: hash,
        expires: args
            .expires
            .map(|e| e.to_rfc3339_opts(SecondsFormat::Secs, true)),
    };
    let entry = toml::to_string(&FileOut { keys: vec![entry] })
        .map_err(|e| NewKeyError::Name(format!("could not write the entry: {e}")))?;
    Ok(NewKey { key, entry })
}

#[derive(Serialize)]
struct FileOut {
    keys: Vec<EntryOut>,
}

#[derive(Serialize)]
struct EntryOut {
    id: String,
    principal: String,
    roles: Vec<String>,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
}

/// The keys the gateway accepts, by the SHA-256 of the key.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_hash: HashMap<[u8; 32], KeyEntry>,
}

/// One accepted key.
#[derive(Clone, Debug)]
struct KeyEntry {
    id: String,
    principal: String,
    roles: Vec<String>,
    expires: Option<DateTime<Utc>>,
}

/// What a presented bearer token is to the [`KeyRing`].
#[derive(Debug)]
pub enum KeyCheck {
    /// A valid key of this principal.
    Valid(Identity),
    /// A known key past its expiry.
    Expired {
        /// The key's id.
        id: String,
        /// When it expired.
        at: DateTime<Utc>,
    },
    /// Not a key of this gateway.
    Unknown,
}

impl KeyRing {
    /// Reads the keys file at `path` (TOML, or JSON if it ends in `.json`).
    pub fn load(path: &Path) -> Result<Self, KeysFileError> {
        let fail = |problem: String| KeysFileError {
            path: path.to_owned(),
            problem: one_line(&problem),
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let file: KeysFile = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| fail(json_problem(&e)))?
        } else {
            toml::from_str(&text).map_err(|e| fail(toml_problem(&e, &text)))?
        };
        let mut ring = KeyRing::default();
        for (i, entry) in file.keys.into_iter().enumerate() {
            let id = entry.id.unwrap_or_else(|| hex(&entry.sha256.0[..4]));
            let key = KeyEntry {
                id,
                principal: entry.principal.0,
                roles: entry.roles.into_iter().map(|r| r.0).collect(),
                expires: entry.expires.map(|e| e.0),
            };
            ring.insert(entry.sha256.0, key).map_err(|other| {
                fail(format!(
                    "key #{} has the same sha256 as key `{other}`: one key, one principal",
                    i + 1
                ))
            })?;
        }
        Ok(ring)
    }

    /// Adds the single token (`SOPHIA_GATEWAY_TOKEN`) as a key that never
    /// expires.
    pub fn add_token(
        &mut self,
        token: &str,
        principal: &str,
        roles: &[String],
    ) -> Result<(), String> {
        let entry = KeyEntry {
            id: "SOPHIA_GATEWAY_TOKEN".into(),
            principal: principal.to_owned(),
            roles: roles.to_vec(),
            expires: None,
        };
        self.insert(Sha256::digest(token.trim().as_bytes()).into(), entry)
            .map_err(|other| format!("SOPHIA_GATEWAY_TOKEN is also key `{other}` of the keys file: give each its own key"))
    }

    fn insert(&mut self, hash: [u8; 32], entry: KeyEntry) -> Result<(), String> {
        if let Some(existing) = self.by_hash.get(&hash) {
            return Err(existing.id.clone());
        }
        self.by_hash.insert(hash, entry);
        Ok(())
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Looks `presented` up, at time `now`.
    ///
    /// Design note: this is a hash-map lookup of SHA-256(presented), not a
    /// constant-time comparison. The lookup's timing can only tell an
    /// attacker how far SHA-256 of their guess matches a stored hash, which
    /// says nothing about a key: finding a key from its hash is a preimage
    /// search over 256 random bits (for `keys new` keys) or of SHA-256 itself.
    pub fn check(&self, presented: &str, now: DateTime<Utc>) -> KeyCheck {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match self.by_hash.get(&hash) {
            None => KeyCheck::Unknown,
            Some(k) => match k.expires {
                Some(at) if at <= now => KeyCheck::Expired {
                    id: k.id.clone(),
                    at,
                },
                _ => KeyCheck::Valid(Identity {
                    principal: k.principal.clone(),
                    roles: k.roles.clone(),
                }),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    #[serde(default, alias = "name")]
    id: Option<String>,
    principal: Name,
    #[serde(default)]
    roles: Vec<Name>,
    sha256: KeyHash,
    #[serde(default)]
    expires: Option<Expiry>,
}

/// A principal or role name, checked while parsing.
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        checked_name("name", &s)
            .map(Name)
            .map_err(serde::de::Error::custom)
    }
}

/// 64 hex digits, checked while parsing.
struct KeyHash([u8; 32]);

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        unhex(&s).map(KeyHash).ok_or_else(|| {
            serde::de::Error::custom(
                "sha256 must be 64 hex digits, the SHA-256 of the key (as `sophia-gateway keys new` prints it)",
            )
        })
    }
}

/// An RFC 3339 date-time, checked while parsing.
struct Expiry(DateTime<Utc>);

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_expiry(&s)
            .map(Expiry)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses an RFC 3339 date-time such as `2027-01-01T00:00:00Z`.
pub fn parse_expiry(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("expires must be an RFC 3339 date-time such as \"2027-01-01T00:00:00Z\" ({e})")
        })
}

/// A principal or role: not empty, at most [`MAX_NAME_LEN`] bytes, no
/// whitespace or control characters.
fn checked_name(what: &str, s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > MAX_NAME_LEN
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "a {what} must be 1 to {MAX_NAME_LEN} bytes with no spaces or control characters"
        ));
    }
    Ok(s.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `line L, column C: problem` from a TOML error.
fn toml_problem(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// `line L, column C: problem` from a JSON error.
fn json_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m);
    format!("line {}, column {}: {message}", e.line(), e.column())
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Joins a multi-line message into one line.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_new_key_is_accepted_by_a_ring_loaded_from_its_entry() {
        let made = new_key(&NewKeyArgs {
            principal: "alice".into(),
            roles: vec!["analyst".into()],
            expires: None,
            id: None,
        })
        .unwrap();
        assert!(made.key.starts_with(KEY_PREFIX) && made.key.len() == KEY_PREFIX.len() + 43);
        assert!(
            !made.entry.contains(&made.key),
            "the entry must not hold the key"
        );
        let (_dir, path) = write("keys.toml", &made.entry);
        let ring = KeyRing::load(&path).unwrap();
        match ring.check(&made.key, Utc::now()) {
            KeyCheck::Valid(id) => assert_eq!(
                (id.principal.as_str(), id.roles),
                ("alice", vec!["analyst".to_owned()])
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ring.check("sk_sophia_wrong", Utc::now()),
            KeyCheck::Unknown
        ));
    }

    #[test]
    fn a_bad_hash_is_reported_with_its_line_and_column() {
        let (_dir, path) = write(
            "keys.toml",
            "[[keys]]\nprincipal = \"bob\"\nsha256 = \"abc\"\n",
        );
        let err = KeyRing::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 3, column 10") && err.contains("64 hex digits"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn json_files_and_their_errors_work_too() {
        let (_dir, path) = write(
            "keys.json",
            "{\"keys\": [{\"principal\": \"bob\", \"sha256\": 5}]}",
        );
        let err = KeyRing::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1, column"), "{err}");
    }
}
