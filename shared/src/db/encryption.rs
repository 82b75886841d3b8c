//! Optional public-key encryption of database dumps, in the age format
//! (age-encryption.org/v1, X25519 recipients).
//!
//! ```text
//!  backup:  pg_dump ─▶ zstd/gzip ─▶ age (recipients) ─▶ SHA-256/CRC32C ─▶ upload
//!  restore: download ─▶ SHA-256/CRC32C ─▶ age (identities) ─▶ zstd/gzip ─▶ pg_restore
//! ```
//!
//! Backups hold only **recipients** (public keys, `age1…`: `BACKUP_ENCRYPTION_RECIPIENTS`), so a
//! leaked backup job, bucket reader or configuration reveals nothing. Only `restore` and `drill`
//! hold **identities** (secret keys, `AGE-SECRET-KEY-1…`: `BACKUP_ENCRYPTION_IDENTITY`, from
//! Secret Manager). Several recipients: every one of them can decrypt (a rotation's new key, an
//! offline break-glass key). Several identities: a restore tries each (the old identity is kept
//! until the last backup encrypted to it is pruned).
//!
//! age encrypts in 64 KiB chunks, each with its own authentication tag, the last one marked as
//! last: memory stays bounded, and an altered, truncated or extended file fails to decrypt rather
//! than decrypting to something else. The hashes in the manifest are of the stored (encrypted)
//! bytes, so integrity checks and drills that do not decrypt need no key.
//!
//! A restore checks the key first, before it touches any database ([`check_key`]): it reads the
//! header at the start of the stored object, checks its MAC and unwraps the file key with the
//! identities. Without a usable identity it fails with the recipients the backup was encrypted
//! to, so the operator knows which key to fetch.
//!
//! Secret keys never leave this module in a message: [`Identities`] prints only the public keys
//! it belongs to, and a malformed identity is reported by its position, never by its text.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr as _;

use age::x25519;
use futures::StreamExt as _;

use crate::config::{Reader, vars};
use crate::core::db_manifest::{DumpObject, Encryption, EncryptionFormat};
use crate::core::secret::Secret;
use crate::error::{Classify, ErrorKind};
use crate::store::ObjectStore;

/// Most recipients accepted (each adds ~100 bytes to every dump's header).
pub const MAX_RECIPIENTS: usize = 16;
/// Bytes read from the start of a stored dump to find its age header (a header with
/// [`MAX_RECIPIENTS`] X25519 stanzas is under 2 KiB).
const HEADER_PROBE: usize = 16 * 1024;

/// Splits a key list: items separated by commas, spaces or newlines; `#` starts a comment that
/// runs to the end of its line (so the output of `age-keygen`, or a recipients file, can be
/// pasted as it is). Empty items are dropped.
fn items(text: &str) -> Vec<&str> {
    text.lines()
        .map(|line| line.split_once('#').map_or(line, |(before, _)| before))
        .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|s| !s.is_empty())
        .collect()
}

fn looks_secret(item: &str) -> bool {
    item.get(..15).is_some_and(|p| p.eq_ignore_ascii_case("AGE-SECRET-KEY-"))
}

/// Reads `BACKUP_ENCRYPTION_RECIPIENTS` (db-backup; health and monitor, to know that backups
/// must be encrypted). `Some(None)`: unset or empty; `None`: a problem was recorded.
pub fn read_recipients(r: &mut Reader<'_>) -> Option<Option<Recipients>> {
    let var = &vars::ENCRYPTION_RECIPIENTS;
    let text = r.text(var).unwrap_or_default();
    match Recipients::parse(&text) {
        Ok(v) => Some(v),
        Err(message) => {
            r.problem(var.name, message);
            None
        }
    }
}

/// Reads `BACKUP_ENCRYPTION_IDENTITY` (restore, drill). `Some(None)`: unset or empty; `None`: a
/// problem was recorded (the value is never shown).
pub fn read_identities(r: &mut Reader<'_>) -> Option<Option<Identities>> {
    let var = &vars::ENCRYPTION_IDENTITY;
    let Some(secret) = r.secret(var) else { return Some(None) };
    match Identities::parse(&secret) {
        Ok(v) => Some(v),
        Err(message) => {
            r.problem(var.name, message);
            None
        }
    }
}

/// The public keys dumps are encrypted to (`BACKUP_ENCRYPTION_RECIPIENTS`).
#[derive(Clone, PartialEq, Eq)]
pub struct Recipients(Vec<x25519::Recipient>);

