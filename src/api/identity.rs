//! The caller's identity, taken only from the authorizer's part of API Gateway's request
//! context: nothing the caller sends (headers, body, query) can set it.
//!
//! With IAM (SigV4), the owner is the narrowest identity the caller cannot choose. An assumed
//! role's session name is, in general, chosen by whoever calls `AssumeRole` or
//! `AssumeRoleWithWebIdentity`, so a session is its own owner only where something other than
//! the caller sets its name: IAM Identity Center (its `AWSReservedSSO_…` roles), or a role the
//! deployment names as pinning session names in its trust policy. API Gateway does not pass
//! `sts:SourceIdentity` on to the integration, so it cannot identify an owner here.

use std::fmt;
use std::str::FromStr;

use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
    ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;

use crate::job::Owner;

/// The prefix of the roles IAM Identity Center creates for its permission sets. Their trust
/// policy admits only IAM Identity Center's SAML provider, which names each session after the
/// signed-in user.
const IDENTITY_CENTER_ROLE_PREFIX: &str = "AWSReservedSSO_";

/// Whose jobs a caller sees: what makes two IAM callers the same owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerScope {
    /// Each caller its own owner, as far as AWS vouches for who it is (the default): an IAM user;
    /// a Cognito identity-pool identity; an IAM Identity Center user
    /// (`assumed-role/AWSReservedSSO_…/alice@corp`); a session of one of `pinned`, the roles
    /// whose trust policies pin their session names.
    /// Every session of any other role is one owner, the role: whoever may assume it may name a
    /// session as they like. Federated users (`GetFederationToken`) are one owner per account.
    Session { pinned: Vec<RoleArn> },
    /// Every session of an assumed role is one owner, IAM Identity Center's and Cognito's as
    /// well: the instances of one service share their jobs. Choose it only where everyone who can
    /// assume a role may see every job of the role.
    Role,
}

impl Default for OwnerScope {
    fn default() -> Self {
        OwnerScope::Session { pinned: Vec::new() }
    }
}

impl FromStr for OwnerScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "session" => Ok(OwnerScope::default()),
            "role" => Ok(OwnerScope::Role),
            _ => Err("expected session (each caller its own owner, as far as AWS vouches for it) or role (one owner per assumed role)".into()),
        }
    }
}

/// An IAM role, as its ARN names it (`arn:aws:iam::123456789012:role/path/Name`): the account and
/// name its sessions' ARNs (`arn:aws:sts::123456789012:assumed-role/Name/session`) carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    partition: String,
    account: String,
    name: String,
}

impl RoleArn {
    fn is_role_of(&self, s: &AssumedRole<'_>) -> bool {
        self.partition == s.partition && self.account == s.account && self.name == s.role
    }
}

impl FromStr for RoleArn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a role ARN, arn:aws:iam::123456789012:role/Name, got {s}");
        let mut parts = s.trim().splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let path_and_name = resource.strip_prefix("role/").ok_or_else(bad)?;
        let name = path_and_name.rsplit('/').next().unwrap_or("");
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if partition.is_empty() || !account_ok || name.is_empty() {
            return Err(bad());
        }
        Ok(RoleArn {
            partition: partition.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RoleArn {
            partition,
            account,
            name,
        } = self;
        write!(f, "arn:{partition}:iam::{account}:role/{name}")
    }
}

/// The caller of a request, or `None` when no authorizer vouched for one.
///
/// - IAM (SigV4): see [`OwnerScope`]; a principal of a kind it does not know has no owner.
/// - JWT: the token's issuer and subject.
/// - Lambda authorizer: the `principalId` of the context it returned, which HTTP API payload 2.0
///   puts under `requestContext.authorizer.lambda`.
pub fn caller(ctx: Option<&RequestContext>, scope: &OwnerScope) -> Option<Owner> {
    let RequestContext::ApiGatewayV2(ctx) = ctx? else {
        return None;
    };
    let auth = ctx.authorizer.as_ref()?;
    if let Some(iam) = &auth.iam {
        return iam_identity(iam, scope).map(|id| Owner::new(format!("iam:{id}")));
    }
    if let Some(jwt) = &auth.jwt {
        let sub = jwt.claims.get("sub").filter(|s| !s.is_empty())?;
        let iss = jwt.claims.get("iss").map(String::as_str).unwrap_or("");
        return Some(Owner::new(format!("jwt:{iss}|{sub}")));
    }
    // `fields` is payload 2.0's `authorizer.lambda`: the context the authorizer returned.
    auth.fields
        .get("principalId")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(|p| Owner::new(format!("lambda:{p}")))
}

