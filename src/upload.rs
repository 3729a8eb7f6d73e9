//! Uploads: job inputs too large for a queue message, sent by the caller straight to S3 (the
//! claim-check pattern).
//!
//! `POST /uploads` records an upload (its owner, object key, announced size and expiry) in the
//! jobs table as the item `upload:<id>` and answers presigned URLs: one PUT up to
//! [`SINGLE_PUT_LIMIT`], a multipart upload with one URL per part above it. A job then names the
//! upload (`"input_file": {"upload_id": …}`); the submit checks it with [`usable`] and
//! [`matches_object`] and records the object on the job ([`InputObject`]), which the worker
//! downloads to a file for the handler. Everything here is pure.

use std::time::Duration;

use crate::job::Owner;
use crate::payload::{self, ObjectInfo, PayloadError, MAX_PARTS, MIB};
use crate::time::Millis;

/// Uploads up to this size get one presigned PUT; larger ones a multipart upload.
pub const SINGLE_PUT_LIMIT: u64 = 100 * MIB;
/// The most part URLs one answer carries: about 1.5 KB each with a session token, so that the
/// answer of a 5 TiB upload stays well inside a Lambda function's 6 MB response.
pub const MAX_ANSWER_PARTS: u32 = 2_000;
/// The content type of an upload that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// The longest content type accepted.
pub const MAX_CONTENT_TYPE: usize = 255;
/// How long an upload's record outlives its expiry before DynamoDB's TTL removes it.
pub const RECORD_GRACE: Duration = Duration::from_secs(86_400);

/// An upload's id: a ULID, time-sortable like a job's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    pub fn generate() -> Self {
        UploadId(ulid::Ulid::new().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for UploadId {
    type Err = String;

    /// A ULID in its 26-character text, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(|u| UploadId(u.to_string()))
            .map_err(|_| {
                format!(
                    "{:?} is not an upload id",
                    s.chars().take(40).collect::<String>()
                )
            })
    }
}

/// The object key of an upload: under the owner's own prefix (a hash, so the key names no one),
/// so that one caller's objects are never under another's. Pure.
pub fn object_key(owner: &Owner, id: &UploadId) -> String {
    format!("uploads/{}/{id}", owner_prefix(owner))
}

/// The owner's part of an upload key: 32 hex digits of a hash of the owner. Pure.
pub fn owner_prefix(owner: &Owner) -> String {
    let mut h = crate::api::sha256_hex(&[b"uploads", owner.as_str().as_bytes()]);
    h.truncate(32);
    h
}

/// An upload as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: UploadId,
    pub owner: Owner,
    pub key: String,
    /// The size announced by the caller: the object must have exactly this many bytes.
    pub size: u64,
    pub content_type: String,
    pub created_at: Millis,
    /// URLs stop working, and no new job may name the upload, from then on.
    pub expires_at: Millis,
    /// S3's id of the multipart upload; `None` for a single PUT.
    pub multipart: Option<String>,
    /// When the multipart upload was completed (`POST /uploads/{id}/complete`).
    pub completed_at: Option<Millis>,
    /// The file's SHA-256 (lowercase hex) as the caller declared it, if it did.
    pub sha256: Option<String>,
}

impl UploadRecord {
    /// What a job naming this upload is compared by under an idempotency key: the content it
    /// declared (so the same file uploaded again is the same request), else the upload itself.
    /// Pure.
    pub fn identity(&self) -> String {
        match &self.sha256 {
            Some(sum) => format!("sha256:{sum}:{}", self.size),
            None => self.id.to_string(),
        }
    }
}

