//! Storing what a successful attempt produced: a result too large to keep in the job's record
//! (or one the handler left as a file), and the files it wrote to its output directory, all in
//! the payload bucket under the attempt's own keys ([`sluice::output`]). Streamed from disk: the
//! worker never holds a file in memory.

use std::path::{Path, PathBuf};

use sluice::aws::DisplayErrorContext;
use sluice::job::{JobId, Owner};
use sluice::output::{self, OutputFile, StoredObject, MAX_OUTPUT_FILES};
use sluice::payload::{PayloadError, Payloads};
use sluice::store::{Produced, ProducedResult};

use crate::handler::{JobError, OutputArea};
use crate::runtime::MAX_RESULT_BYTES;

/// The attempt whose output is stored.
pub(crate) struct Attempt<'a> {
    pub owner: &'a Owner,
    pub id: &'a JobId,
    pub attempt: u32,
}

/// Stores an attempt's result (`json`, unless the handler left its result as a file) and its
/// output files, and says where each is.
pub(crate) async fn store(
    payloads: Option<&Payloads>,
    area: Option<&OutputArea>,
    json: String,
    at: &Attempt<'_>,
) -> Result<Produced, JobError> {
    let result_file = area.and_then(|a| a.result_file.lock().expect("result file lock").take());
    let result = match (&result_file, payloads) {
        (Some((path, content_type)), Some(p)) => {
            let path = inside(area.expect("a result file lives in an output area"), path)?;
            let key = output::result_key(at.owner, at.id, at.attempt);
            ProducedResult::Stored(upload(p, &path, &key, content_type).await?)
        }
        (None, _) if json.len() <= MAX_RESULT_BYTES => ProducedResult::Inline(json),
        (None, Some(p)) => {
            let key = output::result_key(at.owner, at.id, at.attempt);
            let size = json.len() as u64;
            p.put_bytes(&key, json.into_bytes(), output::JSON)
                .await
                .map_err(|e| not_stored("the result", &e))?;
            ProducedResult::Stored(StoredObject {
                key,
                size,
                content_type: output::JSON.into(),
            })
        }
        (_, None) => {
            return Err(JobError::permanent(format!(
                "the result is {} bytes; results up to {MAX_RESULT_BYTES} bytes are stored in the \
                 job, larger ones in the payload bucket, which this worker does not have ({} is not set)",
                json.len(),
                sluice::env::PAYLOAD_BUCKET
            )))
        }
    };
    let mut outputs = Vec::new();
    if let (Some(area), Some(p)) = (area, payloads) {
        let skip = result_file.as_ref().map(|(path, _)| path.as_path());
        for (name, path) in files_in(&area.dir, skip)? {
            let key = output::output_key(at.owner, at.id, at.attempt, &name);
            let object = upload(p, &path, &key, &output::content_type_of(&name)).await?;
            outputs.push(OutputFile { name, object });
        }
    }
    Ok(Produced { result, outputs })
}

async fn upload(
    payloads: &Payloads,
    path: &Path,
    key: &str,
    content_type: &str,
) -> Result<StoredObject, JobError> {
    let info = payloads
        .upload_file(path, key, content_type)
        .await
        .map_err(|e| not_stored(&format!("{}", path.display()), &e))?;
    Ok(StoredObject {
        key: key.to_owned(),
        size: info.size,
        content_type: content_type.to_owned(),
    })
}

fn not_stored(what: &str, e: &PayloadError) -> JobError {
    JobError::retryable(format!(
        "{what} could not be stored in the payload bucket: {}",
        DisplayErrorContext(e)
    ))
}

/// `path`, checked to be a regular file inside the output area.
fn inside(area: &OutputArea, path: &Path) -> Result<PathBuf, JobError> {
    let bad = |why: &str| JobError::permanent(format!("the result file {} {why}", path.display()));
    let dir = area
        .dir
        .canonicalize()
        .map_err(|e| bad(&format!("cannot be checked: {e}")))?;
    let real = path
        .canonicalize()
        .map_err(|e| bad(&format!("cannot be read: {e}")))?;
    if !real.starts_with(&dir) {
        return Err(bad(&format!(
            "is not in the job's output directory {}",
            area.dir.display()
        )));
    }
    if !real.is_file() {
        return Err(bad("is not a regular file"));
    }
    Ok(real)
}