fn iam_identity(
    iam: &ApiGatewayRequestAuthorizerIamDescription,
    scope: &OwnerScope,
) -> Option<String> {
    let pinned = match scope {
        OwnerScope::Session { pinned } => Some(pinned),
        OwnerScope::Role => None,
    };
    if pinned.is_some() {
        // The identity pool vouches for the identity, whatever the session is named (the basic
        // flow lets the caller name it).
        let cognito = iam.cognito_identity.as_ref().and_then(|c| {
            let id = c.identity_id.as_deref().filter(|s| !s.is_empty())?;
            let pool = c.identity_pool_id.as_deref().filter(|s| !s.is_empty())?;
            Some(format!("cognito:{pool}|{id}"))
        });
        if cognito.is_some() {
            return cognito;
        }
    }
    // Only the ARN: `callerId` and `userId` of a role session carry its session name as well.
    let arn = iam.user_arn.as_deref().filter(|s| !s.is_empty())?;
    match Principal::parse(arn)? {
        Principal::User => Some(arn.to_owned()),
        Principal::FederatedUser { prefix } => Some(format!("{prefix}:federated-user")),
        Principal::AssumedRole(s) => {
            let own_session = pinned.is_some_and(|pinned| {
                s.role.starts_with(IDENTITY_CENTER_ROLE_PREFIX)
                    || pinned.iter().any(|r| r.is_role_of(&s))
            });
            Some(if own_session {
                arn.to_owned()
            } else {
                format!("{}:assumed-role/{}", s.prefix, s.role)
            })
        }
    }
}

/// The kinds of IAM principal a SigV4 caller can be, read from its ARN.
enum Principal<'a> {
    /// An IAM user (`arn:aws:iam::123456789012:user/path/alice`) or the account's root user.
    User,
    /// `arn:aws:sts::123456789012:federated-user/name`: `GetFederationToken`'s caller chose the
    /// name.
    FederatedUser {
        prefix: &'a str,
    },
    AssumedRole(AssumedRole<'a>),
}

/// `arn:aws:sts::123456789012:assumed-role/Role/session`.
struct AssumedRole<'a> {
    /// `arn:aws:sts::123456789012`.
    prefix: &'a str,
    partition: &'a str,
    account: &'a str,
    role: &'a str,
}

impl<'a> Principal<'a> {
    fn parse(arn: &'a str) -> Option<Self> {
        let (prefix, resource) = arn.rsplit_once(':')?;
        let mut parts = prefix.split(':');
        let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if partition.is_empty() || account.is_empty() {
            return None;
        }
        match service {
            "iam" if resource == "root" || resource.starts_with("user/") => Some(Principal::User),
            "sts" => {
                if let Some(name) = resource.strip_prefix("federated-user/") {
                    return (!name.is_empty()).then_some(Principal::FederatedUser { prefix });
                }
                let (role, session) = resource.strip_prefix("assumed-role/")?.split_once('/')?;
                if role.is_empty() || session.is_empty() || session.contains('/') {
                    return None;
                }
                Some(Principal::AssumedRole(AssumedRole {
                    prefix,
                    partition,
                    account,
                    role,
                }))
            }
            _ => None,
        }
    }
}

/// Who may pause and resume the pipeline (`SLUICE_OPERATORS`): IAM principals only, named apart
/// from the callers' owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// An IAM user or the account's root user, by its ARN as `aws sts get-caller-identity`
    /// shows it.
    User(String),
    /// Every session of a role: its trust policy says who may act as an operator.
    Role(RoleArn),
}

impl FromStr for Operator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(role) = s.parse::<RoleArn>() {
            return Ok(Operator::Role(role));
        }
        match Principal::parse(s) {
            Some(Principal::User) => Ok(Operator::User(s.to_owned())),
            _ => Err(format!(
                "expected IAM user or role ARNs (arn:aws:iam::123456789012:user/ops, \
                 arn:aws:iam::123456789012:role/Operators), got {s}"
            )),
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operator::User(arn) => f.write_str(arn),
            Operator::Role(role) => write!(f, "{role}"),
        }
    }
}

/// Why a request is no operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOperator {
    /// No IAM (SigV4) identity: operators are IAM principals.
    NoIamIdentity,
    /// An IAM principal not among the operators, by its ARN.
    Other(String),
}