/// How an upload of `size` bytes is sent: `None` for one PUT, or `(part_size, parts)` for a
/// multipart upload whose parts are all `part_size` bytes but the last. Parts are at least
/// [`payload::PREFERRED_PART_SIZE`] and few enough for one answer ([`MAX_ANSWER_PARTS`]).
/// Refuses a size over `max_bytes` (or S3's 5 TiB). Pure.
pub fn plan(
    size: u64,
    single_put_limit: u64,
    max_bytes: u64,
) -> Result<Option<(u64, u32)>, PayloadError> {
    if size > max_bytes.min(payload::MAX_OBJECT_SIZE) {
        return Err(PayloadError::TooLarge { size });
    }
    if size <= single_put_limit.min(payload::MAX_PART_SIZE) {
        return Ok(None);
    }
    let (preferred, _) = payload::part_plan(size)?;
    let fewest = size.div_ceil(u64::from(MAX_ANSWER_PARTS.min(MAX_PARTS)));
    let part_size = preferred.max(fewest.div_ceil(MIB) * MIB);
    let parts = u32::try_from(size.div_ceil(part_size)).expect("at most MAX_ANSWER_PARTS parts");
    Ok(Some((part_size, parts)))
}

/// Why an upload cannot be used (or completed) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such upload, or another owner's: the caller cannot tell which.
    Unknown,
    /// Past its expiry.
    Expired { at: Millis },
    /// The object is not there yet: never PUT, or a multipart upload not completed.
    Unfinished { multipart: bool },
    /// The object's size is not the one announced.
    SizeMismatch { announced: u64, stored: u64 },
}

/// Whether `owner` may use the upload `found` at `now`. Pure.
pub fn usable(found: Option<&UploadRecord>, owner: &Owner, now: Millis) -> Result<(), Refusal> {
    let up = found
        .filter(|u| u.owner == *owner)
        .ok_or(Refusal::Unknown)?;
    if now >= up.expires_at {
        return Err(Refusal::Expired { at: up.expires_at });
    }
    Ok(())
}

/// Whether the object S3 holds (`None`: nothing) is the upload's, finished. Pure.
pub fn matches_object(up: &UploadRecord, object: Option<&ObjectInfo>) -> Result<(), Refusal> {
    let multipart = up.multipart.is_some();
    let object = object.ok_or(Refusal::Unfinished { multipart })?;
    if multipart && up.completed_at.is_none() {
        return Err(Refusal::Unfinished { multipart });
    }
    if object.size != up.size {
        return Err(Refusal::SizeMismatch {
            announced: up.size,
            stored: object.size,
        });
    }
    Ok(())
}

/// Checks an upload's content type: a media type of visible ASCII. Pure.
pub fn valid_content_type(ct: &str) -> bool {
    !ct.is_empty()
        && ct.len() <= MAX_CONTENT_TYPE
        && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && ct.contains('/')
}