impl Recipients {
    /// Parses a list of `age1…` public keys. `Ok(None)` when the text holds none. The message
    /// of an error names the item by position and never repeats it: a secret key pasted here by
    /// mistake must not end up in a log.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let items = items(text);
        if items.is_empty() {
            return Ok(None);
        }
        if items.len() > MAX_RECIPIENTS {
            return Err(format!("lists {} recipients; at most {MAX_RECIPIENTS} are accepted", items.len()));
        }
        let mut keys = Vec::with_capacity(items.len());
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let n = i + 1;
            if looks_secret(item) {
                return Err(format!(
                    "item {n} is an age identity (a SECRET key), not a recipient: put its public key here \
                     (age-keygen -y, or `restore keygen`), and treat the secret key as exposed (value not shown)"
                ));
            }
            let key = x25519::Recipient::from_str(item).map_err(|why| {
                format!("item {n} is not an age X25519 recipient (a public key like age1… of 62 characters): {why}")
            })?;
            if !seen.insert(key.to_string()) {
                return Err(format!("item {n} repeats an earlier recipient"));
            }
            keys.push(key);
        }
        Ok(Some(Self(keys)))
    }

    /// The public keys, as configured (`age1…`).
    pub fn keys(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// What the manifest records.
    pub fn describe(&self) -> Encryption {
        Encryption { format: EncryptionFormat::Age, recipients: self.keys() }
    }

    /// A writer that encrypts everything written to it into `out`; its
    /// [`StreamWriter::finish`](age::stream::StreamWriter::finish) writes the last chunk.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor = age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| io::Error::other(format!("age: {e}")))?;
        encryptor.wrap_output(out)
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipients").field(&self.keys()).finish()
    }
}

/// The secret keys that decrypt dumps (`BACKUP_ENCRYPTION_IDENTITY`). `Debug` shows only the
/// public keys they belong to.
#[derive(Clone)]
pub struct Identities(Vec<x25519::Identity>);

impl Identities {
    /// Parses one or more `AGE-SECRET-KEY-1…` keys (an `age-keygen` output, several
    /// concatenated, or a comma-separated list). `Ok(None)` when the text holds none. An error
    /// names the item by position only.
    pub fn parse(secret: &Secret) -> Result<Option<Self>, String> {
        let items = items(secret.expose());
        if items.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let n = i + 1;
            if item.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("age1")) {
                return Err(format!(
                    "item {n} is a recipient (a public key), not an identity: this variable takes the secret \
                     key (AGE-SECRET-KEY-1…)"
                ));
            }
            // The parser's own reason is a fixed text ("invalid Bech32 encoding"…), never the input.
            let key = x25519::Identity::from_str(item).map_err(|why| {
                format!("item {n} is not an age X25519 identity (AGE-SECRET-KEY-1…): {why} (value not shown: it is a secret)")
            })?;
            keys.push(key);
        }
        Ok(Some(Self(keys)))
    }

    /// A new identity (`restore keygen`).
    pub fn generate() -> Self {
        Self(vec![x25519::Identity::generate()])
    }

    /// The identities in the `age-keygen` file format, public key as a comment. Secret: handle
    /// like the key itself.
    pub fn to_secret_text(&self, created: chrono::DateTime<chrono::Utc>) -> Secret {
        use age::secrecy::ExposeSecret as _;
        let mut text = String::new();
        for key in &self.0 {
            text.push_str(&format!("# created: {}\n", created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
            text.push_str(&format!("# public key: {}\n", key.to_public()));
            text.push_str(key.to_string().expose_secret());
            text.push('\n');
        }
        Secret::new(text)
    }

    /// The public keys of these identities (`age1…`): what a backup must be encrypted to.
    pub fn recipients(&self) -> Vec<String> {
        self.0.iter().map(|k| k.to_public().to_string()).collect()
    }

    fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|k| k as &dyn age::Identity)
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities([redacted]; public keys {:?})", self.recipients())
    }
}

