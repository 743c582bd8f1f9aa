//! The auth layer above the token exchange: what a session holds once it answered
//! a challenge, and what to do when a request is refused with 401 (answer a first
//! challenge, or an `insufficient_scope` naming a scope not asked for yet, once;
//! give up otherwise). A pure decision, so that it is tested as a table.

use super::bearer::Token;
use super::challenge::{Challenge, Scheme};

/// The authorization a session earned.
#[derive(Clone)]
pub enum AuthState {
    Anonymous,
    /// Basic credentials accepted by `/v2/`.
    Basic,
    /// A token for these scopes.
    Bearer {
        scopes: Vec<String>,
        token: Token,
    },
}

/// What to do about a 401.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'c> {
    /// Send the Basic credentials and retry.
    Basic,
    /// Fetch a token for `scopes` from this challenge's realm and retry.
    Bearer {
        challenge: &'c Challenge,
        scopes: Vec<String>,
    },
    /// Nothing more to try: the 401 is the answer.
    GiveUp,
}

/// The answer to a 401 carrying `challenges`, for a session in state `auth`.
/// `pull_scope` is what a first token asks for when the challenge names none.
pub fn on_unauthorized<'c>(
    auth: &AuthState,
    challenges: &'c [Challenge],
    has_credentials: bool,
    pull_scope: &str,
) -> Answer<'c> {
    let Some(c) = challenges.iter().find(|c| c.scheme == Scheme::Bearer) else {
        let basic = challenges.iter().any(|c| c.scheme == Scheme::Basic);
        return match auth {
            AuthState::Anonymous if basic && has_credentials => Answer::Basic,
            _ => Answer::GiveUp,
        };
    };
    let scope = c.param("scope");
    match auth {
        // A first challenge on this path (the registry let /v2/ through).
        AuthState::Anonymous | AuthState::Basic => Answer::Bearer {
            challenge: c,
            scopes: vec![scope.unwrap_or(pull_scope).to_owned()],
        },
        AuthState::Bearer { scopes, .. } => match scope {
            Some(scope)
                if c.param("error") == Some("insufficient_scope")
                    && !scopes.iter().any(|s| s == scope) =>
            {
                let mut s = scopes.clone();
                s.push(scope.to_owned());
                Answer::Bearer {
                    challenge: c,
                    scopes: s,
                }
            }
            _ => Answer::GiveUp,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::challenge::parse_all;

    fn bearer(scopes: &[&str]) -> AuthState {
        AuthState::Bearer {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            token: Token::for_tests(),
        }
    }

    /// (what, state, header, has credentials, expected: `None` gives up, `Some([])`
    /// is Basic, `Some(scopes)` a token for those scopes).
    type Case = (
        &'static str,
        AuthState,
        &'static str,
        bool,
        Option<Vec<&'static str>>,
    );

    #[test]
    fn answers() {
        const PULL: &str = "repository:app:pull";
        let cases: Vec<Case> = vec![
            (
                "basic, with credentials",
                AuthState::Anonymous,
                r#"Basic realm="r""#,
                true,
                Some(vec![]),
            ),
            (
                "basic, without",
                AuthState::Anonymous,
                r#"Basic realm="r""#,
                false,
                None,
            ),
            (
                "basic again after basic",
                AuthState::Basic,
                r#"Basic realm="r""#,
                true,
                None,
            ),
            (
                "first bearer, no scope named",
                AuthState::Anonymous,
                r#"Bearer realm="http://t/token""#,
                true,
                Some(vec![PULL]),
            ),
            (
                "first bearer, scope named",
                AuthState::Anonymous,
                r#"Bearer realm="http://t/token",scope="repository:app:pull,push""#,
                false,
                Some(vec!["repository:app:pull,push"]),
            ),
            (
                "insufficient scope, new",
                bearer(&[PULL]),
                r#"Bearer realm="http://t/token",scope="repository:base:pull",error="insufficient_scope""#,
                true,
                Some(vec![PULL, "repository:base:pull"]),
            ),
            (
                "insufficient scope, asked already",
                bearer(&[PULL]),
                r#"Bearer realm="http://t/token",scope="repository:app:pull",error="insufficient_scope""#,
                true,
                None,
            ),
            (
                "a token refused outright",
                bearer(&[PULL]),
                r#"Bearer realm="http://t/token",error="invalid_token""#,
                true,
                None,
            ),
            ("no challenge at all", AuthState::Anonymous, "", true, None),
        ];
        for (what, state, header, creds, expected) in cases {
            let challenges = parse_all([header]);
            let got = on_unauthorized(&state, &challenges, creds, PULL);
            let want = match expected {
                None => Answer::GiveUp,
                Some(s) if s.is_empty() => Answer::Basic,
                Some(s) => Answer::Bearer {
                    challenge: challenges
                        .iter()
                        .find(|c| c.scheme == Scheme::Bearer)
                        .unwrap(),
                    scopes: s.into_iter().map(str::to_owned).collect(),
                },
            };
            assert_eq!(got, want, "{what}");
        }
    }
}
