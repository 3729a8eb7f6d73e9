//! References: jobs that name an object already in S3 (`s3://bucket/key`) instead of an upload.
//!
//! A deployment lists the buckets jobs may name (`SLUICE_INPUT_BUCKETS`); the worker reads the
//! object with its own role. So that a caller can name only objects it may read itself, the
//! job carries a presigned GET URL of the object made with the caller's own credentials, and the
//! API makes one request through it ([`probe`]): S3, which verifies the signature, answers only
//! if those credentials may read the object. Before that request the URL is checked
//! ([`check`]): S3's own host (never another: the API must not be pointed at other hosts), a
//! SigV4 query-string signature, and the very bucket and key the job names, in a listed bucket.
//!
//! Everything here is pure but [`probe`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use url::{Host, Url};

/// S3's longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest presigned URL accepted (a session token makes them about 1.5 KB).
pub const MAX_URL_LEN: usize = 8 * 1024;
/// How long the API waits for S3's answer to the check.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error body is read to tell an empty object's 416 from another.
const MAX_ERROR_BODY: usize = 4 * 1024;

/// An object's name: `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Name {
    pub bucket: String,
    pub key: String,
}

impl std::fmt::Display for S3Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl std::str::FromStr for S3Name {
    type Err = String;

    /// `s3://bucket/key`: a valid bucket name and a key of 1 to 1,024 bytes, taken as written
    /// (no percent-decoding: S3 keys are any text).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(80).collect();
        let rest = s.strip_prefix("s3://").ok_or_else(|| {
            format!("{shown:?} is not an S3 object's name: write s3://bucket/key")
        })?;
        let (bucket, key) = rest.split_once('/').ok_or_else(|| {
            format!(
                "{shown:?} names no object: write s3://bucket/key, with the key after the bucket"
            )
        })?;
        check_bucket_name(bucket).map_err(|why| format!("{shown:?}: {why}"))?;
        check_key(key).map_err(|why| format!("{shown:?}: {why}"))?;
        Ok(S3Name {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// Checks an S3 bucket name: 3 to 63 characters, lowercase letters, digits, dots and hyphens,
/// starting and ending with a letter or digit. Pure.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(70).collect();
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || !alnum(name.bytes().next())
        || !alnum(name.bytes().last())
    {
        return Err(format!(
            "{shown:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and \
             hyphens, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty: name an object, s3://bucket/key".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key is {} bytes; S3 keys are at most {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("the key holds control characters, which this API does not take".into());
    }
    Ok(())
}

/// The buckets whose objects jobs may name (`SLUICE_INPUT_BUCKETS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputBuckets(BTreeSet<String>);

impl InputBuckets {
    /// A comma-separated list of bucket names; blanks around names are ignored. Pure.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            check_bucket_name(name)?;
            set.insert(name.to_owned());
        }
        Ok(InputBuckets(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, bucket: &str) -> bool {
        self.0.contains(bucket)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl<S: Into<String>> FromIterator<S> for InputBuckets {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        InputBuckets(iter.into_iter().map(Into::into).collect())
    }
}

/// The local emulator's S3 endpoint (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` on a loopback
/// address): presigned URLs of the local stack point there, path style, over plain http.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulator {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Emulator {
    /// The emulator an endpoint URL names; `None` unless it is http(s) on a loopback host
    /// (`localhost`, 127.0.0.0/8, `[::1]`): a deployment's endpoints are never trusted this way.
    /// Pure.
    pub fn from_endpoint(endpoint: &str) -> Option<Emulator> {
        let url = Url::parse(endpoint).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        let loopback = match url.host()? {
            Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            Host::Ipv4(ip) => IpAddr::from(ip).is_loopback(),
            Host::Ipv6(ip) => IpAddr::from(ip).is_loopback(),
        };
        loopback.then(|| Emulator {
            scheme: url.scheme().to_owned(),
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or(80),
        })
    }
}

/// Why a presigned URL is refused before any request is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("the presigned URL is over {MAX_URL_LEN} characters: presign a plain GET of the object, without extra parameters")]
    TooLong,
    #[error("the presigned URL is not a URL ({0}): send the URL your S3 client's presign gave, unchanged")]
    Invalid(String),
    #[error("the presigned URL must use https, not {0}: presign with S3's own https endpoint")]
    Scheme(String),
    #[error("the presigned URL carries a user name or password; send S3's URL as presigned")]
    Userinfo,
    #[error("the presigned URL names port {0}; S3's own endpoint takes no port: presign with the default endpoint")]
    Port(u16),
    #[error("the presigned URL's host {0:?} is not S3's (bucket.s3.REGION.amazonaws.com or s3.REGION.amazonaws.com/bucket): presign a GET with an S3 client on its default endpoint")]
    NotS3(String),
    #[error("the presigned URL is not a SigV4 presigned GET ({0}): presign it with an AWS SDK or `aws s3 presign`")]
    NotPresigned(&'static str),
    #[error("the presigned URL's path names no object ({0}): presign a GET of the object itself")]
    Path(&'static str),
}

/// A presigned URL that passed [`parse_presigned`]: the URL to request, and the object it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub url: Url,
    pub name: S3Name,
}

/// The region part of an S3 host name: `us-east-1`, `eu-central-2`, `us-gov-west-1`,
/// `cn-north-1`.
fn is_region(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() >= 2
        && rest[..rest.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && rest[rest.len() - 1]
            .parse::<u8>()
            .is_ok_and(|_| rest[rest.len() - 1].bytes().all(|b| b.is_ascii_digit()))
}

/// The bucket of a host name of S3's own: `Some(Some(bucket))` virtual-hosted
/// (`bucket.s3.amazonaws.com`, `bucket.s3.REGION.amazonaws.com`, `bucket.s3-REGION.amazonaws.com`,
/// and the same under `.amazonaws.com.cn`), `Some(None)` path style (`s3.amazonaws.com`,
/// `s3.REGION.amazonaws.com`, `s3-REGION.amazonaws.com`), `None` for any other host. Pure.
fn s3_host_bucket(host: &str) -> Option<Option<String>> {
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = rest.split('.').collect();
    let n = labels.len();
    let last = labels[n - 1];
    let endpoint_labels = if last == "s3" || last.strip_prefix("s3-").is_some_and(is_region) {
        1
    } else if n >= 2 && labels[n - 2] == "s3" && is_region(last) {
        2
    } else {
        return None;
    };
    let bucket = labels[..n - endpoint_labels].join(".");
    Some((!bucket.is_empty()).then_some(bucket))
}

fn decode(raw: &str) -> Result<String, UrlRefusal> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| UrlRefusal::Path("its key is not UTF-8 text"))
}

/// Parses a presigned GET URL strictly: https to S3's own host (a virtual-hosted or path-style
/// endpoint of `amazonaws.com` or `amazonaws.com.cn`; or, on the local stack, the emulator's
/// host and port, path style, http allowed), no user name, password, port or fragment, a SigV4
/// query-string signature, and the bucket and key it names (percent-decoded, as S3 reads them).
/// No request is made. Pure.
pub fn parse_presigned(text: &str, emulator: Option<&Emulator>) -> Result<Presigned, UrlRefusal> {
    if text.len() > MAX_URL_LEN {
        return Err(UrlRefusal::TooLong);
    }
    let url = Url::parse(text).map_err(|e| UrlRefusal::Invalid(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Userinfo);
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let on_emulator = emulator.filter(|e| {
        e.host == host && Some(e.port) == url.port_or_known_default() && e.scheme == url.scheme()
    });
    let host_bucket = if on_emulator.is_some() {
        None
    } else {
        if url.scheme() != "https" {
            return Err(UrlRefusal::Scheme(url.scheme().to_owned()));
        }
        if !matches!(url.host(), Some(Host::Domain(_))) {
            return Err(UrlRefusal::NotS3(host));
        }
        let bucket = s3_host_bucket(&host).ok_or_else(|| UrlRefusal::NotS3(host.clone()))?;
        if let Some(port) = url.port() {
            return Err(UrlRefusal::Port(port));
        }
        bucket
    };
    finish(url, host_bucket)
}

/// The bucket (from the host, else the path's first segment: path style) and the key.
fn finish(url: Url, host_bucket: Option<String>) -> Result<Presigned, UrlRefusal> {
    if url.fragment().is_some() {
        return Err(UrlRefusal::Invalid("it has a #fragment".into()));
    }
    let path = url
        .path()
        .strip_prefix('/')
        .ok_or(UrlRefusal::Path("no path"))?;
    let (bucket, raw_key) = match host_bucket {
        Some(bucket) => (bucket, path),
        None => {
            let (bucket, key) = path
                .split_once('/')
                .ok_or(UrlRefusal::Path("no key after the bucket"))?;
            // A bucket name has nothing to escape: an escape here could hide a slash.
            if bucket.contains('%') {
                return Err(UrlRefusal::Path("the bucket is percent-encoded"));
            }
            (bucket.to_owned(), key)
        }
    };
    if check_bucket_name(&bucket).is_err() {
        return Err(UrlRefusal::Path("its bucket is not a bucket name"));
    }
    let key = decode(raw_key)?;
    if key.is_empty() {
        return Err(UrlRefusal::Path("the key is empty"));
    }
    let mut algorithm = Vec::new();
    let mut credential = 0;
    let mut signature = Vec::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "X-Amz-Algorithm" => algorithm.push(v.into_owned()),
            "X-Amz-Credential" => credential += 1,
            "X-Amz-Signature" => signature.push(v.into_owned()),
            _ => {}
        }
    }
    if algorithm.len() != 1 || algorithm[0] != "AWS4-HMAC-SHA256" {
        return Err(UrlRefusal::NotPresigned(
            "it needs one X-Amz-Algorithm=AWS4-HMAC-SHA256",
        ));
    }
    if credential != 1 {
        return Err(UrlRefusal::NotPresigned("it needs one X-Amz-Credential"));
    }
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if signature.len() != 1 || !hex(&signature[0]) {
        return Err(UrlRefusal::NotPresigned(
            "it needs one X-Amz-Signature of 64 hex digits",
        ));
    }
    Ok(Presigned {
        url,
        name: S3Name { bucket, key },
    })
}

/// Why a job's reference is refused before any request is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The deployment lists no buckets.
    NoBuckets,
    /// The named bucket is not one the deployment lists.
    NotListed(String),
    /// The URL is not a presigned GET of S3's own.
    Url(UrlRefusal),
    /// The URL names another object than the job.
    Mismatch { named: S3Name, signed: S3Name },
}

/// Checks a job's reference: the bucket listed, the URL one of S3's own presigned GETs, and of
/// the very object the job names. What passes is the URL to request. Pure.
pub fn check(
    name: &S3Name,
    presigned_url: &str,
    buckets: &InputBuckets,
    emulator: Option<&Emulator>,
) -> Result<Presigned, Refusal> {
    if buckets.is_empty() {
        return Err(Refusal::NoBuckets);
    }
    if !buckets.contains(&name.bucket) {
        return Err(Refusal::NotListed(name.bucket.clone()));
    }
    let presigned = parse_presigned(presigned_url, emulator).map_err(Refusal::Url)?;
    if presigned.name != *name {
        return Err(Refusal::Mismatch {
            named: name.clone(),
            signed: presigned.name,
        });
    }
    Ok(presigned)
}

/// What one GET of the first byte tells about the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub size: u64,
    pub content_type: String,
    /// S3's version of the object (`x-amz-version-id`), when the bucket keeps versions.
    pub version_id: Option<String>,
}

/// Why S3 did not show the object through the URL.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// 403: the signature is wrong, expired, or its credentials may not read the object.
    #[error("S3 refused the presigned URL (HTTP 403)")]
    Forbidden,
    /// 404: no such object (or bucket).
    #[error("no such object (HTTP 404)")]
    NotFound,
    /// Any other answer.
    #[error("S3 answered HTTP {status}{}", if .hint.is_empty() { String::new() } else { format!(" ({})", .hint) })]
    Status { status: u16, hint: String },
    /// An answer that does not say the object's size.
    #[error("S3's answer does not tell the object's size ({0})")]
    NoSize(&'static str),
    /// S3 could not be reached, or did not answer in time.
    #[error("S3 did not answer")]
    Unreachable(#[source] reqwest::Error),
}

/// The client [`probe`] sends with: no redirects, [`PROBE_TIMEOUT`], no proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
        .expect("the reference client's settings are valid")
}

/// Makes the one request of a check: `GET` of the first byte through the presigned URL,
/// reading at most a few bytes of the answer, then judges it ([`judge`]).
pub async fn probe(http: &reqwest::Client, url: &Url) -> Result<Found, ProbeError> {
    let mut resp = http
        .get(url.clone())
        .header(reqwest::header::RANGE, "bytes=0-0")
        .send()
        .await
        .map_err(ProbeError::Unreachable)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut head = Vec::new();
    if status == 416 {
        while head.len() < MAX_ERROR_BODY {
            match resp.chunk().await {
                Ok(Some(c)) => head.extend_from_slice(&c),
                _ => break,
            }
        }
    }
    drop(resp);
    judge(status, &headers, &head)
}

/// Judges S3's answer to a GET of the first byte. 206 (`Content-Range: bytes 0-0/SIZE`), or 200
/// (an empty object, or a server that ignores ranges: `Content-Length`) shows the object; 416 is
/// an empty object when S3 says its size is 0 (`Content-Range: bytes */0`, or
/// `<ActualObjectSize>0</ActualObjectSize>` in its error). Pure.
pub fn judge(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body_head: &[u8],
) -> Result<Found, ProbeError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let content_type = header("content-type")
        .filter(|ct| crate::upload::valid_content_type(ct))
        .unwrap_or(crate::upload::DEFAULT_CONTENT_TYPE)
        .to_owned();
    let version_id = header("x-amz-version-id")
        .filter(|v| !v.is_empty() && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    let size = match status {
        206 => {
            let range = header("content-range").ok_or(ProbeError::NoSize("no Content-Range"))?;
            let total = range
                .strip_prefix("bytes 0-0/")
                .ok_or(ProbeError::NoSize("a Content-Range not of the first byte"))?;
            total
                .parse::<u64>()
                .map_err(|_| ProbeError::NoSize("a Content-Range without a size"))?
        }
        200 => header("content-length")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(ProbeError::NoSize("no Content-Length"))?,
        416 => {
            let text = String::from_utf8_lossy(body_head);
            let empty = header("content-range") == Some("bytes */0")
                || text.contains("<ActualObjectSize>0</ActualObjectSize>");
            if !empty {
                return Err(ProbeError::Status {
                    status,
                    hint: "a range S3 would not serve, of an object that is not empty".into(),
                });
            }
            return Ok(Found {
                size: 0,
                content_type: crate::upload::DEFAULT_CONTENT_TYPE.into(),
                version_id,
            });
        }
        403 => return Err(ProbeError::Forbidden),
        404 => return Err(ProbeError::NotFound),
        400 => {
            return Err(ProbeError::Status {
                status,
                hint: "S3 found the request malformed, as it does a GET presigned for another \
                       region than the bucket's: presign with the bucket's region"
                    .into(),
            })
        }
        301 | 307 => {
            return Err(ProbeError::Status {
                status,
                hint: "S3 redirects to the bucket's region: presign with the bucket's region"
                    .into(),
            })
        }
        other => {
            return Err(ProbeError::Status {
                status: other,
                hint: String::new(),
            })
        }
    };
    Ok(Found {
        size,
        content_type,
        version_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn q() -> String {
        format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={SIG}"
        )
    }

    fn name(s: &str) -> S3Name {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_s3_uris_with_a_valid_bucket_and_a_key() {
        let cases = [
            ("s3://data-lake/in/a.csv", Ok(("data-lake", "in/a.csv"))),
            ("s3://my.bucket.1/a b/ü", Ok(("my.bucket.1", "a b/ü"))),
            ("s3://data/a%2Fb", Ok(("data", "a%2Fb"))),
            ("s3://data/../x", Ok(("data", "../x"))),
            ("s3://Data/x", Err("not an S3 bucket name")),
            ("s3://ab/x", Err("not an S3 bucket name")),
            ("s3://-ab/x", Err("not an S3 bucket name")),
            ("s3://ab-/x", Err("not an S3 bucket name")),
            ("s3://a_b/x", Err("not an S3 bucket name")),
            ("s3://bucket", Err("names no object")),
            ("s3://bucket/", Err("the key is empty")),
            ("https://bucket/x", Err("write s3://bucket/key")),
            ("s3://bucket/a\nb", Err("control characters")),
        ];
        for (text, want) in cases {
            match (text.parse::<S3Name>(), want) {
                (Ok(n), Ok((b, k))) => assert_eq!((n.bucket.as_str(), n.key.as_str()), (b, k)),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        let long = format!("s3://bucket/{}", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(long.parse::<S3Name>().unwrap_err().contains("at most 1024"));
        assert_eq!(name("s3://b-1/k/x").to_string(), "s3://b-1/k/x");
    }

    #[test]
    fn bucket_lists_hold_only_bucket_names() {
        let list = InputBuckets::parse(" data-lake, raw.images ,,").unwrap();
        assert!(list.contains("data-lake") && list.contains("raw.images"));
        assert!(!list.contains("data"));
        assert!(InputBuckets::parse("").unwrap().is_empty());
        for bad in ["Data", "a", "ok-bucket,bad_bucket", "x".repeat(64).as_str()] {
            assert!(InputBuckets::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_endpoints_are_an_emulator() {
        let e = Emulator::from_endpoint("http://127.0.0.1:4566").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 4566));
        assert!(Emulator::from_endpoint("http://localhost:5000/").is_some());
        assert!(Emulator::from_endpoint("http://[::1]:5000/").is_some());
        for not in [
            "https://s3.us-east-1.amazonaws.com",
            "http://10.0.0.5:4566",
            "http://localstack:4566",
            "ftp://127.0.0.1/",
            "garbage",
        ] {
            assert_eq!(Emulator::from_endpoint(not), None, "{not}");
        }
    }

    #[test]
    fn presigned_urls_must_be_s3s_own_and_name_an_object() {
        let emu = Emulator::from_endpoint("http://127.0.0.1:4566").unwrap();
        let ok = |bucket: &str, key: &str| Ok(name(&format!("s3://{bucket}/{key}")));
        let qs = q();
        let cases: Vec<(String, Result<S3Name, &str>)> = vec![
            // Virtual-hosted, every endpoint form.
            (
                format!("https://data.s3.amazonaws.com/in/a.csv?{qs}"),
                ok("data", "in/a.csv"),
            ),
            (
                format!("https://data.s3.eu-west-1.amazonaws.com/a?{qs}"),
                ok("data", "a"),
            ),
            (
                format!("https://data.s3-eu-west-1.amazonaws.com/a?{qs}"),
                ok("data", "a"),
            ),
            (
                format!("https://my.data.s3.us-gov-west-1.amazonaws.com/a?{qs}"),
                ok("my.data", "a"),
            ),
            (
                format!("https://data.s3.cn-north-1.amazonaws.com.cn/a?{qs}"),
                ok("data", "a"),
            ),
            // Path style.
            (
                format!("https://s3.amazonaws.com/data/a/b.txt?{qs}"),
                ok("data", "a/b.txt"),
            ),
            (
                format!("https://s3.us-east-1.amazonaws.com/data/a?{qs}"),
                ok("data", "a"),
            ),
            (
                format!("https://s3-us-west-2.amazonaws.com/data/a?{qs}"),
                ok("data", "a"),
            ),
            // Keys are read as S3 reads them: percent-decoded, an encoded slash a slash.
            (
                format!("https://data.s3.amazonaws.com/a%20b/%C3%BC?{qs}"),
                ok("data", "a b/ü"),
            ),
            (
                format!("https://data.s3.amazonaws.com/a%2Fb?{qs}"),
                ok("data", "a/b"),
            ),
            // Dot segments are resolved before anything is compared or sent.
            (
                format!("https://data.s3.amazonaws.com/x/../secret?{qs}"),
                ok("data", "secret"),
            ),
            (
                format!("https://data.s3.amazonaws.com/x/%2e%2e/secret?{qs}"),
                ok("data", "secret"),
            ),
            // A host name is not case-sensitive.
            (
                format!("https://DATA.S3.AMAZONAWS.COM/a?{qs}"),
                ok("data", "a"),
            ),
            // The emulator, on the local stack only: its host and port, path style, http.
            (
                format!("http://127.0.0.1:4566/data/a?{qs}"),
                ok("data", "a"),
            ),
            (
                format!("http://127.0.0.1:4567/data/a?{qs}"),
                Err("must use https"),
            ),
            (
                format!("https://127.0.0.1:4566/data/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("http://data.s3.amazonaws.com/a?{qs}"),
                Err("must use https"),
            ),
            // Other hosts, however named.
            (
                format!("https://data.s3.amazonaws.com.evil.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://s3.amazonaws.com@evil.com/data/a?{qs}"),
                Err("user name"),
            ),
            (
                format!("https://evil.com/data.s3.amazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://data.evilamazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://data.ec2.amazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://data.s3.us-east-1.amazonaws.com.cn.evil.com/a?{qs}"),
                Err("not S3's"),
            ),
            (format!("https://52.216.0.1/data/a?{qs}"), Err("not S3's")),
            // S3's other endpoints are not the object's own GET: a website endpoint serves
            // without checking signatures, an access point or directory bucket is another name.
            (
                format!("https://data.s3-website-us-east-1.amazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://data.s3-website.eu-west-1.amazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://ap-123456789012.s3-accesspoint.us-east-1.amazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://data.s3.dualstack.us-east-1.amazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (
                format!("https://data.s3-fips.us-east-1.amazonaws.com/a?{qs}"),
                Err("not S3's"),
            ),
            (format!("https://localhost/data/a?{qs}"), Err("not S3's")),
            (
                format!("https://data.s3.amazonaws.com:8443/a?{qs}"),
                Err("port 8443"),
            ),
            (
                format!("https://data.s3.amazonaws.com:443/a?{qs}"),
                ok("data", "a"),
            ),
            // Not presigned.
            (
                "https://data.s3.amazonaws.com/a".to_owned(),
                Err("not a SigV4 presigned GET"),
            ),
            (
                "https://data.s3.amazonaws.com/a?AWSAccessKeyId=AKIA&Expires=1&Signature=abc"
                    .to_owned(),
                Err("not a SigV4 presigned GET"),
            ),
            (
                format!("https://data.s3.amazonaws.com/a?{qs}&X-Amz-Signature={SIG}"),
                Err("one X-Amz-Signature"),
            ),
            (
                format!("https://data.s3.amazonaws.com/a?{}", qs.replace(SIG, "xyz")),
                Err("64 hex digits"),
            ),
            // No object.
            (
                format!("https://data.s3.amazonaws.com/?{qs}"),
                Err("the key is empty"),
            ),
            (
                format!("https://s3.amazonaws.com/data?{qs}"),
                Err("no key after the bucket"),
            ),
            (
                format!("https://s3.amazonaws.com/Data/a?{qs}"),
                Err("not a bucket name"),
            ),
            (
                format!("https://s3.amazonaws.com/da%74a/a?{qs}"),
                Err("percent-encoded"),
            ),
            (
                format!("https://data.s3.amazonaws.com/a%FF?{qs}"),
                Err("not UTF-8"),
            ),
            (
                format!("https://data.s3.amazonaws.com/a?{qs}#x"),
                Err("fragment"),
            ),
            ("not a url".to_owned(), Err("not a URL")),
        ];
        for (url, want) in cases {
            match (parse_presigned(&url, Some(&emu)), want) {
                (Ok(p), Ok(n)) => {
                    assert_eq!(p.name, n, "{url}");
                    assert_eq!(
                        p.url.as_str().split('?').next(),
                        Url::parse(&url).unwrap().as_str().split('?').next()
                    );
                }
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{url}: {e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
        // Without an emulator, loopback is just another host.
        let refused = parse_presigned(&format!("http://127.0.0.1:4566/data/a?{qs}"), None);
        assert!(matches!(refused, Err(UrlRefusal::Scheme(_))), "{refused:?}");
        let refused = parse_presigned(&format!("https://127.0.0.1:4566/data/a?{qs}"), None);
        assert!(matches!(refused, Err(UrlRefusal::NotS3(_))), "{refused:?}");
    }

    #[test]
    fn a_reference_must_name_a_listed_bucket_and_the_signed_object() {
        let listed: InputBuckets = ["data-lake"].into_iter().collect();
        let qs = q();
        let url = |host_bucket: &str, key: &str| {
            format!("https://{host_bucket}.s3.us-east-1.amazonaws.com/{key}?{qs}")
        };
        let cases = [
            (
                "s3://data-lake/in/a.csv",
                url("data-lake", "in/a.csv"),
                Ok(()),
            ),
            ("s3://data-lake/a%2Fb", url("data-lake", "a%252Fb"), Ok(())),
            ("s3://data-lake/a/b", url("data-lake", "a%2Fb"), Ok(())),
            // Not listed, even when a listed name starts with it or it starts with one.
            (
                "s3://data/in/a.csv",
                url("data", "in/a.csv"),
                Err("not listed"),
            ),
            (
                "s3://data-lake-2/x",
                url("data-lake-2", "x"),
                Err("not listed"),
            ),
            // A URL of another object than named.
            (
                "s3://data-lake/in/a.csv",
                url("data-lake", "in/b.csv"),
                Err("mismatch"),
            ),
            (
                "s3://data-lake/in/a.csv",
                url("data-lake", "in/a.csv/"),
                Err("mismatch"),
            ),
            (
                "s3://data-lake/x/../secret",
                url("data-lake", "x/../secret"),
                Err("mismatch"),
            ),
            ("s3://data-lake/a", url("other", "a"), Err("mismatch")),
            (
                "s3://data-lake/in/a.csv",
                "https://evil.com/x".into(),
                Err("url"),
            ),
        ];
        for (named, presigned, want) in cases {
            let got = check(&name(named), &presigned, &listed, None);
            let got = match got {
                Ok(_) => Ok(()),
                Err(Refusal::NotListed(_)) => Err("not listed"),
                Err(Refusal::Mismatch { .. }) => Err("mismatch"),
                Err(Refusal::Url(_)) => Err("url"),
                Err(Refusal::NoBuckets) => Err("no buckets"),
            };
            assert_eq!(got, want, "{named} via {presigned}");
        }
        let none = InputBuckets::default();
        assert_eq!(
            check(
                &name("s3://data-lake/a"),
                &url("data-lake", "a"),
                &none,
                None
            ),
            Err(Refusal::NoBuckets)
        );
    }

    #[test]
    fn answers_to_the_first_byte_tell_size_type_and_version() {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let found = |size, ct: &str, v: Option<&str>| {
            Ok::<_, String>(Found {
                size,
                content_type: ct.into(),
                version_id: v.map(str::to_owned),
            })
        };
        type Case<'a> = (u16, HeaderMap, &'a [u8], Result<Found, String>);
        let cases: Vec<Case> =
            vec![
            (
                206,
                h(&[
                    ("content-range", "bytes 0-0/1234"),
                    ("content-type", "text/csv"),
                    ("x-amz-version-id", "3sL4kqtJlcpXroDTDmJ"),
                ]),
                b"",
                found(1234, "text/csv", Some("3sL4kqtJlcpXroDTDmJ")),
            ),
            (
                206,
                h(&[("content-range", "bytes 0-0/5")]),
                b"",
                found(5, "application/octet-stream", None),
            ),
            (
                200,
                h(&[("content-length", "0"), ("content-type", "image/png")]),
                b"",
                found(0, "image/png", None),
            ),
            (
                416,
                h(&[("content-type", "application/xml")]),
                b"<Error><Code>InvalidRange</Code><ActualObjectSize>0</ActualObjectSize></Error>",
                found(0, "application/octet-stream", None),
            ),
            (
                416,
                h(&[("content-range", "bytes */0")]),
                b"",
                found(0, "application/octet-stream", None),
            ),
            (
                416,
                h(&[]),
                b"<ActualObjectSize>10</ActualObjectSize>",
                Err("HTTP 416".into()),
            ),
            (
                206,
                h(&[("content-range", "bytes 0-0/*")]),
                b"",
                Err("without a size".into()),
            ),
            (
                206,
                h(&[("content-range", "bytes 5-5/10")]),
                b"",
                Err("not of the first byte".into()),
            ),
            (200, h(&[]), b"", Err("no Content-Length".into())),
            (403, h(&[]), b"", Err("HTTP 403".into())),
            (404, h(&[]), b"", Err("HTTP 404".into())),
            (301, h(&[]), b"", Err("bucket's region".into())),
            (400, h(&[]), b"", Err("HTTP 400 (S3 found the request malformed".into())),
            (500, h(&[]), b"", Err("HTTP 500".into())),
        ];
        for (status, headers, body, want) in cases {
            match (judge(status, &headers, body), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{status}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(&w), "{status}: {e}"),
                (got, want) => panic!("{status}: got {got:?}, want {want:?}"),
            }
        }
    }
}
