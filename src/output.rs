//! What a job produces beyond an inline result: a result too large to keep in the job's record,
//! and the files its handler wrote. Both are stored in the payload bucket by the worker that ran
//! the attempt, under keys that name the owner (a hash), the job and the attempt, so that no
//! attempt overwrites another's objects and an attempt whose outcome the table refused leaves
//! only objects that no record names (the bucket's lifecycle rules expire them with the job's
//! retention). The job's view answers presigned download URLs for them. Everything here is
//! pure.

use std::time::Duration;

use crate::job::{JobId, Owner};

/// The most files one job may produce.
pub const MAX_OUTPUT_FILES: usize = 100;
/// The longest output file name, in bytes (its path below the output directory, `/`-separated).
pub const MAX_OUTPUT_NAME: usize = 256;
/// How long a download URL in a job's view works.
pub const DOWNLOAD_URL_LIFETIME: Duration = Duration::from_secs(3600);
/// The content type of a result stored as JSON.
pub const JSON: &str = "application/json";
/// The file a process handler's helper writes a result too large for one protocol line to,
/// in the job's output directory: the worker stores it as the result, not as an output file.
pub const RESULT_FILE_NAME: &str = ".sluice-result.json";

/// An object in the payload bucket that a job produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub content_type: String,
}

/// A file the handler wrote, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Its path below the job's output directory, `/`-separated.
    pub name: String,
    pub object: StoredObject,
}

/// The key of an attempt's result stored in the bucket. Pure.
pub fn result_key(owner: &Owner, id: &JobId, attempt: u32) -> String {
    format!(
        "results/{}/{id}/{attempt}/result",
        crate::upload::owner_prefix(owner)
    )
}

/// The key of an attempt's output file `name` (a name [`valid_name`] accepts). Pure.
pub fn output_key(owner: &Owner, id: &JobId, attempt: u32, name: &str) -> String {
    format!(
        "outputs/{}/{id}/{attempt}/{name}",
        crate::upload::owner_prefix(owner)
    )
}

/// Checks an output file's name: a relative path of at most [`MAX_OUTPUT_NAME`] bytes whose
/// `/`-separated parts are neither empty, `.` nor `..`, in printable characters. The error says
/// what is wrong. Pure.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an output file needs a name".into());
    }
    if name.len() > MAX_OUTPUT_NAME {
        return Err(format!(
            "the output file name {:?}… is {} bytes; names are at most {MAX_OUTPUT_NAME}",
            name.chars().take(40).collect::<String>(),
            name.len()
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "the output file name {name:?} holds a control character or a backslash"
        ));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "the output file name {name:?} must be a relative path without empty, `.` or `..` parts"
        ));
    }
    Ok(())
}

/// The content type an output file is stored with, from its name's extension
/// (`application/octet-stream` when unknown). Pure.
pub fn content_type_of(name: &str) -> String {
    mime_guess::from_path(name).first().map_or_else(
        || crate::upload::DEFAULT_CONTENT_TYPE.to_owned(),
        |m| m.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_are_relative_paths_that_cannot_climb() {
        let long = "a".repeat(MAX_OUTPUT_NAME + 1);
        let cases: &[(&str, bool)] = &[
            ("mask.png", true),
            ("frames/0001.jpg", true),
            ("résumé.pdf", true),
            (".hidden", true),
            ("", false),
            ("/etc/passwd", false),
            ("../up.txt", false),
            ("a/../../b", false),
            ("a//b", false),
            ("./a", false),
            ("a/", false),
            ("a\\b", false),
            ("tab\there", false),
            (&long, false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                valid_name(name).is_ok(),
                *ok,
                "{name:?}: {:?}",
                valid_name(name)
            );
        }
        assert!(valid_name(&"a".repeat(MAX_OUTPUT_NAME)).is_ok());
    }

    #[test]
    fn keys_separate_owners_jobs_and_attempts() {
        let id: JobId = "01J00000000000000000000000".parse().unwrap();
        let (alice, bob) = (Owner::new("iam:alice"), Owner::new("iam:bob"));
        let keys = [
            result_key(&alice, &id, 1),
            result_key(&alice, &id, 2),
            result_key(&bob, &id, 1),
            output_key(&alice, &id, 1, "result"),
            output_key(&alice, &id, 2, "result"),
        ];
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert!(keys[0].starts_with("results/") && keys[3].starts_with("outputs/"));
        assert!(keys[3].ends_with(&format!("/{id}/1/result")));
    }

    #[test]
    fn content_types_come_from_the_extension() {
        for (name, want) in [
            ("a.png", "image/png"),
            ("frames/1.jpg", "image/jpeg"),
            ("out.json", "application/json"),
            ("notes.txt", "text/plain"),
            ("blob", "application/octet-stream"),
            ("weights.unknownext", "application/octet-stream"),
        ] {
            assert_eq!(content_type_of(name), want, "{name}");
        }
    }
}
