//! Faults injected between the real AWS SDK and the emulator, as an SDK interceptor on the
//! clients under test: a request that never reaches the service (its connection is refused), or
//! one the service applies whose answer is then replaced by a 500, as when a response is lost.
//! Both go through the SDK's own retries, as real faults do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is refused: the service never sees the request.
    Refused,
    /// The service applies the request; the caller gets a 500 instead of its answer.
    AppliedThen500,
    /// The request reaches the service this late (a stalled connection), then is applied and
    /// answered as usual.
    Delayed(std::time::Duration),
    /// The connection is accepted and never answered: the call waits until the SDK's time-outs.
    Hangs,
    /// The service gets the request at once and applies it; its answer comes this late.
    AnswerDelayed(std::time::Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    operation: String,
    /// Only requests whose body contains this.
    body_contains: Option<String>,
    fault: Fault,
    /// Attempts left to fail.
    remaining: u32,
}

/// The interceptor. Cheap to clone; every clone shares the rules and the tally.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Rule>>>,
    injected: Arc<Mutex<BTreeMap<(String, &'static str), u64>>>,
}

#[derive(Debug, Clone)]
struct Inject500;

impl Storable for Inject500 {
    type Storer = StoreReplace<Self>;
}

impl Faults {
    /// A job store on `table` whose DynamoDB requests pass through these faults.
    pub fn store(&self, aws: &aws_config::SdkConfig, table: &str) -> sluice::store::JobStore {
        let ddb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(aws)
                .interceptor(self.clone())
                .build(),
        );
        sluice::store::JobStore::new(ddb, table)
    }

    /// The queue at `url`, its SQS requests passing through these faults.
    pub fn queue(&self, aws: &aws_config::SdkConfig, url: &str) -> sluice::queue::JobQueue {
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(aws)
                .interceptor(self.clone())
                .build(),
        );
        sluice::queue::JobQueue::new(sqs, url)
    }

    /// Fails the next `times` attempts of `operation` whose body contains `body_contains`.
    pub fn fail(&self, operation: &str, body_contains: Option<&str>, fault: Fault, times: u32) {
        self.rules.lock().unwrap().push(Rule {
            operation: operation.into(),
            body_contains: body_contains.map(Into::into),
            fault,
            remaining: times,
        });
    }

    /// Faults injected so far, by operation and kind.
    pub fn injected(&self) -> BTreeMap<(String, &'static str), u64> {
        self.injected.lock().unwrap().clone()
    }

    fn take(&self, operation: &str, body: &[u8]) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|r| {
            r.remaining > 0
                && r.operation == operation
                && r.body_contains
                    .as_ref()
                    .is_none_or(|needle| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })?;
        rule.remaining -= 1;
        let kind = match rule.fault {
            Fault::Refused => "refused",
            Fault::AppliedThen500 => "applied, then 500",
            Fault::Delayed(_) => "delayed",
            Fault::Hangs => "hangs",
            Fault::AnswerDelayed(_) => "answer delayed",
        };
        *self
            .injected
            .lock()
            .unwrap()
            .entry((operation.to_owned(), kind))
            .or_default() += 1;
        Some(rule.fault)
    }
}

impl Intercept for Faults {
    fn name(&self) -> &'static str {
        "Faults"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(op) = cfg.load::<Metadata>().map(|m| m.name().to_owned()) else {
            return Ok(());
        };
        let body = context
            .request()
            .body()
            .bytes()
            .unwrap_or_default()
            .to_vec();
        match self.take(&op, &body) {
            // Port 1 on loopback: nothing listens, the connection is refused.
            Some(Fault::Refused) => context.request_mut().set_uri("http://127.0.0.1:1/")?,
            Some(Fault::AppliedThen500) => {
                cfg.interceptor_state().store_put(Inject500);
            }
            Some(Fault::Delayed(by)) => stall(context, Stall::Request(by))?,
            Some(Fault::Hangs) => stall(context, Stall::Forever)?,
            Some(Fault::AnswerDelayed(by)) => stall(context, Stall::Answer(by))?,
            None => {}
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Inject500>().is_none() {
            return Ok(());
        }
        cfg.interceptor_state().unset::<Inject500>();
        let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected fault: the answer was lost"}"#;
        let resp = context.response_mut();
        *resp.status_mut() = 500u16.try_into()?;
        resp.headers_mut()
            .insert("content-length", body.len().to_string());
        *resp.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

/// Sends the request through a [`proxy`] that stalls it as told.
fn stall(
    context: &mut BeforeTransmitInterceptorContextMut<'_>,
    how: Stall,
) -> Result<(), BoxError> {
    let (target, path) = authority_and_path(context.request().uri());
    let proxy = proxy(target, how)?;
    context
        .request_mut()
        .set_uri(format!("http://{proxy}{path}"))?;
    Ok(())
}

/// `host:port` of a request's URI, and the rest (its path and query, `/` at least), which an S3
/// request needs kept.
fn authority_and_path(uri: &str) -> (String, String) {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let (authority, path) = rest
        .find(['/', '?'])
        .map_or((rest, ""), |i| rest.split_at(i));
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    (authority.to_owned(), path)
}

/// Where a proxied connection stalls.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// The request reaches the service this late.
    Request(std::time::Duration),
    /// The answer comes back this late.
    Answer(std::time::Duration),
    /// Nothing is forwarded: the connection is held open, unanswered.
    Forever,
}

/// A one-connection loopback proxy to `target` that stalls as told. Threads of its own, so that
/// no async runtime is blocked.
fn proxy(target: String, stall: Stall) -> Result<std::net::SocketAddr, BoxError> {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let answer_after = match stall {
            Stall::Forever => {
                let (mut client, mut buf) = (client, [0u8; 4096]);
                while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
                return;
            }
            Stall::Request(by) => {
                std::thread::sleep(by);
                None
            }
            Stall::Answer(by) => Some(by),
        };
        let Ok(server) = TcpStream::connect(&target) else {
            return;
        };
        let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut c_read, &mut s_write);
            let _ = s_write.shutdown(Shutdown::Write);
        });
        let (mut s_read, mut c_write) = (server, client);
        if let Some(by) = answer_after {
            // The first byte of the answer is held back, then everything flows.
            let mut first = [0u8; 1];
            if !matches!(s_read.read(&mut first), Ok(1)) {
                return;
            }
            std::thread::sleep(by);
            let _ = c_write.write_all(&first);
        }
        let _ = std::io::copy(&mut s_read, &mut c_write);
        let _ = c_write.shutdown(Shutdown::Write);
    });
    Ok(addr)
}

/// A loopback TCP proxy to `target` (`host:port`) that a test can cut off, as a network
/// partition cuts one machine off AWS: while cut, its open connections are closed and new ones
/// are closed as soon as they are accepted. Give a process its address as its AWS endpoint.
pub struct Partition {
    pub addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    pub async fn start(target: &str) -> Partition {
        use std::sync::atomic::{AtomicBool, Ordering};
        let target = target
            .split_once("://")
            .map_or(target, |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let is_cut = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let (target, is_cut) = (target.clone(), is_cut.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let watch = async {
                        while !is_cut.load(Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = watch => {}
                    }
                });
            }
        });
        Partition { addr, cut }
    }

    /// The endpoint URL to give a process.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}