/// The object a job reads its file from, as recorded on the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputObject {
    /// The upload it came from; empty for an object a pipeline found in its bucket, or one a
    /// job named (`s3://bucket/key`).
    pub upload_id: String,
    /// The bucket, when not the payload bucket (an object a pipeline found in its bucket, or one
    /// a job named).
    pub bucket: Option<String>,
    pub key: String,
    pub size: u64,
    pub content_type: String,
    /// The version S3 showed when the job was accepted (a versioned bucket), which the worker
    /// reads rather than whatever is latest then.
    pub version_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    #[test]
    fn plans_one_put_up_to_the_limit_and_parts_above() {
        let max = payload::MAX_OBJECT_SIZE;
        let cases: &[(u64, Option<(u64, u32)>)] = &[
            (0, None),
            (SINGLE_PUT_LIMIT, None),
            (SINGLE_PUT_LIMIT + 1, Some((8 * MIB, 13))),
            (5 * GIB, Some((8 * MIB, 640))),
            // 16 GiB in 8 MiB parts would be 2,048 URLs: the parts grow instead.
            (16 * GIB, Some((9 * MIB, 1821))),
            (5 * TIB, Some((2622 * MIB, 2_000))),
        ];
        for &(size, want) in cases {
            let got = plan(size, SINGLE_PUT_LIMIT, max).unwrap();
            assert_eq!(got, want, "size {size}");
            if let Some((part, parts)) = got {
                assert!(part <= payload::MAX_PART_SIZE && parts <= MAX_ANSWER_PARTS);
                assert!(u64::from(parts) * part >= size && u64::from(parts - 1) * part < size);
            }
        }
        assert!(matches!(
            plan(5 * TIB + 1, SINGLE_PUT_LIMIT, max),
            Err(PayloadError::TooLarge { .. })
        ));
        assert!(matches!(
            plan(11, SINGLE_PUT_LIMIT, 10),
            Err(PayloadError::TooLarge { size: 11 })
        ));
    }

    fn record(multipart: bool, completed: bool) -> UploadRecord {
        let owner = Owner::new("arn:aws:iam::123456789012:user/alice");
        let id = UploadId::generate();
        UploadRecord {
            key: object_key(&owner, &id),
            id,
            owner,
            size: 10,
            content_type: "image/jpeg".into(),
            created_at: Millis(1_000),
            expires_at: Millis(5_000),
            multipart: multipart.then(|| "mp".into()),
            completed_at: completed.then_some(Millis(2_000)),
            sha256: None,
        }
    }

    #[test]
    fn an_upload_is_usable_by_its_owner_until_it_expires() {
        let up = record(false, false);
        let bob = Owner::new("arn:aws:iam::123456789012:user/bob");
        assert_eq!(usable(Some(&up), &up.owner, Millis(4_999)), Ok(()));
        assert_eq!(
            usable(Some(&up), &up.owner, Millis(5_000)),
            Err(Refusal::Expired { at: Millis(5_000) })
        );
        assert_eq!(usable(Some(&up), &bob, Millis(0)), Err(Refusal::Unknown));
        assert_eq!(usable(None, &up.owner, Millis(0)), Err(Refusal::Unknown));
    }

    #[test]
    fn only_a_finished_object_of_the_announced_size_matches() {
        let obj = |size| ObjectInfo {
            size,
            content_type: None,
            etag: "\"e\"".into(),
        };
        let cases = [
            (
                record(false, false),
                None,
                Err(Refusal::Unfinished { multipart: false }),
            ),
            (record(false, false), Some(obj(10)), Ok(())),
            (
                record(false, false),
                Some(obj(9)),
                Err(Refusal::SizeMismatch {
                    announced: 10,
                    stored: 9,
                }),
            ),
            (
                record(true, false),
                None,
                Err(Refusal::Unfinished { multipart: true }),
            ),
            (
                record(true, false),
                Some(obj(10)),
                Err(Refusal::Unfinished { multipart: true }),
            ),
            (record(true, true), Some(obj(10)), Ok(())),
        ];
        for (up, object, want) in cases {
            assert_eq!(
                matches_object(&up, object.as_ref()),
                want,
                "{up:?} {object:?}"
            );
        }
    }

    #[test]
    fn keys_sit_under_the_owners_own_prefix() {
        let alice = Owner::new("arn:aws:iam::123456789012:user/alice");
        let bob = Owner::new("arn:aws:iam::123456789012:user/bob");
        let id = UploadId::generate();
        let a = object_key(&alice, &id);
        assert!(a.starts_with("uploads/") && a.ends_with(id.as_str()));
        assert!(!a.contains("alice"));
        assert_ne!(owner_prefix(&alice), owner_prefix(&bob));
        assert_eq!(owner_prefix(&alice).len(), 32);
        assert!("not-an-id".parse::<UploadId>().is_err());
        assert_eq!(id.as_str().to_lowercase().parse::<UploadId>(), Ok(id));
    }

    #[test]
    fn content_types_are_media_types() {
        for (ct, ok) in [
            ("image/jpeg", true),
            ("text/csv; charset=utf-8", true),
            ("jpeg", false),
            ("", false),
            ("a/b\n", false),
        ] {
            assert_eq!(valid_content_type(ct), ok, "{ct:?}");
        }
    }
}