/// Why an encrypted dump cannot be opened. Messages hold public keys only.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The dump is encrypted and no identity is configured.
    #[error(
        "{object} is encrypted (age) to {}; restoring it needs the identity (secret key) of one of them in \
         BACKUP_ENCRYPTION_IDENTITY (Secret Manager; see the runbook, \"Encrypted backups\"), and none is set; \
         nothing was restored",
        list(.recipients)
    )]
    IdentityMissing {
        /// The stored dump.
        object: String,
        /// Its recipients, from the manifest.
        recipients: Vec<String>,
    },
    /// None of the configured identities is one of the dump's recipients.
    #[error(
        "none of the identities in BACKUP_ENCRYPTION_IDENTITY (public keys {}) can decrypt {object}, which is \
         encrypted (age) to {}: set the identity of one of those recipients; nothing was restored",
        list(.have),
        list(.recipients)
    )]
    WrongIdentity {
        /// The stored dump.
        object: String,
        /// Its recipients, from the manifest.
        recipients: Vec<String>,
        /// The public keys of the identities that were tried.
        have: Vec<String>,
    },
    /// The stored object does not start with a valid age header (or its MAC does not match).
    #[error("{object} is not a readable age file ({reason}): the stored object is corrupted; restore refused")]
    BadHeader {
        /// The stored dump.
        object: String,
        /// What age said.
        reason: String,
    },
}

fn list(keys: &[String]) -> String {
    match keys {
        [] => "no recorded recipient".to_owned(),
        [one] => format!("recipient {one}"),
        many => format!("recipients {}", many.join(", ")),
    }
}

impl Classify for EncryptionError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The deployment needs the right key; the data is fine.
            Self::IdentityMissing { .. } | Self::WrongIdentity { .. } => ErrorKind::Config,
            Self::BadHeader { .. } => ErrorKind::Integrity,
        }
    }
}

/// Opens an age stream: reads its header from `input`, unwraps the file key with `identities`,
/// and returns the reader of the plaintext. Errors of later chunks (a changed or missing byte)
/// surface as read errors of the returned reader.
pub fn open<R: Read>(input: R, identities: &Identities) -> Result<age::stream::StreamReader<R>, age::DecryptError> {
    age::Decryptor::new(input)?.decrypt(identities.as_dyn())
}

