//! `check_origin`: which browser origins may open a socket, with Phoenix's rules
//! (`phoenix/lib/phoenix/socket/transport.ex` `check_origin/5`, v1.8.12).
//!
//! - No `Origin` header, or the check disabled: allowed.
//! - [`CheckOrigin::Host`] (Phoenix's `true`): the origin's host must equal the
//!   configured host; scheme and port are not compared.
//! - [`CheckOrigin::List`]: each entry is `scheme://host:port` with any part left
//!   out meaning "any" (`//example.com`). A scheme without a port fixes the scheme's
//!   default port (`http://a.com` means port 80). `*.example.com` matches
//!   `example.com` and every subdomain below it, nothing else.
//! - [`CheckOrigin::Conn`]: scheme, host and port must equal the request's own.
//! - An origin without a host (`null`, `file://`, empty) is refused, except by a
//!   [`CheckOrigin::Custom`] function, which sees every origin and decides.

use std::fmt;
use std::sync::Arc;

/// An origin split into its parts; missing parts are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// `http`, `https`, … (lowercase).
    pub scheme: Option<String>,
    /// The host (lowercase), without brackets for IPv6.
    pub host: Option<String>,
    /// The port, explicit or the scheme's default.
    pub port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl Origin {
    /// Parses an origin or an allow-list entry (`https://a.com`, `//a.com:81`, `null`).
    pub fn parse(text: &str) -> Origin {
        let text = text.trim();
        let (scheme, rest) = match text.find("://") {
            Some(i)
                if i > 0
                    && text[..i]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                (Some(text[..i].to_ascii_lowercase()), &text[i + 3..])
            }
            _ => match text.strip_prefix("//") {
                Some(rest) => (None, rest),
                None => return Origin::default(),
            },
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit('@').next().unwrap_or("");
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            match stripped.split_once(']') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.strip_prefix(':').and_then(|p| p.parse().ok()),
                ),
                None => (stripped.to_owned(), None),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().ok()),
                None => (authority.to_owned(), None),
            }
        };
        let port = port.or_else(|| scheme.as_deref().and_then(default_port));
        Origin {
            scheme,
            host: if host.is_empty() {
                None
            } else {
                Some(host.to_ascii_lowercase())
            },
            port,
        }
    }
}

/// A function that decides for itself whether an origin is allowed.
pub type OriginFn = Arc<dyn Fn(&Origin) -> bool + Send + Sync>;

/// The origin policy of a socket.
#[derive(Clone)]
pub enum CheckOrigin {
    /// Every origin is allowed (Phoenix's `check_origin: false`).
    Disabled,
    /// The origin's host must equal this host (Phoenix's `true`, with the endpoint's
    /// `url[:host]`); this is the default, with host `localhost`.
    Host(String),
    /// The origin must match one of these entries.
    List(Vec<Origin>),
    /// The origin must equal the request's own scheme, host and port.
    Conn,
    /// A function decides, for every origin (hostless ones included).
    Custom(OriginFn),
}

impl Default for CheckOrigin {
    /// Phoenix's default: `check_origin: true` with the endpoint host `localhost`.
    fn default() -> CheckOrigin {
        CheckOrigin::Host("localhost".to_owned())
    }
}