/// The operator making a request, by its IAM ARN (what the pipeline records as `by`); or why it
/// is none. Only the authorizer's part of the request context counts, as for [`caller`].
pub fn operator(
    ctx: Option<&RequestContext>,
    operators: &[Operator],
) -> Result<String, NotOperator> {
    let Some(RequestContext::ApiGatewayV2(ctx)) = ctx else {
        return Err(NotOperator::NoIamIdentity);
    };
    let arn = ctx
        .authorizer
        .as_ref()
        .and_then(|a| a.iam.as_ref())
        .and_then(|iam| iam.user_arn.as_deref())
        .filter(|a| !a.is_empty())
        .ok_or(NotOperator::NoIamIdentity)?;
    let listed = match Principal::parse(arn) {
        Some(Principal::User) => operators
            .iter()
            .any(|o| matches!(o, Operator::User(u) if u == arn)),
        Some(Principal::AssumedRole(s)) => operators
            .iter()
            .any(|o| matches!(o, Operator::Role(r) if r.is_role_of(&s))),
        Some(Principal::FederatedUser { .. }) | None => false,
    };
    if listed {
        Ok(arn.to_owned())
    } else {
        Err(NotOperator::Other(arn.to_owned()))
    }
}

/// The request context the local stack gives every request: one fixed IAM identity, as if
/// API Gateway's IAM authorizer had vouched for it.
pub fn local_context(user_arn: &str) -> RequestContext {
    let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
    iam.user_arn = Some(user_arn.to_owned());
    let mut auth = ApiGatewayRequestAuthorizer::default();
    auth.iam = Some(iam);
    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.authorizer = Some(auth);
    ctx.stage = Some("$default".into());
    RequestContext::ApiGatewayV2(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::request::LambdaRequest;
    use lambda_http::RequestExt;
    use serde_json::{json, Value};

    /// A request as the Lambda runtime makes it from API Gateway's payload 2.0 event, with
    /// `authorizer` as `requestContext.authorizer`.
    fn request(authorizer: Value) -> lambda_http::Request {
        let event = json!({
            "version": "2.0", "routeKey": "GET /jobs/{id}", "rawPath": "/jobs/x", "rawQueryString": "",
            "headers": {"host": "api.example.com"}, "isBase64Encoded": false,
            "pathParameters": {"id": "x"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
                "domainPrefix": "api", "requestId": "r", "routeKey": "GET /jobs/{id}", "stage": "$default",
                "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": 0,
                "http": {"method": "GET", "path": "/jobs/x", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "t"},
                "authorizer": authorizer
            }
        });
        let event: LambdaRequest = serde_json::from_value(event).expect("a payload 2.0 event");
        lambda_http::Request::from(event)
    }

    /// `requestContext.authorizer` of API Gateway's IAM authorizer for a principal.
    fn iam(user_arn: &str, user_id: &str, cognito: Value) -> Value {
        json!({"iam": {
            "accessKey": "ASIAEXAMPLEACCESSKEY", "accountId": "123456789012", "callerId": user_id,
            "cognitoIdentity": cognito, "principalOrgId": "o-exampleorg",
            "userArn": user_arn, "userId": user_id
        }})
    }

    /// An assumed role's session, with the unique id API Gateway gives it (`AROA…:session`).
    fn session(role: &str, name: &str) -> Value {
        iam(
            &format!("arn:aws:sts::123456789012:assumed-role/{role}/{name}"),
            &format!("AROAEXAMPLE{}:{name}", role.len()),
            Value::Null,
        )
    }

    fn cognito(session_name: &str, identity: &str) -> Value {
        iam(
            &format!("arn:aws:sts::123456789012:assumed-role/Cognito_AppAuth_Role/{session_name}"),
            &format!("AROAEXAMPLECOGNITO:{session_name}"),
            json!({
                "amr": ["authenticated", "cognito-idp.us-east-1.amazonaws.com/us-east-1_Example",
                        "cognito-idp.us-east-1.amazonaws.com/us-east-1_Example:CognitoSignIn:0f3c9a2e"],
                "identityId": identity,
                "identityPoolId": "us-east-1:0a1b2c3d-pool"
            }),
        )
    }

    const SSO_ROLE: &str = "AWSReservedSSO_Developer_0123456789abcdef";

    fn owner_with(authorizer: Value, scope: &OwnerScope) -> Option<String> {
        let req = request(authorizer);
        caller(req.request_context_ref(), scope).map(|o| o.as_str().to_owned())
    }

    fn owner(authorizer: Value) -> Option<String> {
        owner_with(authorizer, &OwnerScope::default())
    }

    fn pinning(roles: &[&str]) -> OwnerScope {
        OwnerScope::Session {
            pinned: roles.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn only_listed_iam_principals_are_operators() {
        let operators: Vec<Operator> = [
            "arn:aws:iam::123456789012:user/ops",
            "arn:aws:iam::123456789012:role/team/Operators",
        ]
        .iter()
        .map(|o| o.parse().unwrap())
        .collect();
        let check = |authorizer: Value| {
            let req = request(authorizer);
            operator(req.request_context_ref(), &operators)
        };
        let not = |arn: &str| Err(NotOperator::Other(arn.to_owned()));
        let user = |arn: &str| iam(arn, "AIDAEXAMPLE", Value::Null);
        let cases: Vec<(&str, Value, Result<String, NotOperator>)> = vec![
            (
                "a listed user",
                user("arn:aws:iam::123456789012:user/ops"),
                Ok("arn:aws:iam::123456789012:user/ops".into()),
            ),
            (
                "any session of a listed role",
                session("Operators", "alice"),
                Ok("arn:aws:sts::123456789012:assumed-role/Operators/alice".into()),
            ),
            (
                "another user",
                user("arn:aws:iam::123456789012:user/caller"),
                not("arn:aws:iam::123456789012:user/caller"),
            ),
            (
                "the listed role in another account",
                user("arn:aws:sts::210987654321:assumed-role/Operators/alice"),
                not("arn:aws:sts::210987654321:assumed-role/Operators/alice"),
            ),
            (
                "a role named like the user",
                session("ops", "x"),
                not("arn:aws:sts::123456789012:assumed-role/ops/x"),
            ),
            (
                "a federated user",
                user("arn:aws:sts::123456789012:federated-user/ops"),
                not("arn:aws:sts::123456789012:federated-user/ops"),
            ),
            (
                "a JWT caller",
                json!({"jwt": {"claims": {"sub": "ops", "iss": "https://idp"}, "scopes": null}}),
                Err(NotOperator::NoIamIdentity),
            ),
            (
                "no authorizer",
                Value::Null,
                Err(NotOperator::NoIamIdentity),
            ),
        ];
        for (name, authorizer, want) in cases {
            assert_eq!(check(authorizer), want, "{name}");
        }
        for bad in [
            "ops",
            "arn:aws:sts::123456789012:assumed-role/Operators/alice",
            "arn:aws:iam::123456789012:group/ops",
        ] {
            let e = bad.parse::<Operator>().unwrap_err();
            assert!(
                e.starts_with("expected IAM user or role ARNs"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            operators[1].to_string(),
            "arn:aws:iam::123456789012:role/Operators"
        );
    }

    #[test]
    fn each_identity_source_has_the_owner_its_caller_cannot_choose() {
        let sso_alice =
            "iam:arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Developer_0123456789abcdef/alice@corp.example";
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            (
                "an IAM user is its ARN",
                iam(
                    "arn:aws:iam::123456789012:user/team/alice",
                    "AIDAEXAMPLEALICE",
                    Value::Null,
                ),
                Some("iam:arn:aws:iam::123456789012:user/team/alice"),
            ),
            (
                "the account's root user is its ARN",
                iam("arn:aws:iam::123456789012:root", "123456789012", Value::Null),
                Some("iam:arn:aws:iam::123456789012:root"),
            ),
            (
                "an IAM Identity Center user is its session: IAM Identity Center names it",
                session(SSO_ROLE, "alice@corp.example"),
                Some(sso_alice),
            ),
            (
                "a Cognito identity-pool caller is its identity (enhanced flow)",
                cognito("CognitoIdentityCredentials", "us-east-1:1111-alice"),
                Some("iam:cognito:us-east-1:0a1b2c3d-pool|us-east-1:1111-alice"),
            ),
            (
                "a Cognito identity-pool caller is its identity, whatever it named its session (basic flow)",
                cognito("bob", "us-east-1:1111-alice"),
                Some("iam:cognito:us-east-1:0a1b2c3d-pool|us-east-1:1111-alice"),
            ),
            (
                "a SAML session of another identity provider is its role unless the deployment pins it",
                session("OktaDevelopers", "alice@corp.example"),
                Some("iam:arn:aws:sts::123456789012:assumed-role/OktaDevelopers"),
            ),
            (
                "a web identity session is its role: AssumeRoleWithWebIdentity's caller names it",
                session("GitHubDeploy", "GitHubActions"),
                Some("iam:arn:aws:sts::123456789012:assumed-role/GitHubDeploy"),
            ),
            (
                "a plain AssumeRole session is its role: AssumeRole's caller names it",
                session("Analysts", "alice"),
                Some("iam:arn:aws:sts::123456789012:assumed-role/Analysts"),
            ),
            (
                "a session chained from IAM Identity Center into another role is that role",
                session("Deployer", "alice@corp.example"),
                Some("iam:arn:aws:sts::123456789012:assumed-role/Deployer"),
            ),
            (
                "a service's session (Lambda, ECS, EC2 name theirs) is its role",
                session("WorkerTaskRole", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
                Some("iam:arn:aws:sts::123456789012:assumed-role/WorkerTaskRole"),
            ),
            (
                "federated users are one owner per account: GetFederationToken's caller names them",
                iam(
                    "arn:aws:sts::123456789012:federated-user/alice",
                    "123456789012:alice",
                    Value::Null,
                ),
                Some("iam:arn:aws:sts::123456789012:federated-user"),
            ),
            (
                "a Cognito context without an identity falls back to the role",
                cognito("CognitoIdentityCredentials", ""),
                Some("iam:arn:aws:sts::123456789012:assumed-role/Cognito_AppAuth_Role"),
            ),
            (
                "no ARN is no owner: callerId names the session too",
                iam("", "AROAEXAMPLE8:alice", Value::Null),
                None,
            ),
            (
                "a principal of an unknown kind is no owner",
                iam(
                    "arn:aws:iam::123456789012:role/Analysts",
                    "AROAEXAMPLE8",
                    Value::Null,
                ),
                None,
            ),
            (
                "a garbled ARN is no owner",
                iam("arn:aws:sts::assumed-role/Analysts/alice", "x", Value::Null),
                None,
            ),
            (
                "jwt: issuer and subject",
                json!({"jwt": {"claims": {"sub": "u-1", "iss": "https://idp.example.com"}, "scopes": null}}),
                Some("jwt:https://idp.example.com|u-1"),
            ),
            (
                "jwt without subject",
                json!({"jwt": {"claims": {"iss": "https://idp.example.com"}, "scopes": null}}),
                None,
            ),
            (
                "lambda authorizer: its principalId",
                json!({"lambda": {"principalId": "tenant-42", "plan": "gold"}}),
                Some("lambda:tenant-42"),
            ),
            ("no authorizer", Value::Null, None),
        ];
        for (name, authorizer, want) in cases {
            assert_eq!(owner(authorizer).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn a_chosen_session_name_never_reaches_another_callers_jobs() {
        let alice = owner(session(SSO_ROLE, "alice@corp.example")).unwrap();
        // Mallory may assume other roles and name her sessions as she likes; an account of her
        // own may even have a role of the same name.
        for forged in [
            session("Analysts", "alice@corp.example"),
            session("AWSReservedSSO_Developer", "alice@corp.example"),
            iam(
                "arn:aws:sts::999999999999:assumed-role/AWSReservedSSO_Developer_0123456789abcdef/alice@corp.example",
                "AROAEXAMPLEMALLORY:alice@corp.example",
                Value::Null,
            ),
            cognito("alice@corp.example", "us-east-1:2222-mallory"),
        ] {
            assert_ne!(owner(forged.clone()), Some(alice.clone()), "{forged}");
        }
        // In a role whose session names its callers choose, no session has jobs of its own to
        // take: every session is the role.
        assert_eq!(
            owner(session("Analysts", "alice")),
            owner(session("Analysts", "mallory"))
        );
        // Nor does a Cognito identity's session name reach another identity's jobs.
        assert_ne!(
            owner(cognito(
                "CognitoIdentityCredentials",
                "us-east-1:1111-alice"
            )),
            owner(cognito(
                "CognitoIdentityCredentials",
                "us-east-1:2222-mallory"
            ))
        );
    }

    #[test]
    fn a_role_whose_trust_policy_pins_session_names_keeps_sessions_apart() {
        let scope = pinning(&[
            "arn:aws:iam::123456789012:role/teams/Analysts",
            "arn:aws:iam::123456789012:role/OktaDevelopers",
        ]);
        let own = |authorizer| owner_with(authorizer, &scope);
        assert_eq!(
            own(session("Analysts", "alice")).as_deref(),
            Some("iam:arn:aws:sts::123456789012:assumed-role/Analysts/alice")
        );
        assert_ne!(
            own(session("Analysts", "alice")),
            own(session("Analysts", "bob"))
        );
        assert_eq!(
            own(session("OktaDevelopers", "alice@corp.example")).as_deref(),
            Some("iam:arn:aws:sts::123456789012:assumed-role/OktaDevelopers/alice@corp.example")
        );
        // Other roles, and a role of the same name in another account or partition, stay one
        // owner per role.
        assert_eq!(
            own(session("GitHubDeploy", "alice")).as_deref(),
            Some("iam:arn:aws:sts::123456789012:assumed-role/GitHubDeploy")
        );
        for arn in [
            "arn:aws:sts::999999999999:assumed-role/Analysts/alice",
            "arn:aws-cn:sts::123456789012:assumed-role/Analysts/alice",
        ] {
            let got = own(iam(arn, "AROAEXAMPLE8:alice", Value::Null)).unwrap();
            assert!(!got.ends_with("/alice"), "{arn} gave {got}");
        }
        // IAM Identity Center, Cognito and IAM users are as without the list.
        for authorizer in [
            session(SSO_ROLE, "alice@corp.example"),
            cognito("CognitoIdentityCredentials", "us-east-1:1111-alice"),
            iam(
                "arn:aws:iam::123456789012:user/alice",
                "AIDAEXAMPLEALICE",
                Value::Null,
            ),
        ] {
            assert_eq!(own(authorizer.clone()), owner(authorizer));
        }
    }

    #[test]
    fn role_scope_makes_every_session_of_a_role_one_owner() {
        let own = |authorizer| owner_with(authorizer, &OwnerScope::Role).unwrap();
        assert_eq!(
            own(session(SSO_ROLE, "alice@corp.example")),
            "iam:arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Developer_0123456789abcdef"
        );
        assert_eq!(
            own(session(SSO_ROLE, "alice@corp.example")),
            own(session(SSO_ROLE, "bob@corp.example"))
        );
        assert_eq!(
            own(cognito(
                "CognitoIdentityCredentials",
                "us-east-1:1111-alice"
            )),
            "iam:arn:aws:sts::123456789012:assumed-role/Cognito_AppAuth_Role"
        );
        assert_eq!(
            own(iam(
                "arn:aws:iam::123456789012:user/alice",
                "AIDAEXAMPLEALICE",
                Value::Null
            )),
            "iam:arn:aws:iam::123456789012:user/alice"
        );
        // A plain role is the same owner under either scope, so switching keeps its jobs.
        assert_eq!(
            Some(own(session("Analysts", "alice"))),
            owner(session("Analysts", "alice"))
        );
    }

    #[test]
    fn scopes_and_role_arns_parse_or_say_what_is_expected() {
        assert_eq!("session".parse(), Ok(OwnerScope::default()));
        assert_eq!("role".parse(), Ok(OwnerScope::Role));
        assert!("user".parse::<OwnerScope>().is_err());
        for (raw, want) in [
            (
                "arn:aws:iam::123456789012:role/Analysts",
                Some("arn:aws:iam::123456789012:role/Analysts"),
            ),
            (
                " arn:aws-us-gov:iam::123456789012:role/a/b/Analysts ",
                Some("arn:aws-us-gov:iam::123456789012:role/Analysts"),
            ),
            ("Analysts", None),
            ("arn:aws:iam::123456789012:user/alice", None),
            (
                "arn:aws:sts::123456789012:assumed-role/Analysts/alice",
                None,
            ),
            ("arn:aws:iam::12345:role/Analysts", None),
            ("arn:aws:iam::123456789012:role/", None),
            ("arn:aws:iam::123456789012:role/path/", None),
        ] {
            let got = raw.parse::<RoleArn>().map(|r| r.to_string()).ok();
            assert_eq!(got.as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn the_local_context_is_an_iam_identity() {
        let ctx = local_context("arn:aws:iam::000000000000:user/local");
        assert_eq!(
            caller(Some(&ctx), &OwnerScope::default()).unwrap().as_str(),
            "iam:arn:aws:iam::000000000000:user/local"
        );
    }
}
