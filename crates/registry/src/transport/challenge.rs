//! `WWW-Authenticate` challenges (RFC 7235 section 4.1, RFC 6750 section 3).
//!
//! Hand-written: the crates that parse this header are unmaintained or handle one
//! challenge per header only, while registries send several challenges, in several
//! headers, with quoted strings carrying backslash escapes.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Bearer,
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: Scheme,
    /// Parameter names are lowercased; values kept as sent.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge of every header value given.
pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    values.into_iter().flat_map(parse).collect()
}

/// Parses one header value, which may hold several challenges.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip_ws_and_commas();
        let Some(scheme) = p.token() else { break };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "basic" => Scheme::Basic,
            "bearer" => Scheme::Bearer,
            other => Scheme::Other(other.to_owned()),
        };
        let mut params = BTreeMap::new();
        p.skip_ws();
        if p.token68() {
            // `Negotiate abc==`: no parameters we use.
            out.push(Challenge { scheme, params });
            continue;
        }
        loop {
            p.skip_ws();
            let save = p.i;
            let Some(name) = p.token() else {
                // Garbage: skip to the next comma.
                p.skip_until_comma();
                break;
            };
            p.skip_ws();
            if !p.eat(b'=') {
                // The token was the next challenge's scheme: rewind.
                p.i = save;
                break;
            }
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            params.insert(name.to_ascii_lowercase(), value);
            p.skip_ws();
            if !p.eat(b',') {
                break;
            }
            // After a comma: another param (`name=`) or a new challenge (`Scheme ...`).
            p.skip_ws_and_commas();
            let save = p.i;
            let is_param = p.token().is_some() && {
                p.skip_ws();
                p.peek() == Some(b'=')
            };
            p.i = save;
            if !is_param {
                break;
            }
        }
        out.push(Challenge { scheme, params });
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn skip_until_comma(&mut self) {
        while let Some(c) = self.peek() {
            if c == b',' {
                break;
            }
            self.i += 1;
        }
    }

    /// Consumes a token68 (`token =*` followed by `,` or the end) if one is here.
    fn token68(&mut self) -> bool {
        let save = self.i;
        if self.token().is_some() {
            while self.eat(b'=') {}
            self.skip_ws();
            if matches!(self.peek(), None | Some(b',')) {
                return true;
            }
        }
        self.i = save;
        false
    }

    /// RFC 7230 tchar+ (plus '/' and '=' inside token68-ish values is not accepted here).
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(c) = self.peek() {
            let tchar = c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c);
            if !tchar {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A quoted-string with backslash escapes; an unterminated one ends at the end.
    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, expect: &[(&str, &[(&str, &str)])]) {
        let got: Vec<(String, Vec<(String, String)>)> = parse(header)
            .into_iter()
            .map(|c| {
                let scheme = match c.scheme {
                    Scheme::Basic => "basic".to_owned(),
                    Scheme::Bearer => "bearer".to_owned(),
                    Scheme::Other(o) => o,
                };
                (scheme, c.params.into_iter().collect())
            })
            .collect();
        let expect: Vec<(String, Vec<(String, String)>)> = expect
            .iter()
            .map(|(s, ps)| {
                (
                    s.to_string(),
                    ps.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(got, expect, "{header}");
    }

    #[test]
    fn challenges() {
        check(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
            &[(
                "bearer",
                &[
                    ("realm", "https://auth.docker.io/token"),
                    ("scope", "repository:library/nginx:pull"),
                    ("service", "registry.docker.io"),
                ],
            )],
        );
        check(
            r#"Basic realm="Registry Realm""#,
            &[("basic", &[("realm", "Registry Realm")])],
        );
        check(r#"BASIC REALM=x"#, &[("basic", &[("realm", "x")])]);
        check(
            r#"Bearer realm="a\"b\\c", error="insufficient_scope""#,
            &[(
                "bearer",
                &[("error", "insufficient_scope"), ("realm", r#"a"b\c"#)],
            )],
        );
        check(
            r#"Basic realm="r1", Bearer realm="https://t/x", service="s""#,
            &[
                ("basic", &[("realm", "r1")]),
                ("bearer", &[("realm", "https://t/x"), ("service", "s")]),
            ],
        );
        check(
            r#"Negotiate abc==, Basic realm="x""#,
            &[("negotiate", &[]), ("basic", &[("realm", "x")])],
        );
        check("Bearer", &[("bearer", &[])]);
        check("", &[]);
        check(
            r#"Bearer realm="unterminated"#,
            &[("bearer", &[("realm", "unterminated")])],
        );
        check(
            " , Bearer realm = \"x\" ,, ",
            &[("bearer", &[("realm", "x")])],
        );
        check(
            r#"Bearer scope="repository:a/b:pull repository:c:pull""#,
            &[(
                "bearer",
                &[("scope", "repository:a/b:pull repository:c:pull")],
            )],
        );
    }

    #[test]
    fn several_headers() {
        let all = parse_all([r#"Basic realm="x""#, r#"Bearer realm="y""#]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].scheme, Scheme::Bearer);
        assert_eq!(all[1].param("realm"), Some("y"));
    }
}