impl fmt::Debug for CheckOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckOrigin::Disabled => f.write_str("Disabled"),
            CheckOrigin::Host(h) => f.debug_tuple("Host").field(h).finish(),
            CheckOrigin::List(l) => f.debug_tuple("List").field(l).finish(),
            CheckOrigin::Conn => f.write_str("Conn"),
            CheckOrigin::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl CheckOrigin {
    /// A list policy from entries such as `"//example.com"` or `"https://*.ex.com"`.
    /// An entry without a host (`example.com` with neither scheme nor `//`) is
    /// left out with an error logged, so that it never matches every origin;
    /// [`CheckOrigin::try_list`] refuses such a list instead, as Phoenix does.
    pub fn list<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> CheckOrigin {
        CheckOrigin::List(
            entries
                .into_iter()
                .filter_map(|e| {
                    let origin = Origin::parse(e.as_ref());
                    if origin.host.is_none() {
                        tracing::error!(
                            entry = e.as_ref(),
                            "check_origin entry without a host: left out"
                        );
                        return None;
                    }
                    Some(origin)
                })
                .collect(),
        )
    }

    /// A list policy, refusing any entry without a host as Phoenix does at
    /// start-up (`parse_origin/1` in `socket/transport.ex` raises when
    /// `URI.parse/1` finds no host: `example.com` alone is a path, not a host).
    ///
    /// ```
    /// use phx_runtime::CheckOrigin;
    /// assert!(CheckOrigin::try_list(["//example.com", "https://*.ex.com"]).is_ok());
    /// assert!(CheckOrigin::try_list(["example.com"]).is_err());
    /// ```
    pub fn try_list<I: IntoIterator<Item = S>, S: AsRef<str>>(
        entries: I,
    ) -> Result<CheckOrigin, crate::RuntimeError> {
        let mut list = Vec::new();
        for entry in entries {
            let origin = Origin::parse(entry.as_ref());
            if origin.host.is_none() {
                return Err(crate::RuntimeError::Config(format!(
                    "check_origin entry {:?} has no host; write it with a scheme or `//`, \
                     e.g. \"https://example.com\", \"//example.com\", \"//example.com:8080\"",
                    entry.as_ref()
                )));
            }
            list.push(origin);
        }
        Ok(CheckOrigin::List(list))
    }

    /// Whether a request with this `Origin` header (if any) may connect. `request`
    /// is the request's own scheme, host and port, used by [`CheckOrigin::Conn`].
    ///
    /// ```
    /// use phx_runtime::{CheckOrigin, Origin};
    /// let policy = CheckOrigin::list(["https://*.ex.com"]);
    /// let req = Origin::default();
    /// assert!(policy.allows(Some("https://org1.ex.com"), &req));
    /// assert!(policy.allows(Some("https://ex.com"), &req));
    /// assert!(!policy.allows(Some("https://org1.prefix-ex.com"), &req));
    /// assert!(policy.allows(None, &req));
    /// ```
    pub fn allows(&self, origin_header: Option<&str>, request: &Origin) -> bool {
        let Some(header) = origin_header else {
            return true;
        };
        if let CheckOrigin::Disabled = self {
            return true;
        }
        let origin = Origin::parse(header);
        if let CheckOrigin::Custom(f) = self {
            return f(&origin);
        }
        let Some(host) = origin.host.as_deref() else {
            return false;
        };
        match self {
            CheckOrigin::Disabled | CheckOrigin::Custom(_) => true,
            CheckOrigin::Host(allowed) => host.eq_ignore_ascii_case(allowed),
            CheckOrigin::Conn => {
                origin.scheme == request.scheme
                    && origin.host == request.host
                    && origin.port == request.port
            }
            CheckOrigin::List(list) => list.iter().any(|allowed| {
                part_matches(&origin.scheme, &allowed.scheme)
                    && part_matches(&origin.port, &allowed.port)
                    && host_matches(host, allowed.host.as_deref())
            }),
        }
    }
}

fn part_matches<T: PartialEq>(actual: &Option<T>, allowed: &Option<T>) -> bool {
    allowed.is_none() || actual == allowed
}