/// The files under `dir` (but `skip`), by name (their path below `dir`, `/`-separated), sorted.
/// Links, other special files, names [`output::valid_name`] refuses and more than
/// [`MAX_OUTPUT_FILES`] files fail the job for good, saying why.
pub(crate) fn files_in(
    dir: &Path,
    skip: Option<&Path>,
) -> Result<Vec<(String, PathBuf)>, JobError> {
    let skip = skip.and_then(|p| p.canonicalize().ok());
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| {
            JobError::retryable(format!(
                "the output directory {} cannot be read: {e}",
                d.display()
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                JobError::retryable(format!(
                    "the output directory {} cannot be read: {e}",
                    d.display()
                ))
            })?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| {
                JobError::retryable(format!("{} cannot be read: {e}", path.display()))
            })?;
            let rel = path.strip_prefix(dir).expect("below the directory");
            let name = rel
                .to_str()
                .ok_or_else(|| {
                    JobError::permanent(format!("the output file name {rel:?} is not UTF-8"))
                })?
                .replace(std::path::MAIN_SEPARATOR, "/");
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            if kind.is_symlink() {
                return Err(JobError::permanent(format!(
                    "the output file {name:?} is a link; write files, not links, to the output directory"
                )));
            }
            if !kind.is_file() {
                return Err(JobError::permanent(format!(
                    "the output file {name:?} is not a regular file"
                )));
            }
            if skip
                .as_deref()
                .is_some_and(|s| path.canonicalize().ok().as_deref() == Some(s))
            {
                continue;
            }
            output::valid_name(&name).map_err(JobError::permanent)?;
            found.push((name, path));
            if found.len() > MAX_OUTPUT_FILES {
                return Err(JobError::permanent(format!(
                    "the handler wrote more than {MAX_OUTPUT_FILES} output files; put them in an archive"
                )));
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area() -> OutputArea {
        let id = sluice::job::JobId::generate();
        OutputArea::create(&id, 1).unwrap()
    }

    #[test]
    fn output_files_are_listed_by_name_and_links_refused() {
        let a = area();
        std::fs::create_dir_all(a.dir.join("frames")).unwrap();
        std::fs::write(a.dir.join("mask.png"), b"png").unwrap();
        std::fs::write(a.dir.join("frames/2.jpg"), b"2").unwrap();
        std::fs::write(a.dir.join("frames/1.jpg"), b"1").unwrap();
        std::fs::write(a.dir.join(output::RESULT_FILE_NAME), b"{}").unwrap();
        let skip = a.dir.join(output::RESULT_FILE_NAME);
        let names: Vec<String> = files_in(&a.dir, Some(&skip))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["frames/1.jpg", "frames/2.jpg", "mask.png"]);

        std::os::unix::fs::symlink("/etc/hostname", a.dir.join("secret")).unwrap();
        let e = files_in(&a.dir, Some(&skip)).unwrap_err();
        assert_eq!(e.kind, crate::handler::ErrorKind::Permanent);
        assert!(e.message.contains("\"secret\" is a link"), "{}", e.message);
    }

    #[test]
    fn too_many_output_files_fail_the_job_for_good() {
        let a = area();
        for i in 0..=MAX_OUTPUT_FILES {
            std::fs::write(a.dir.join(format!("{i}.txt")), b"x").unwrap();
        }
        let e = files_in(&a.dir, None).unwrap_err();
        assert_eq!(e.kind, crate::handler::ErrorKind::Permanent);
        assert!(e.message.contains("more than 100"), "{}", e.message);
    }

    #[test]
    fn a_result_file_must_be_a_file_in_the_output_directory() {
        let a = area();
        std::fs::write(a.dir.join("r.json"), b"{}").unwrap();
        assert!(inside(&a, &a.dir.join("r.json")).is_ok());
        let outside = std::env::temp_dir().join(format!("{}-outside", a.dir.display()));
        std::fs::write(&outside, b"{}").unwrap();
        let e = inside(&a, &outside).unwrap_err();
        assert!(
            e.message.contains("not in the job's output directory"),
            "{}",
            e.message
        );
        let _ = std::fs::remove_file(&outside);
        let e = inside(&a, &a.dir).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{}", e.message);
        let e = inside(&a, &a.dir.join("missing")).unwrap_err();
        assert!(e.message.contains("cannot be read"), "{}", e.message);
    }
}
