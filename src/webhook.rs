//! Signed webhooks: on each terminal state a job with a `webhook` URL is POSTed to that URL,
//! signed per the Standard Webhooks specification (<https://www.standardwebhooks.com>).
//!
//! This module is the core the delivery path builds on:
//! - [`Secret`], [`sign`] and [`verify`]: the `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature` headers (HMAC-SHA256 through the specification's own `standardwebhooks`
//!   crate); during a rotation a message carries the old and the new secret's signatures;
//! - [`TargetPolicy`], [`check_address`] and [`validate_url`]: which URLs and addresses a webhook
//!   may reach (never loopback, link-local, private or metadata addresses when deployed);
//! - [`resolve_checked`], [`pinned_client`], [`deliver`] and [`send`]: the send-time check against
//!   DNS rebinding (every resolved address is checked, and the request connects to exactly those);
//! - [`next_attempt`] and [`jittered`]: the retry schedule, more than 24 hours long;
//! - [`WebhookEvent`] and [`message_id`]: the body, and an id stable per job and terminal state.
//!
//! All but the resolving and sending are pure functions.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::api::JobView;
use crate::job::{JobId, Status};

pub use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP};

// ---------------------------------------------------------------------------------------------
// Secrets, signing and verifying

/// What a secret looks like to its owner: `whsec_` and the key in standard base64.
const SECRET_PREFIX: &str = "whsec_";
/// The specification's bounds on a symmetric key: at least 192 bits, at most 512.
pub const SECRET_MIN_BYTES: usize = 24;
pub const SECRET_MAX_BYTES: usize = 64;
/// The size of a new secret.
const SECRET_NEW_BYTES: usize = 32;

/// An owner's signing secret. Its `Debug` never shows the key; [`Secret::expose`] gives the
/// `whsec_…` text the owner fetches. No `PartialEq`: comparing keys byte by byte would leak
/// timing; receivers compare signatures with [`verify`].
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// The text is not a webhook secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_`")]
    Prefix,
    #[error("a webhook secret is `whsec_` followed by standard base64 (with padding)")]
    Base64,
    #[error(
        "a webhook secret's key is {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes, this one is {0}"
    )]
    Length(usize),
}

/// The system's random source failed: no secret was made.
#[derive(Debug, thiserror::Error)]
#[error("the system's random source failed")]
pub struct RandomError(#[source] getrandom::Error);

impl Secret {
    /// A new random secret of 32 bytes.
    pub fn generate() -> Result<Secret, RandomError> {
        let mut key = vec![0u8; SECRET_NEW_BYTES];
        getrandom::fill(&mut key).map_err(RandomError)?;
        Ok(Secret(key))
    }

    /// Reads `whsec_<base64>`, as [`Secret::expose`] writes it.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Prefix)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| SecretError::Base64)?;
        if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(key))
    }

    /// The `whsec_…` text: for the owner, and for storage. Never log it.
    pub fn expose(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    fn signer(&self) -> standardwebhooks::Webhook {
        // `from_bytes` cannot fail: it only wraps the key.
        standardwebhooks::Webhook::from_bytes(self.0.clone()).expect("a key of any bytes is valid")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

/// The three Standard Webhooks headers of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    /// `webhook-id`: the same for every attempt of one message, so receivers can dedupe.
    pub id: String,
    /// `webhook-timestamp`: seconds since the Unix epoch, of this attempt.
    pub timestamp: i64,
    /// `webhook-signature`: `v1,<base64>`, space-separated when signed with several secrets.
    pub signature: String,
}

impl WebhookHeaders {
    /// The headers as an HTTP header map.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in [
            (HEADER_WEBHOOK_ID, self.id.clone()),
            (HEADER_WEBHOOK_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_WEBHOOK_SIGNATURE, self.signature.clone()),
        ] {
            // The id comes from `message_id` (ASCII), the rest are digits and base64.
            if let Ok(value) = HeaderValue::from_str(&value) {
                map.insert(name, value);
            }
        }
        map
    }
}

/// Signs one attempt of message `msg_id` at `timestamp` (seconds since the epoch) with the
/// owner's `current` secret and, while a rotation is under way, the `previous` one too: the
/// receiver accepts the message if any signature matches the secret it holds.
pub fn sign(
    current: &Secret,
    previous: Option<&Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &str,
) -> WebhookHeaders {
    let signature = std::iter::once(current)
        .chain(previous)
        .map(|secret| {
            secret
                .signer()
                .sign(msg_id, timestamp, body.as_bytes())
                .expect("a str is UTF-8, the only thing signing checks")
        })
        .collect::<Vec<_>>()
        .join(" ");
    WebhookHeaders {
        id: msg_id.to_owned(),
        timestamp,
        signature,
    }
}

/// A webhook did not verify: a header is missing or malformed, its timestamp is more than five
/// minutes from now, or no signature matches the secret.
#[derive(Debug, thiserror::Error)]
#[error("the webhook does not verify")]
pub struct VerifyError(#[source] standardwebhooks::WebhookError);

/// Verifies a received webhook against the receiver's secret, as the specification's reference
/// implementations do (a timestamp at most five minutes from now, any one signature matching).
pub fn verify(secret: &Secret, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    secret.signer().verify(body, headers).map_err(VerifyError)
}

// ---------------------------------------------------------------------------------------------
// Where a webhook may go

/// Which targets webhooks may reach. Deployed, only public addresses; on the local stack the
/// receiver runs on the same machine, so loopback (and plain http) are allowed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_loopback: bool,
}

