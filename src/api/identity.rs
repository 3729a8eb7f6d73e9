//! The caller's identity, taken only from the authorizer's part of API Gateway's request
//! context: nothing the caller sends (headers, body, query) can set it.

use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
    ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;

use crate::job::Owner;

/// The caller of a request, or `None` when no authorizer vouched for one.
///
/// - IAM (SigV4): the principal's ARN; for an assumed role, the role without its session name,
///   so every session of a service's role sees the same jobs.
/// - JWT: the token's issuer and subject.
/// - Lambda authorizer: its `principalId`.
pub fn caller(ctx: Option<&RequestContext>) -> Option<Owner> {
    let RequestContext::ApiGatewayV2(ctx) = ctx? else {
        return None;
    };
    let auth = ctx.authorizer.as_ref()?;
    if let Some(iam) = &auth.iam {
        return iam_identity(iam).map(|id| Owner::new(format!("iam:{id}")));
    }
    if let Some(jwt) = &auth.jwt {
        let sub = jwt.claims.get("sub").filter(|s| !s.is_empty())?;
        let iss = jwt.claims.get("iss").map(String::as_str).unwrap_or("");
        return Some(Owner::new(format!("jwt:{iss}|{sub}")));
    }
    auth.fields
        .get("principalId")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(|p| Owner::new(format!("lambda:{p}")))
}

fn iam_identity(iam: &ApiGatewayRequestAuthorizerIamDescription) -> Option<String> {
    let arn = iam.user_arn.as_deref().filter(|s| !s.is_empty());
    match arn {
        Some(arn) => Some(without_session(arn)),
        None => iam.caller_id.clone().filter(|s| !s.is_empty()),
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
                "assumed role loses its session",
                Some(with_auth(iam(
                    Some("arn:aws:sts::123456789012:assumed-role/Inference/i-0abc"),
                    None,
                ))),
                Some("iam:arn:aws:sts::123456789012:assumed-role/Inference"),
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
            let got = caller(ctx.as_ref());
            assert_eq!(got.as_ref().map(Owner::as_str), want, "{name}");
        }
    }

    #[test]
    fn the_local_context_is_an_iam_identity() {
        let ctx = local_context("arn:aws:iam::000000000000:user/local");
        assert_eq!(
            caller(Some(&ctx)).unwrap().as_str(),
            "iam:arn:aws:iam::000000000000:user/local"
        );
    }
}