fn host_matches(host: &str, allowed: Option<&str>) -> bool {
    match allowed {
        None => true,
        Some(allowed) => match allowed.strip_prefix("*.") {
            Some(base) => {
                host == base
                    || (host.len() > base.len() + 1
                        && host.ends_with(base)
                        && host[..host.len() - base.len()].ends_with('.'))
            }
            None => host == allowed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Origin {
        Origin::parse("http://localhost:4000")
    }

    #[test]
    fn no_origin_header_passes_every_policy() {
        for p in [
            CheckOrigin::Host("x.com".into()),
            CheckOrigin::list(["//a.com"]),
            CheckOrigin::Conn,
        ] {
            assert!(p.allows(None, &req()));
        }
    }

    #[test]
    fn disabled_allows_everything() {
        assert!(CheckOrigin::Disabled.allows(Some("null"), &req()));
        assert!(CheckOrigin::Disabled.allows(Some("http://evil.com"), &req()));
    }

    #[test]
    fn host_policy_compares_host_only() {
        let p = CheckOrigin::Host("example.com".into());
        assert!(p.allows(Some("https://example.com:8443"), &req()));
        assert!(p.allows(Some("http://example.com"), &req()));
        assert!(!p.allows(Some("http://notallowed.com"), &req()));
        assert!(!p.allows(Some("http://sub.example.com"), &req()));
    }

    #[test]
    fn wildcard_subdomains() {
        let p = CheckOrigin::list(["https://*.ex.com"]);
        assert!(p.allows(Some("https://org1.ex.com"), &req()));
        assert!(p.allows(Some("https://a.b.ex.com"), &req()));
        assert!(p.allows(Some("https://ex.com"), &req()));
        assert!(!p.allows(Some("https://org1.prefix-ex.com"), &req()));
        assert!(
            !p.allows(Some("http://org1.ex.com"), &req()),
            "scheme must match"
        );
        let p = CheckOrigin::list(["http://*.foo.example.com"]);
        assert!(p.allows(Some("http://org2.foo.example.com"), &req()));
        assert!(p.allows(Some("http://foo.example.com"), &req()));
        assert!(!p.allows(Some("http://bad.example.com"), &req()));
        assert!(!p.allows(Some("http://org1.prefix-foo.example.com"), &req()));
        assert!(!p.allows(Some("http://org1.bar.example.com"), &req()));
    }

    #[test]
    fn no_wildcard_no_subdomains() {
        let p = CheckOrigin::list(["//ex.com"]);
        assert!(!p.allows(Some("https://org1.ex.com"), &req()));
        assert!(p.allows(Some("https://ex.com"), &req()));
        assert!(
            p.allows(Some("http://ex.com:9000"), &req()),
            "//host matches any scheme and port"
        );
    }

    #[test]
    fn scheme_fixes_default_port() {
        let p = CheckOrigin::list(["http://scheme.com"]);
        assert!(p.allows(Some("http://scheme.com"), &req()));
        assert!(!p.allows(Some("https://scheme.com"), &req()));
        assert!(!p.allows(Some("http://scheme.com:8080"), &req()));
        let p = CheckOrigin::list(["//port.com:81"]);
        assert!(p.allows(Some("http://port.com:81"), &req()));
        assert!(!p.allows(Some("http://port.com:82"), &req()));
    }

    #[test]
    fn hostless_origins_are_refused_unless_a_function_decides() {
        for p in [
            CheckOrigin::list(["//example.com"]),
            CheckOrigin::Host("localhost".into()),
        ] {
            for o in ["file://", "null", ""] {
                assert!(!p.allows(Some(o), &req()), "{o:?} must be refused");
            }
        }
        let f = CheckOrigin::Custom(Arc::new(|o: &Origin| o.host.is_none()));
        assert!(f.allows(Some("null"), &req()));
        assert!(!f.allows(Some("http://a.com"), &req()));
    }

    #[test]
    fn hostless_entries_never_match_everything() {
        for entry in ["example.com", "example.com:4000", "*.example.com", "", "//"] {
            assert!(
                CheckOrigin::try_list([entry]).is_err(),
                "{entry:?} accepted"
            );
            let p = CheckOrigin::list([entry]);
            assert!(
                !p.allows(Some("https://evil.test"), &req()),
                "{entry:?} matched evil.test"
            );
        }
        for entry in [
            "//example.com",
            "https://example.com",
            "http://example.com:8080",
        ] {
            let p = CheckOrigin::try_list([entry]).unwrap();
            assert!(
                p.allows(Some("http://example.com:8080"), &req()) || entry.starts_with("https")
            );
            assert!(
                !p.allows(Some("https://evil.test"), &req()),
                "{entry:?} matched evil.test"
            );
        }
    }

    #[test]
    fn conn_policy_requires_same_scheme_host_port() {
        let p = CheckOrigin::Conn;
        assert!(p.allows(Some("http://localhost:4000"), &req()));
        for o in [
            "https://localhost:4000",
            "ws://localhost:4000",
            "http://other:4000",
            "http://localhost:4001",
        ] {
            assert!(!p.allows(Some(o), &req()), "{o} must be refused");
        }
    }
}