impl TargetPolicy {
    pub const DEPLOYED: TargetPolicy = TargetPolicy {
        allow_loopback: false,
    };
    pub const LOCAL_STACK: TargetPolicy = TargetPolicy {
        allow_loopback: true,
    };
}

/// Why an address is refused as a webhook target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a loopback address (127.0.0.0/8, ::1)")]
    Loopback,
    #[error("the unspecified address (0.0.0.0, ::)")]
    Unspecified,
    #[error("a link-local address (169.254.0.0/16, fe80::/10)")]
    LinkLocal,
    #[error("a private address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)")]
    Private,
    #[error("a carrier-grade NAT address (100.64.0.0/10)")]
    SharedAddressSpace,
    #[error("a cloud metadata address (169.254.169.254, 169.254.170.2, fd00:ec2::254)")]
    CloudMetadata,
    #[error("a multicast address (224.0.0.0/4, ff00::/8)")]
    Multicast,
    #[error("the broadcast address (255.255.255.255)")]
    Broadcast,
    #[error("a reserved or documentation address, not routable on the internet")]
    Reserved,
}

/// The instance metadata service (EC2, and Lambda's and ECS's credentials endpoints behind it),
/// the ECS task metadata and credentials endpoint, and EKS pod identity.
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
];
/// The instance metadata service over IPv6 (Nitro instances).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Whether a webhook may connect to `ip`. IPv6 forms that carry an IPv4 address (IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are
/// judged by the address they carry.
pub fn check_address(ip: IpAddr, policy: TargetPolicy) -> Result<(), Refusal> {
    let refusal = match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    };
    match refusal {
        None => Ok(()),
        Some(Refusal::Loopback) if policy.allow_loopback => Ok(()),
        Some(r) => Err(r),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, c, _] = ip.octets();
    Some(if METADATA_V4.contains(&ip) {
        Refusal::CloudMetadata
    } else if ip.is_unspecified() {
        Refusal::Unspecified
    } else if ip.is_loopback() {
        Refusal::Loopback
    } else if ip.is_private() {
        Refusal::Private
    } else if a == 100 && (b & 0xc0) == 64 {
        Refusal::SharedAddressSpace
    } else if ip.is_link_local() {
        Refusal::LinkLocal
    } else if ip.is_broadcast() {
        Refusal::Broadcast
    } else if ip.is_multicast() {
        Refusal::Multicast
    } else if a == 0 // "this network"
        || a >= 240 // reserved for future use
        || ip.is_documentation() // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (a, b, c) == (192, 0, 0) // IETF protocol assignments
        || (a, b, c) == (192, 88, 99) // the old 6to4 relay anycast
        || (a == 198 && (b & 0xfe) == 18)
    // benchmarking, 198.18/15
    {
        Refusal::Reserved
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let s = ip.segments();
    Some(if ip == METADATA_V6 {
        Refusal::CloudMetadata
    } else if ip.is_unspecified() {
        Refusal::Unspecified
    } else if ip.is_loopback() {
        Refusal::Loopback
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Refusal::Private
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Refusal::LinkLocal
    } else if ip.is_multicast() {
        Refusal::Multicast
    } else if (s[0] & 0xe000) != 0x2000 // outside global unicast 2000::/3: site-local, discard, local NAT64, …
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments 2001::/23, Teredo among them
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation 2001:db8::/32
        || (s[0] == 0x3fff && s[1] < 0x1000)
    // documentation 3fff::/20
    {
        Refusal::Reserved
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let ipv4_compatible = s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if let Some(mapped) = ip.to_ipv4_mapped() {
        Some(mapped)
    } else if ipv4_compatible || nat64 {
        Some(v4(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(v4(s[1], s[2])) // 6to4
    } else {
        None
    }
}

/// The longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook URL a caller gave is not usable; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the webhook URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("the webhook URL is not a valid absolute URL such as https://example.com/hooks")]
    Invalid(#[source] url::ParseError),
    #[error("the webhook URL must start with https://")]
    NotHttps,
    #[error("the webhook URL must start with https:// or http://")]
    Scheme,
    #[error("the webhook URL must not carry a user name or password: webhooks are signed instead")]
    Userinfo,
    #[error("the webhook URL has no host name")]
    NoHost,
    #[error("the webhook URL's port {0} is not allowed: use 443, 80, or a port from 1024 up")]
    Port(u16),
    #[error("the webhook URL's host {host} is {reason}, which webhooks cannot reach")]
    Refused { host: String, reason: Refusal },
}

/// Checks a webhook URL when a job is submitted: https (http too on the local stack), no user
/// name or password, a host, an allowed port, at most [`MAX_URL_LEN`] characters, and a host
/// that is not a refused address (`localhost` counts as loopback). A host name's addresses are
/// checked again at each send ([`resolve_checked`]).
pub fn validate_url(text: &str, policy: TargetPolicy) -> Result<Url, UrlError> {
    if text.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(text).map_err(UrlError::Invalid)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_loopback => {}
        "http" => return Err(UrlError::NotHttps),
        _ if policy.allow_loopback => return Err(UrlError::Scheme),
        _ => return Err(UrlError::NotHttps),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Userinfo);
    }
    let refused = |reason| UrlError::Refused {
        host: url.host_str().unwrap_or_default().to_owned(),
        reason,
    };
    match url.host() {
        None => return Err(UrlError::NoHost),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            if (name == "localhost" || name.ends_with(".localhost")) && !policy.allow_loopback {
                return Err(refused(Refusal::Loopback));
            }
        }
        Some(Host::Ipv4(ip)) => check_address(ip.into(), policy).map_err(refused)?,
        Some(Host::Ipv6(ip)) => check_address(ip.into(), policy).map_err(refused)?,
    }
    match url.port() {
        Some(p) if p != 80 && p != 443 && p < 1024 => Err(UrlError::Port(p)),
        _ => Ok(url),
    }
}

// ---------------------------------------------------------------------------------------------
// Sending

/// A webhook target checked at send time: its URL, its host, and the addresses its host
/// resolved to, every one of them allowed. [`pinned_client`] connects only to these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTarget {
    pub url: Url,
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// A webhook cannot be sent to its target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("the webhook host {host} could not be resolved")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook host {host} has no address")]
    NoAddress { host: String },
    #[error("the webhook host {host} resolves to {addr}, {reason}, which webhooks cannot reach")]
    Refused {
        host: String,
        addr: IpAddr,
        reason: Refusal,
    },
    #[error("could not build the HTTP client for the webhook")]
    Client(#[source] reqwest::Error),
}

/// Checks every address `host` resolved to: one refused address refuses the target, so a name
/// that answers with a public and a private address (DNS rebinding) is never reached. Pure.
pub fn check_resolved(
    host: &str,
    addrs: &[SocketAddr],
    policy: TargetPolicy,
) -> Result<(), TargetError> {
    if addrs.is_empty() {
        return Err(TargetError::NoAddress { host: host.into() });
    }
    for addr in addrs {
        check_address(addr.ip(), policy).map_err(|reason| TargetError::Refused {
            host: host.into(),
            addr: addr.ip(),
            reason,
        })?;
    }
    Ok(())
}

/// Validates `url`, resolves its host now and checks every address (see [`check_resolved`]).
/// Call it before each attempt: a name checked at submit may point elsewhere since.
pub async fn resolve_checked(
    url: &str,
    policy: TargetPolicy,
) -> Result<CheckedTarget, TargetError> {
    let url = validate_url(url, policy)?;
    let host = url.host_str().ok_or(UrlError::NoHost)?.to_owned();
    let port = url.port_or_known_default().ok_or(UrlError::NoHost)?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        _ => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| TargetError::Resolve {
                host: host.clone(),
                source,
            })?
            .collect(),
    };
    check_resolved(&host, &addrs, policy)?;
    Ok(CheckedTarget { url, host, addrs })
}

