//! The caller's identity, taken only from the authorizer's part of API Gateway's request
//! context: nothing the caller sends (headers, body, query) can set it.

use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
    ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;

use crate::job::Owner;

/// Whose jobs a caller sees: what makes two IAM callers the same owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OwnerScope {
    /// Each session is its own owner (the default): every IAM Identity Center user
    /// (`assumed-role/AWSReservedSSO_…/alice@corp`), every Cognito identity-pool user and every
    /// session of a role sees only its own jobs.
    #[default]
    Session,
    /// Every session of an assumed role is one owner: the instances of one service share their
    /// jobs. Choose it only where everyone who can assume the role may see every job.
    Role,
}

impl std::str::FromStr for OwnerScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "session" => Ok(OwnerScope::Session),
            "role" => Ok(OwnerScope::Role),
            _ => Err("expected session (each session its own owner) or role (one owner per assumed role)".into()),
        }
    }
}

/// The caller of a request, or `None` when no authorizer vouched for one.
///
/// - IAM (SigV4): the principal's ARN, an assumed role's with its session name unless `scope`
///   is [`OwnerScope::Role`]; a Cognito identity-pool caller is its identity (all of a pool's
///   users share one role session name).
/// - JWT: the token's issuer and subject.
/// - Lambda authorizer: the `principalId` of the context it returned, which HTTP API payload 2.0
///   puts under `requestContext.authorizer.lambda`.
pub fn caller(ctx: Option<&RequestContext>, scope: OwnerScope) -> Option<Owner> {
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
    scope: OwnerScope,
) -> Option<String> {
    if scope == OwnerScope::Session {
        let cognito = iam.cognito_identity.as_ref().and_then(|c| {
            let id = c.identity_id.as_deref().filter(|s| !s.is_empty())?;
            Some(format!(
                "cognito:{}|{id}",
                c.identity_pool_id.as_deref().unwrap_or("")
            ))
        });
        if cognito.is_some() {
            return cognito;
        }
    }
    let arn = iam.user_arn.as_deref().filter(|s| !s.is_empty());
    match (arn, scope) {
        (Some(arn), OwnerScope::Session) => Some(arn.to_owned()),
        (Some(arn), OwnerScope::Role) => Some(without_session(arn)),
        (None, _) => iam.caller_id.clone().filter(|s| !s.is_empty()),
    }
}