/// Checks, before anything is restored, that `dump` (stored at `key`) can be decrypted with
/// `identities`: reads the header at the start of the object, checks its MAC and unwraps the file
/// key. Nothing to check for an unencrypted dump.
pub async fn check_key(
    store: &dyn ObjectStore,
    key: &str,
    dump: &DumpObject,
    identities: Option<&Identities>,
) -> Result<(), super::DbError> {
    let Some(encryption) = &dump.encryption else { return Ok(()) };
    let recipients = encryption.recipients.clone();
    let Some(identities) = identities else {
        return Err(EncryptionError::IdentityMissing { object: key.to_owned(), recipients }.into());
    };
    let mut head = Vec::with_capacity(HEADER_PROBE);
    let mut stream = store.read(key).await?;
    while head.len() < HEADER_PROBE {
        match stream.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => break,
        }
    }
    drop(stream); // the rest of the object is read by the restore itself
    match open(&head[..], identities) {
        Ok(_) => Ok(()),
        Err(age::DecryptError::NoMatchingKeys) => {
            Err(EncryptionError::WrongIdentity { object: key.to_owned(), recipients, have: identities.recipients() }
                .into())
        }
        Err(e) => Err(EncryptionError::BadHeader { object: key.to_owned(), reason: e.to_string() }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    const SECRET: &str = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX";

    fn seal(recipients: &Recipients, data: &[u8]) -> Vec<u8> {
        let mut w = recipients.seal(Vec::new()).expect("seal");
        w.write_all(data).expect("write");
        w.finish().expect("finish")
    }

    fn unseal(identities: &Identities, sealed: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        open(sealed, identities).map_err(io::Error::other)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn keys_parse_in_either_case_and_print_canonically() {
        let ids = Identities::parse(&Secret::new(SECRET.to_lowercase())).expect("valid").expect("some");
        let upper = Identities::parse(&Secret::new(SECRET)).expect("valid").expect("some");
        assert_eq!(ids.recipients(), upper.recipients());
        let r = Recipients::parse(&PUBLIC.to_uppercase()).expect("valid").expect("some");
        assert_eq!(r.keys(), [PUBLIC]);
    }

    #[test]
    fn each_of_two_recipients_decrypts_and_a_third_key_does_not() {
        let (a, b, c) = (Identities::generate(), Identities::generate(), Identities::generate());
        let list = format!("{}, {}", a.recipients()[0], b.recipients()[0]);
        let recipients = Recipients::parse(&list).expect("valid").expect("some");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = seal(&recipients, &data);
        assert_ne!(&sealed[..], &data[..]);
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(unseal(&a, &sealed).expect("a"), data);
        assert_eq!(unseal(&b, &sealed).expect("b"), data);
        assert!(matches!(open(&sealed[..], &c), Err(age::DecryptError::NoMatchingKeys)));
        // Several identities (a rotation): the one that matches is used.
        let both = Identities(c.0.iter().chain(&b.0).cloned().collect());
        assert_eq!(unseal(&both, &sealed).expect("c or b"), data);
    }

    #[test]
    fn changed_or_truncated_ciphertext_fails() {
        let id = Identities::generate();
        let recipients = Recipients::parse(&id.recipients()[0]).expect("valid").expect("some");
        let data = vec![7u8; 150_000];
        let sealed = seal(&recipients, &data);
        let mut flipped = sealed.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0x01;
        assert!(unseal(&id, &flipped).is_err(), "a flipped bit in the payload");
        let mut header = sealed.clone();
        header[30] ^= 0x01;
        assert!(unseal(&id, &header).is_err(), "a flipped bit in the header");
        for cut in [sealed.len() - 1, sealed.len() - 70_000, 40] {
            assert!(unseal(&id, &sealed[..cut]).is_err(), "truncated at {cut}");
        }
        // A whole chunk cut at a chunk boundary is also refused (the last chunk is marked).
        let header_len = sealed.len() - (3 * 16 + 150_000);
        let two_chunks = header_len + 2 * (65_536 + 16);
        assert!(unseal(&id, &sealed[..two_chunks]).is_err(), "cut at a chunk boundary");
    }

    #[test]
    fn bad_recipient_lists_are_explained_without_repeating_them() {
        assert_eq!(Recipients::parse(" , \n# only a comment\n").expect("empty"), None);
        let e = Recipients::parse(&format!("{PUBLIC},{SECRET}")).expect_err("a secret key");
        assert!(e.contains("item 2 is an age identity (a SECRET key)"), "{e}");
        assert!(!e.contains(&SECRET[15..]), "{e}");
        let e = Recipients::parse("age1notakey").expect_err("bad");
        assert!(e.starts_with("item 1 is not an age X25519 recipient"), "{e}");
        assert!(!e.contains("age1notakey"), "{e}");
        let e = Recipients::parse(&format!("{PUBLIC} {PUBLIC}")).expect_err("twice");
        assert!(e.contains("item 2 repeats"), "{e}");
        let many = vec![PUBLIC; MAX_RECIPIENTS + 1].join(",");
        assert!(Recipients::parse(&many).expect_err("too many").contains("at most 16"));
        // A recipients file, comments and all.
        let file =
            format!("# main key\n{PUBLIC}\n\n# break-glass (offline)\n{}\n", Identities::generate().recipients()[0]);
        assert_eq!(Recipients::parse(&file).expect("file").expect("some").keys().len(), 2);
    }

    #[test]
    fn bad_identities_are_explained_without_repeating_them() {
        assert!(Identities::parse(&Secret::new("\n# nothing\n")).expect("empty").is_none());
        let e = Identities::parse(&Secret::new(PUBLIC)).expect_err("public");
        assert!(e.contains("is a recipient (a public key)"), "{e}");
        let typo = format!("{}Y", &SECRET[..SECRET.len() - 1]);
        let e = Identities::parse(&Secret::new(format!("{SECRET}\n{typo}"))).expect_err("typo");
        assert!(e.starts_with("item 2 is not an age X25519 identity"), "{e}");
        assert!(!e.contains("GFPYYSJZ"), "{e}");
        // The message depends on where and what kind of mistake, never on the value.
        let message = |v: &str| Identities::parse(&Secret::new(v)).expect_err("malformed");
        assert_eq!(message("AGE-SECRET-KEY-1AAAAAAAA"), message("AGE-SECRET-KEY-1CCCCCCCC"));
        assert_eq!(message("x"), message("y"));
    }

    #[test]
    fn keygen_output_parses_back_and_debug_hides_the_secret() {
        let ids = Identities::generate();
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
        let text = ids.to_secret_text(t);
        assert!(text.expose().starts_with("# created: 2026-11-26T02:00:00Z\n# public key: age1"), "{}", text.expose());
        let again = Identities::parse(&text).expect("parses").expect("some");
        assert_eq!(again.recipients(), ids.recipients());
        let debug = format!("{again:?}");
        assert!(debug.contains(&ids.recipients()[0]) && !debug.contains("AGE-SECRET-KEY"), "{debug}");
        let secret_line = text.expose().lines().last().expect("key line").to_owned();
        assert!(!debug.contains(&secret_line[15..]));
    }
}