/// How long a delivery may take in all (the specification suggests 15 to 30 s), and how long
/// its connection may take to open.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for one checked target: its host resolves to the checked addresses only (no
/// second lookup that could answer differently), redirects are not followed (a redirect could
/// lead anywhere), no proxy from the environment is used (a proxy would resolve the name
/// itself), and a request takes at most `timeout`.
pub fn pinned_client(
    target: &CheckedTarget,
    timeout: Duration,
) -> Result<reqwest::Client, TargetError> {
    reqwest::Client::builder()
        .resolve_to_addrs(&target.host, &target.addrs)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()
        .map_err(TargetError::Client)
}

/// How much of a failed answer's body is kept, for the owner to see why.
pub const EXCERPT_BYTES: usize = 4096;

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum DeliveryOutcome {
    /// A 2xx: done.
    Delivered(StatusCode),
    /// A 410: the receiver wants no more webhooks. The specification says to disable the
    /// endpoint and stop sending; no retry.
    Gone,
    /// Anything else: a 3xx (redirects are not followed), any other 4xx or 5xx, a timeout, a
    /// connection that failed. Try again on the schedule ([`next_attempt`]), not before
    /// `retry_after` when the receiver asked for a pause.
    Retry {
        reason: RetryReason,
        retry_after: Option<Duration>,
    },
}