/// `arn:aws:sts::123456789012:assumed-role/Role/session` → `arn:aws:sts::123456789012:assumed-role/Role`.
fn without_session(arn: &str) -> String {
    let Some((prefix, resource)) = arn.rsplit_once(':') else {
        return arn.to_owned();
    };
    match resource.strip_prefix("assumed-role/") {
        Some(rest) => {
            let role = rest.split('/').next().unwrap_or(rest);
            format!("{prefix}:assumed-role/{role}")
        }
        None => arn.to_owned(),
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
    use lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizerJwtDescription;

    fn with_auth(auth: Option<ApiGatewayRequestAuthorizer>) -> RequestContext {
        let mut ctx = ApiGatewayV2httpRequestContext::default();
        ctx.authorizer = auth;
        RequestContext::ApiGatewayV2(ctx)
    }

    fn iam(arn: Option<&str>, caller: Option<&str>) -> Option<ApiGatewayRequestAuthorizer> {
        let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
        iam.user_arn = arn.map(Into::into);
        iam.caller_id = caller.map(Into::into);
        let mut a = ApiGatewayRequestAuthorizer::default();
        a.iam = Some(iam);
        Some(a)
    }

    fn jwt(claims: &[(&str, &str)]) -> Option<ApiGatewayRequestAuthorizer> {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let mut a = ApiGatewayRequestAuthorizer::default();
        a.jwt = Some(jwt);
        Some(a)
    }

    #[test]
    fn identity_comes_from_the_authorizer_only() {
        let mut lambda_auth = ApiGatewayRequestAuthorizer::default();
        lambda_auth
            .fields
            .insert("principalId".into(), serde_json::json!("tenant-7"));
        let cases: Vec<(&str, Option<RequestContext>, Option<&str>)> = vec![
            ("no context", None, None),
            ("no authorizer", Some(with_auth(None)), None),
            (
                "iam user",
                Some(with_auth(iam(
                    Some("arn:aws:iam::123456789012:user/alice"),
                    None,
                ))),
                Some("iam:arn:aws:iam::123456789012:user/alice"),
            ),
            (
                "an assumed role's session is its own owner",
                Some(with_auth(iam(
                    Some(
                        "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0a1b/alice@corp",
                    ),
                    None,
                ))),
                Some(
                    "iam:arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0a1b/alice@corp",
                ),
            ),
            (
                "iam caller id only",
                Some(with_auth(iam(None, Some("AIDAEXAMPLE")))),
                Some("iam:AIDAEXAMPLE"),
            ),
            (
                "iam with nothing",
                Some(with_auth(iam(Some(""), None))),
                None,
            ),
            (
                "jwt",
                Some(with_auth(jwt(&[
                    ("sub", "u-1"),
                    ("iss", "https://idp.example.com"),
                ]))),
                Some("jwt:https://idp.example.com|u-1"),
            ),
            (
                "jwt without subject",
                Some(with_auth(jwt(&[("iss", "x")]))),
                None,
            ),
            (
                "lambda authorizer",
                Some(with_auth(Some(lambda_auth))),
                Some("lambda:tenant-7"),
            ),
        ];
        for (name, ctx, want) in cases {
            let got = caller(ctx.as_ref(), OwnerScope::Session);
            assert_eq!(got.as_ref().map(Owner::as_str), want, "{name}");
        }
    }

    #[test]
    fn sessions_are_apart_by_default_and_one_owner_per_role_when_asked() {
        let session = |arn: &str| with_auth(iam(Some(arn), None));
        let alice =
            session("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0a1b/alice@corp");
        let bob =
            session("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0a1b/bob@corp");
        let owner = |ctx: &RequestContext, scope| caller(Some(ctx), scope).unwrap();
        assert_ne!(
            owner(&alice, OwnerScope::Session),
            owner(&bob, OwnerScope::Session)
        );
        assert_eq!(
            owner(&alice, OwnerScope::Role),
            owner(&bob, OwnerScope::Role)
        );
        assert_eq!(
            owner(&alice, OwnerScope::Role).as_str(),
            "iam:arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0a1b"
        );
        // Cognito identity-pool users share the role and its session name, not their identity.
        let cognito = |identity: &str| {
            let mut d = ApiGatewayRequestAuthorizerIamDescription::default();
            d.user_arn = Some(
                "arn:aws:sts::123456789012:assumed-role/Cognito_Auth/CognitoIdentityCredentials"
                    .into(),
            );
            let mut c = lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizerCognitoIdentity::default();
            c.identity_id = Some(identity.into());
            c.identity_pool_id = Some("us-east-1:pool".into());
            d.cognito_identity = Some(c);
            let mut a = ApiGatewayRequestAuthorizer::default();
            a.iam = Some(d);
            with_auth(Some(a))
        };
        let (u1, u2) = (cognito("us-east-1:user-1"), cognito("us-east-1:user-2"));
        assert_ne!(
            owner(&u1, OwnerScope::Session),
            owner(&u2, OwnerScope::Session)
        );
        assert_eq!(
            owner(&u1, OwnerScope::Session).as_str(),
            "iam:cognito:us-east-1:pool|us-east-1:user-1"
        );
        assert_eq!(owner(&u1, OwnerScope::Role), owner(&u2, OwnerScope::Role));
        for (raw, want) in [
            ("session", Ok(OwnerScope::Session)),
            ("role", Ok(OwnerScope::Role)),
        ] {
            assert_eq!(raw.parse::<OwnerScope>(), want);
        }
        assert!("user".parse::<OwnerScope>().is_err());
    }

    #[test]
    fn a_lambda_authorizers_identity_is_read_from_payload_2_0() {
        // As API Gateway sends it: the authorizer's context under `authorizer.lambda`.
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "GET /jobs/{id}", "rawPath": "/jobs/x", "rawQueryString": "",
            "headers": {}, "isBase64Encoded": false,
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
                "domainPrefix": "api", "requestId": "r", "routeKey": "GET /jobs/{id}", "stage": "$default",
                "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": 0,
                "http": {"method": "GET", "path": "/jobs/x", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
                "authorizer": {"lambda": {"principalId": "tenant-42", "plan": "gold"}}
            }
        });
        let req: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest =
            serde_json::from_value(event).unwrap();
        let ctx = RequestContext::ApiGatewayV2(req.request_context);
        assert_eq!(
            caller(Some(&ctx), OwnerScope::Session).unwrap().as_str(),
            "lambda:tenant-42"
        );
    }

    #[test]
    fn the_local_context_is_an_iam_identity() {
        let ctx = local_context("arn:aws:iam::000000000000:user/local");
        assert_eq!(
            caller(Some(&ctx), OwnerScope::Session).unwrap().as_str(),
            "iam:arn:aws:iam::000000000000:user/local"
        );
    }
}