/// Why an attempt is to be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryReason {
    #[error("the receiver answered HTTP {status}")]
    Status {
        status: StatusCode,
        /// The start of the answer's body, lossily decoded, at most [`EXCERPT_BYTES`].
        excerpt: String,
    },
    #[error("the receiver did not answer in time")]
    Timeout(#[source] reqwest::Error),
    #[error("could not connect to the receiver")]
    Connect(#[source] reqwest::Error),
    #[error("the request to the receiver failed")]
    Request(#[source] reqwest::Error),
    /// A pipeline job's outcome could not be written to its sink (the webhook, if any, waits).
    #[error("the outcome could not be written to its bucket: {0}")]
    Sink(String),
    /// The job's end could not be published to the deployment's topic or bus.
    #[error("the job's end could not be published: {0}")]
    Publish(String),
}

/// POSTs one signed attempt with `client` (from [`pinned_client`]) and classifies the answer.
pub async fn deliver(
    client: &reqwest::Client,
    url: &Url,
    headers: &WebhookHeaders,
    body: String,
) -> DeliveryOutcome {
    let sent = client
        .post(url.clone())
        .headers(headers.to_header_map())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("sluice-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            let reason = if e.is_timeout() {
                RetryReason::Timeout(e)
            } else if e.is_connect() {
                RetryReason::Connect(e)
            } else {
                RetryReason::Request(e)
            };
            return DeliveryOutcome::Retry {
                reason,
                retry_after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return DeliveryOutcome::Delivered(status);
    }
    if status == StatusCode::GONE {
        return DeliveryOutcome::Gone;
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut excerpt = Vec::new();
    // A body cut short (timeout, reset) still leaves what was read.
    while excerpt.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = EXCERPT_BYTES - excerpt.len();
                excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    DeliveryOutcome::Retry {
        reason: RetryReason::Status {
            status,
            excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
        },
        retry_after,
    }
}

/// `Retry-After` in delay-seconds (its date form is not honoured; the schedule applies).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// One attempt, start to end: checks the target now ([`resolve_checked`]), then delivers to
/// the checked addresses only. A refused target is never connected to.
pub async fn send(
    url: &str,
    policy: TargetPolicy,
    headers: &WebhookHeaders,
    body: String,
    timeout: Duration,
) -> Result<DeliveryOutcome, TargetError> {
    let target = resolve_checked(url, policy).await?;
    let client = pinned_client(&target, timeout)?;
    Ok(deliver(&client, &target.url, headers, body).await)
}

// ---------------------------------------------------------------------------------------------
// Retrying

/// The wait before each attempt, the first immediate: the specification's example schedule up
/// to 10 hours, then 10 hours once more, 27 h 35 min 5 s from the first attempt to the last.
const SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The wait before the next attempt, once `attempts_made` attempts have failed (none before
/// the first); `None` when the schedule is spent and the message is given up.
pub fn next_attempt(attempts_made: u32) -> Option<Duration> {
    SCHEDULE.get(usize::try_from(attempts_made).ok()?).copied()
}

/// `delay` lengthened by up to a fifth: `unit` in `[0, 1)` (e.g. a hash of the message id and
/// the attempt) spreads the retries of messages that failed together. Only ever longer, so the
/// schedule still spans at least as long.
pub fn jittered(delay: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    delay + delay.mul_f64(0.2 * unit)
}

// ---------------------------------------------------------------------------------------------
// The payload

/// What happened to the job: one event type per terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    #[serde(rename = "job.expired")]
    JobExpired,
}

impl EventType {
    /// The event a job's terminal status announces; `None` for a status that is not terminal.
    pub fn of(status: Status) -> Option<EventType> {
        match status {
            Status::Succeeded => Some(EventType::JobSucceeded),
            Status::Failed => Some(EventType::JobFailed),
            Status::Cancelled => Some(EventType::JobCancelled),
            Status::Expired => Some(EventType::JobExpired),
            Status::Queued | Status::Running => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobSucceeded => "job.succeeded",
            EventType::JobFailed => "job.failed",
            EventType::JobCancelled => "job.cancelled",
            EventType::JobExpired => "job.expired",
        }
    }
}

/// A webhook's body, in the shape the specification recommends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the job reached its terminal state (RFC 3339), the same on every attempt.
    pub timestamp: String,
    /// The job as `GET /jobs/{id}` shows it.
    pub data: JobView,
}

/// The job is not in a terminal state: there is nothing to announce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {id} is {status}, not in a terminal state: no webhook announces it")]
pub struct NotTerminal {
    pub id: String,
    pub status: Status,
}

impl WebhookEvent {
    /// The event announcing a finished job; its timestamp is the job's `finished_at`.
    pub fn of(view: JobView) -> Result<WebhookEvent, NotTerminal> {
        let not_terminal = |view: &JobView| NotTerminal {
            id: view.id.clone(),
            status: view.status,
        };
        let kind = EventType::of(view.status).ok_or_else(|| not_terminal(&view))?;
        let timestamp = view
            .finished_at
            .clone()
            .ok_or_else(|| not_terminal(&view))?;
        Ok(WebhookEvent {
            kind,
            timestamp,
            data: view,
        })
    }

    /// The body as sent and signed: compact JSON.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a job view serializes")
    }
}

/// The `webhook-id` of the message announcing `event` for job `id` after `redrives` redrives:
/// the same for every attempt and every duplicate send, so receivers can dedupe on it. A job
/// ends once, unless an operator redrives it out of `FAILED`: its next end is a new message,
/// with an id of its own (the redrive count is part of it). No `.` (the specification forbids
/// it in ids).
pub fn message_id(id: &JobId, event: EventType, redrives: u32) -> String {
    let state = event.as_str().trim_start_matches("job.");
    match redrives {
        0 => format!("msg_{id}_{state}"),
        n => format!("msg_{id}_{state}_{n}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::time::Millis;

    /// The test vector of the specification's own libraries.
    const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VECTOR_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;

    fn now() -> i64 {
        Millis::now().as_epoch_seconds()
    }

    #[test]
    fn signs_the_specification_test_vector() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let headers = sign(&secret, None, VECTOR_ID, 1_649_367_553, VECTOR_BODY);
        assert_eq!(
            headers.signature,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        assert_eq!(headers.id, VECTOR_ID);
        assert_eq!(headers.timestamp, 1_649_367_553);
        let map = headers.to_header_map();
        assert_eq!(map["webhook-id"], VECTOR_ID);
        assert_eq!(map["webhook-timestamp"], "1649367553");
        assert_eq!(map["webhook-signature"], headers.signature.as_str());
    }

    #[test]
    fn a_new_secret_round_trips_and_differs_from_the_last() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        let text = a.expose();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).unwrap().expose(), text);
        assert_eq!(a.0.len(), 32);
    }

    #[test]
    fn a_secret_is_read_only_in_its_whsec_form_and_size() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        let cases = [
            (format!("whsec_{}", b64(24)), Ok(())),
            (format!("whsec_{}", b64(64)), Ok(())),
            (b64(32), Err(SecretError::Prefix)),
            ("whsk_abcd".to_owned(), Err(SecretError::Prefix)),
            ("whsec_not base64!".to_owned(), Err(SecretError::Base64)),
            ("whsec_".to_owned(), Err(SecretError::Length(0))),
            (format!("whsec_{}", b64(23)), Err(SecretError::Length(23))),
            (format!("whsec_{}", b64(65)), Err(SecretError::Length(65))),
        ];
        for (text, want) in cases {
            assert_eq!(Secret::parse(&text).map(|_| ()), want, "{text}");
        }
        assert!(SecretError::Length(3)
            .to_string()
            .contains("24 to 64 bytes"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains("C2FVsBQ"), "{shown}");
        assert_eq!(format!("{secret:?}"), "Secret(whsec_…)");
    }

    #[test]
    fn a_rotation_signs_with_both_secrets_and_either_verifies() {
        let old = Secret::generate().unwrap();
        let new = Secret::generate().unwrap();
        let other = Secret::generate().unwrap();
        let headers = sign(&new, Some(&old), "msg_x", now(), VECTOR_BODY);
        let sigs: Vec<&str> = headers.signature.split(' ').collect();
        assert_eq!(sigs.len(), 2);
        assert!(sigs.iter().all(|s| s.starts_with("v1,")));
        let map = headers.to_header_map();
        verify(&new, &map, VECTOR_BODY.as_bytes()).unwrap();
        verify(&old, &map, VECTOR_BODY.as_bytes()).unwrap();
        assert!(verify(&other, &map, VECTOR_BODY.as_bytes()).is_err());
    }

    #[test]
    fn verify_refuses_a_tampered_body_a_wrong_secret_and_a_stale_or_future_timestamp() {
        let secret = Secret::generate().unwrap();
        let good = sign(&secret, None, "msg_x", now(), VECTOR_BODY).to_header_map();
        verify(&secret, &good, VECTOR_BODY.as_bytes()).unwrap();
        assert!(verify(&secret, &good, b"{\"email\":\"x\"}").is_err());
        assert!(verify(&Secret::generate().unwrap(), &good, VECTOR_BODY.as_bytes()).is_err());
        for ts in [now() - 301, now() + 301] {
            let map = sign(&secret, None, "msg_x", ts, VECTOR_BODY).to_header_map();
            assert!(
                verify(&secret, &map, VECTOR_BODY.as_bytes()).is_err(),
                "{ts}"
            );
        }
        let mut no_id = good.clone();
        no_id.remove("webhook-id");
        assert!(verify(&secret, &no_id, VECTOR_BODY.as_bytes()).is_err());
    }

    #[test]
    fn addresses_are_refused_by_class() {
        use Refusal::*;
        let cases: &[(&str, Option<Refusal>)] = &[
            // allowed: public unicast
            ("93.184.215.14", None),
            ("8.8.8.8", None),
            ("2606:4700::1111", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
            ("100.128.0.1", None),
            ("172.32.0.1", None),
            ("11.0.0.1", None),
            // loopback
            ("127.0.0.1", Some(Loopback)),
            ("127.255.1.2", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("2002:7f00:1::", Some(Loopback)),
            // unspecified
            ("0.0.0.0", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            // link-local
            ("169.254.1.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            // private
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.254", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:192.168.0.1", Some(Private)),
            ("64:ff9b::a00:1", Some(Private)),
            // carrier-grade NAT
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("::ffff:100.64.0.1", Some(SharedAddressSpace)),
            // metadata
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.170.2", Some(CloudMetadata)),
            ("169.254.170.23", Some(CloudMetadata)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:a9fe:a9fe", Some(CloudMetadata)),
            ("64:ff9b::a9fe:a9fe", Some(CloudMetadata)),
            ("2002:a9fe:a9fe::", Some(CloudMetadata)),
            // multicast and broadcast
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            // reserved and documentation
            ("0.1.2.3", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Reserved)),
            ("198.51.100.1", Some(Reserved)),
            ("203.0.113.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.19.255.255", Some(Reserved)),
            ("192.88.99.1", Some(Reserved)),
            ("2001:db8::1", Some(Reserved)),
            ("3fff::1", Some(Reserved)),
            ("2001::1", Some(Reserved)), // Teredo
            ("100::1", Some(Reserved)),  // discard
            ("64:ff9b:1::1", Some(Reserved)),
            ("fec0::1", Some(Reserved)), // site-local
            ("::ffff:0:a00:1", Some(Reserved)),
        ];
        for &(text, want) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(
                check_address(ip, TargetPolicy::DEPLOYED).err(),
                want,
                "{text} deployed"
            );
            let local = if want == Some(Loopback) { None } else { want };
            assert_eq!(
                check_address(ip, TargetPolicy::LOCAL_STACK).err(),
                local,
                "{text} on the local stack"
            );
        }
    }

    #[test]
    fn urls_are_checked_at_submit_with_messages_a_caller_can_act_on() {
        use UrlError as E;
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let refused = |host: &str, reason| {
            Err(E::Refused {
                host: host.into(),
                reason,
            })
        };
        let ok = Ok(());
        // (url, deployed, local stack)
        type Case<'a> = (&'a str, Result<(), E>, Result<(), E>);
        let cases: Vec<Case> = vec![
            ("https://example.com/hooks", ok.clone(), ok.clone()),
            ("https://example.com:8443/hooks?x=1", ok.clone(), ok.clone()),
            ("https://example.com:443/", ok.clone(), ok.clone()),
            ("https://93.184.215.14/hook", ok.clone(), ok.clone()),
            ("http://example.com/hooks", Err(E::NotHttps), ok.clone()),
            ("ftp://example.com/", Err(E::NotHttps), Err(E::Scheme)),
            (
                "example.com/hooks",
                Err(E::Invalid(url::ParseError::RelativeUrlWithoutBase)),
                Err(E::Invalid(url::ParseError::RelativeUrlWithoutBase)),
            ),
            (
                "https://user:pw@example.com/",
                Err(E::Userinfo),
                Err(E::Userinfo),
            ),
            (
                "https://user@example.com/",
                Err(E::Userinfo),
                Err(E::Userinfo),
            ),
            (
                "https://example.com:22/",
                Err(E::Port(22)),
                Err(E::Port(22)),
            ),
            ("https://example.com:80/", ok.clone(), ok.clone()),
            (
                "https://localhost/hook",
                refused("localhost", Refusal::Loopback),
                ok.clone(),
            ),
            (
                "https://LOCALHOST./hook",
                refused("localhost.", Refusal::Loopback),
                ok.clone(),
            ),
            (
                "https://api.localhost/hook",
                refused("api.localhost", Refusal::Loopback),
                ok.clone(),
            ),
            ("http://127.0.0.1:8080/hook", Err(E::NotHttps), ok.clone()),
            (
                "https://127.0.0.1:8080/hook",
                refused("127.0.0.1", Refusal::Loopback),
                ok.clone(),
            ),
            (
                "https://2130706433/",
                refused("127.0.0.1", Refusal::Loopback),
                ok.clone(),
            ),
            (
                "https://0x7f.1/",
                refused("127.0.0.1", Refusal::Loopback),
                ok.clone(),
            ),
            (
                "https://[::ffff:127.0.0.1]/",
                refused("[::ffff:7f00:1]", Refusal::Loopback),
                ok.clone(),
            ),
            (
                "https://169.254.169.254/latest/meta-data/",
                refused("169.254.169.254", Refusal::CloudMetadata),
                refused("169.254.169.254", Refusal::CloudMetadata),
            ),
            (
                "https://[fd00:ec2::254]/",
                refused("[fd00:ec2::254]", Refusal::CloudMetadata),
                refused("[fd00:ec2::254]", Refusal::CloudMetadata),
            ),
            (
                "https://10.1.2.3/",
                refused("10.1.2.3", Refusal::Private),
                refused("10.1.2.3", Refusal::Private),
            ),
            (long.as_str(), Err(E::TooLong), Err(E::TooLong)),
        ];
        for (url, deployed, local) in cases {
            assert_eq!(
                validate_url(url, TargetPolicy::DEPLOYED).map(|_| ()),
                deployed,
                "{url} deployed"
            );
            assert_eq!(
                validate_url(url, TargetPolicy::LOCAL_STACK).map(|_| ()),
                local,
                "{url} local"
            );
        }
        let message = validate_url("https://10.1.2.3/", TargetPolicy::DEPLOYED)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "the webhook URL's host 10.1.2.3 is a private address (10.0.0.0/8, 172.16.0.0/12, \
             192.168.0.0/16, fc00::/7), which webhooks cannot reach"
        );
    }

    #[test]
    fn one_refused_address_among_those_resolved_refuses_the_target() {
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 443);
        let public = [addr("93.184.215.14"), addr("2606:4700::1111")];
        check_resolved("example.com", &public, TargetPolicy::DEPLOYED).unwrap();
        let rebound = [addr("93.184.215.14"), addr("169.254.169.254")];
        match check_resolved("example.com", &rebound, TargetPolicy::DEPLOYED) {
            Err(TargetError::Refused { host, addr, reason }) => {
                assert_eq!(host, "example.com");
                assert_eq!(addr.to_string(), "169.254.169.254");
                assert_eq!(reason, Refusal::CloudMetadata);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_resolved("example.com", &[], TargetPolicy::DEPLOYED),
            Err(TargetError::NoAddress { .. })
        ));
    }

    #[tokio::test]
    async fn a_name_is_judged_by_the_addresses_it_resolves_to_at_send_time() {
        let target = resolve_checked("http://localhost:8080/", TargetPolicy::LOCAL_STACK)
            .await
            .unwrap();
        assert_eq!(target.host, "localhost");
        assert!(!target.addrs.is_empty());
        assert!(
            target
                .addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{target:?}"
        );
        // The same answer for a name that passed the submit check is refused when deployed.
        let refused = check_resolved("hooks.example.com", &target.addrs, TargetPolicy::DEPLOYED);
        assert!(
            matches!(
                refused,
                Err(TargetError::Refused {
                    reason: Refusal::Loopback,
                    ..
                })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn the_schedule_spans_more_than_a_day_then_ends() {
        let delays: Vec<Duration> = (0..).map_while(next_attempt).collect();
        assert_eq!(delays.len(), 8);
        assert_eq!(delays[0], Duration::ZERO, "the first attempt is immediate");
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        let total: Duration = delays.iter().sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
        assert_eq!(total, Duration::from_secs(27 * 3600 + 35 * 60 + 5));
        assert_eq!(next_attempt(8), None);
        assert_eq!(next_attempt(u32::MAX), None);
    }

    #[test]
    fn jitter_only_lengthens_by_at_most_a_fifth() {
        let d = Duration::from_secs(100);
        let cases = [
            (0.0, 100.0),
            (0.5, 110.0),
            (0.999, 119.98),
            (1.0, 120.0),
            (-3.0, 100.0),
            (7.0, 120.0),
            (f64::NAN, 100.0),
        ];
        for (unit, want) in cases {
            let got = jittered(d, unit).as_secs_f64();
            assert!((got - want).abs() < 1e-6, "{unit}: {got} != {want}");
        }
        assert_eq!(jittered(Duration::ZERO, 0.7), Duration::ZERO);
    }

    fn view(status: Status) -> JobView {
        JobView {
            id: "01JDQ3ZV1T8Y3G7Q0M9K2D4XWE".into(),
            status,
            attempt: 1,
            max_attempts: 3,
            submitted_at: "2026-12-05T10:00:00.000Z".into(),
            started_at: Some("2026-12-05T10:00:01.000Z".into()),
            finished_at: status
                .is_terminal()
                .then(|| "2026-12-05T10:00:02.500Z".into()),
            deadline: None,
            cancel_requested: false,
            timeout_seconds: None,
            on_timeout: None,
            progress: None,
            input_file: None,
            result: (status == Status::Succeeded).then(|| serde_json::json!({"label": "cat"})),
            result_file: None,
            outputs: Vec::new(),
            error: None,
            url: None,
            redrives: 0,
            webhook: None,
            delivery: None,
        }
    }

    #[test]
    fn each_terminal_status_has_its_event_and_the_body_has_the_recommended_shape() {
        let cases = [
            (Status::Succeeded, Some("job.succeeded")),
            (Status::Failed, Some("job.failed")),
            (Status::Cancelled, Some("job.cancelled")),
            (Status::Expired, Some("job.expired")),
            (Status::Queued, None),
            (Status::Running, None),
        ];
        for (status, want) in cases {
            let event = WebhookEvent::of(view(status));
            assert_eq!(
                event.as_ref().ok().map(|e| e.kind.as_str()),
                want,
                "{status}"
            );
            if let Ok(event) = event {
                let body: serde_json::Value = serde_json::from_str(&event.to_body()).unwrap();
                assert_eq!(body["type"], want.unwrap());
                assert_eq!(body["timestamp"], "2026-12-05T10:00:02.500Z");
                assert_eq!(body["data"]["id"], "01JDQ3ZV1T8Y3G7Q0M9K2D4XWE");
                assert_eq!(body["data"]["status"], status.as_str());
                let back: WebhookEvent = serde_json::from_value(body).unwrap();
                assert_eq!(back, event);
            }
        }
        let err = WebhookEvent::of(view(Status::Running)).unwrap_err();
        assert_eq!(err.status, Status::Running);
    }

    #[test]
    fn the_message_id_is_stable_per_job_and_terminal_state() {
        let id: JobId = "01JDQ3ZV1T8Y3G7Q0M9K2D4XWE".parse().unwrap();
        let other: JobId = "01JDQ3ZV1T8Y3G7Q0M9K2D4XWF".parse().unwrap();
        let a = message_id(&id, EventType::JobSucceeded, 0);
        assert_eq!(a, "msg_01JDQ3ZV1T8Y3G7Q0M9K2D4XWE_succeeded");
        assert_eq!(a, message_id(&id, EventType::JobSucceeded, 0));
        assert_ne!(a, message_id(&id, EventType::JobFailed, 0));
        assert_ne!(a, message_id(&other, EventType::JobSucceeded, 0));
        assert_eq!(
            message_id(&id, EventType::JobFailed, 1),
            "msg_01JDQ3ZV1T8Y3G7Q0M9K2D4XWE_failed_1",
            "a redriven job's next end is a new message"
        );
        for e in [
            EventType::JobSucceeded,
            EventType::JobFailed,
            EventType::JobCancelled,
            EventType::JobExpired,
        ] {
            assert!(!message_id(&id, e, 0).contains('.'), "{e:?}");
            assert!(!message_id(&id, e, 2).contains('.'), "{e:?}");
        }
    }

    /// A receiver on loopback that answers every request with `answer` (a raw HTTP response),
    /// counting connections and keeping the last request.
    struct Receiver {
        port: u16,
        connections: Arc<AtomicUsize>,
        last: Arc<tokio::sync::Mutex<String>>,
    }

    async fn receiver(answer: &'static str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(tokio::sync::Mutex::new(String::new()));
        let (count, keep) = (connections.clone(), last.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let keep = keep.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read the head, then as much body as Content-Length says.
                    loop {
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    *keep.lock().await = String::from_utf8_lossy(&request).into_owned();
                    if answer.is_empty() {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Receiver {
            port,
            connections,
            last,
        }
    }

    fn signed_event() -> (Secret, WebhookHeaders, String) {
        let secret = Secret::generate().unwrap();
        let event = WebhookEvent::of(view(Status::Succeeded)).unwrap();
        let body = event.to_body();
        let id: JobId = event.data.id.parse().unwrap();
        let headers = sign(&secret, None, &message_id(&id, event.kind, 0), now(), &body);
        (secret, headers, body)
    }

    #[tokio::test]
    async fn a_loopback_receiver_gets_the_signed_event_on_the_local_stack() {
        let rx = receiver("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
        let (secret, headers, body) = signed_event();
        let url = format!("http://127.0.0.1:{}/hooks", rx.port);
        let outcome = send(
            &url,
            TargetPolicy::LOCAL_STACK,
            &headers,
            body.clone(),
            DELIVERY_TIMEOUT,
        )
        .await
        .unwrap();
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered(StatusCode::NO_CONTENT)),
            "{outcome:?}"
        );

        let request = rx.last.lock().await.clone();
        let (head, received) = request.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /hooks HTTP/1.1"), "{head}");
        assert_eq!(received, body);
        let mut map = HeaderMap::new();
        for line in head.lines().skip(1) {
            let (name, value) = line.split_once(": ").unwrap();
            map.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        assert_eq!(map["content-type"], "application/json");
        assert_eq!(
            map["webhook-id"],
            "msg_01JDQ3ZV1T8Y3G7Q0M9K2D4XWE_succeeded"
        );
        verify(&secret, &map, received.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn a_refused_target_is_never_connected_to() {
        let rx = receiver("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let (_, headers, body) = signed_event();
        for url in [
            format!("https://127.0.0.1:{}/hooks", rx.port),
            format!("https://localhost:{}/hooks", rx.port),
            format!("https://[::ffff:127.0.0.1]:{}/hooks", rx.port),
        ] {
            let refused = send(
                &url,
                TargetPolicy::DEPLOYED,
                &headers,
                body.clone(),
                DELIVERY_TIMEOUT,
            )
            .await;
            assert!(
                matches!(
                    &refused,
                    Err(TargetError::Url(UrlError::Refused {
                        reason: Refusal::Loopback,
                        ..
                    }))
                ),
                "{url}: {refused:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(rx.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_pinned_client_connects_to_the_checked_address_not_a_new_lookup() {
        let rx = receiver("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let (_, headers, body) = signed_event();
        // `.invalid` never resolves (RFC 6761): only the pinned address can be reached.
        let target = CheckedTarget {
            url: Url::parse(&format!("http://hooks.example.invalid:{}/in", rx.port)).unwrap(),
            host: "hooks.example.invalid".into(),
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], rx.port))],
        };
        let client = pinned_client(&target, DELIVERY_TIMEOUT).unwrap();
        let outcome = deliver(&client, &target.url, &headers, body).await;
        assert!(
            matches!(outcome, DeliveryOutcome::Delivered(StatusCode::OK)),
            "{outcome:?}"
        );
        assert!(rx.last.lock().await.contains("host: hooks.example.invalid"));
    }

    #[tokio::test]
    async fn answers_are_classified_delivered_gone_or_retry() {
        let cases: [(&str, &str); 7] = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "delivered 200"),
            ("HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n", "gone"),
            ("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops", "retry 500 oops -"),
            ("HTTP/1.1 503 Service Unavailable\r\nretry-after: 120\r\ncontent-length: 0\r\n\r\n", "retry 503  120"),
            ("HTTP/1.1 429 Too Many Requests\r\nretry-after: 30\r\ncontent-length: 0\r\n\r\n", "retry 429  30"),
            ("HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found", "retry 404 not found -"),
            ("HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n", "retry 302  -"),
        ];
        let (_, headers, body) = signed_event();
        for (answer, want) in cases {
            let rx = receiver(answer).await;
            let url = format!("http://127.0.0.1:{}/", rx.port);
            let outcome = send(
                &url,
                TargetPolicy::LOCAL_STACK,
                &headers,
                body.clone(),
                DELIVERY_TIMEOUT,
            )
            .await
            .unwrap();
            let got = match &outcome {
                DeliveryOutcome::Delivered(s) => format!("delivered {}", s.as_u16()),
                DeliveryOutcome::Gone => "gone".into(),
                DeliveryOutcome::Retry {
                    reason: RetryReason::Status { status, excerpt },
                    retry_after,
                } => format!(
                    "retry {} {excerpt} {}",
                    status.as_u16(),
                    retry_after.map_or("-".into(), |d| d.as_secs().to_string())
                ),
                other => format!("{other:?}"),
            };
            assert_eq!(got, want, "{answer}");
            assert_eq!(
                rx.connections.load(Ordering::SeqCst),
                1,
                "{answer}: one request, no redirect followed"
            );
        }
    }

    #[tokio::test]
    async fn a_long_answer_is_kept_only_to_its_first_kilobytes() {
        let rx = receiver(Box::leak(
            format!(
                "HTTP/1.1 500 Oops\r\ncontent-length: 100000\r\n\r\n{}",
                "x".repeat(100_000)
            )
            .into_boxed_str(),
        ))
        .await;
        let (_, headers, body) = signed_event();
        let url = format!("http://127.0.0.1:{}/", rx.port);
        match send(
            &url,
            TargetPolicy::LOCAL_STACK,
            &headers,
            body,
            DELIVERY_TIMEOUT,
        )
        .await
        .unwrap()
        {
            DeliveryOutcome::Retry {
                reason: RetryReason::Status { excerpt, .. },
                ..
            } => {
                assert_eq!(excerpt.len(), EXCERPT_BYTES)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_receiver_that_does_not_answer_or_is_not_there_is_retried() {
        let (_, headers, body) = signed_event();
        let silent = receiver("").await;
        let url = format!("http://127.0.0.1:{}/", silent.port);
        let outcome = send(
            &url,
            TargetPolicy::LOCAL_STACK,
            &headers,
            body.clone(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert!(
            matches!(
                outcome,
                DeliveryOutcome::Retry {
                    reason: RetryReason::Timeout(_),
                    ..
                }
            ),
            "{outcome:?}"
        );

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/");
        let outcome = send(
            &url,
            TargetPolicy::LOCAL_STACK,
            &headers,
            body,
            DELIVERY_TIMEOUT,
        )
        .await
        .unwrap();
        assert!(
            matches!(
                outcome,
                DeliveryOutcome::Retry {
                    reason: RetryReason::Connect(_),
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
}
