//! Cross-site and DNS-rebinding protection: the probe attaches each node's admin cookie
//! itself, so a web page the user visits must not be able to drive it. Every request must
//! name the probe by an IP address, a loopback name or an allowed host (`--allow-host`);
//! a request that changes anything must come from the probe's own origin (or from no
//! browser page at all, as curl's do).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ProbeError, ProbeState};

/// Refuses requests that name the probe by a host name it does not answer to, and changes
/// asked for by a page of another origin.
pub async fn guard(State(s): State<Arc<ProbeState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    // A Host that cannot be read, or two of them, names nothing the probe answers to.
    let host = match only_value(headers, header::HOST.as_str()) {
        Ok(host) => host,
        Err(why) => {
            tracing::info!(path = %request.uri().path(), "refused: {why}");
            return ProbeError::Misdirected(why).into_response();
        }
    };
    if let Some(host) = host
        && !host_allowed(host, &s.allowed_hosts)
    {
        tracing::info!(host, path = %request.uri().path(), "refused: unknown Host");
        return ProbeError::Misdirected(host.to_owned()).into_response();
    }
    if changes_something(request.method(), request.uri().path())
        && let Err(why) = same_origin(headers, host)
    {
        tracing::info!(path = %request.uri().path(), "refused cross-site request: {why}");
        return ProbeError::CrossSite(why).into_response();
    }
    next.run(request).await
}

/// Tells whether a request changes anything: every POST and DELETE, and the original's
/// `GET /shutdown/{port}`.
fn changes_something(method: &Method, path: &str) -> bool {
    *method != Method::GET && *method != Method::HEAD || path.starts_with("/shutdown/")
}

/// Tells whether `host` (a `Host` header: name or address, maybe a port) is one the probe
/// answers to: an IP address (a DNS name pointed at the probe is how rebinding works, an
/// address cannot be rebound), `localhost` or a name under it, or one of `allowed`.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// Returns the one value of header `name` (`None` when absent); an error when it is sent
/// twice or is not visible ASCII.
fn only_value<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    let mut values = readable_values(headers, name)?;
    match values.len() {
        0 => Ok(None),
        1 => Ok(values.pop()),
        n => Err(format!("{n} {name} headers")),
    }
}

/// Returns every value of header `name`; an error when one is not visible ASCII (a value a
/// check cannot read must not pass it).
fn readable_values<'h>(headers: &'h HeaderMap, name: &str) -> Result<Vec<&'h str>, String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| format!("a {name} header that is not visible ASCII"))
        })
        .collect()
}

/// Checks that a request comes from the probe's own origin, or from no page at all. Every
/// value of each header is checked, and one that cannot be read refuses the request.
fn same_origin(headers: &HeaderMap, host: Option<&str>) -> Result<(), String> {
    // Browsers send it with every request; `same-site` includes other ports of this host.
    for site in readable_values(headers, "sec-fetch-site")? {
        if site != "same-origin" && site != "none" {
            return Err(format!("Sec-Fetch-Site is {site}"));
        }
    }
    let ours = host.map(|h| format!("http://{h}"));
    let foreign = |url: &str| {
        let origin = origin_of(url);
        ours.as_deref()
            .is_none_or(|o| !o.eq_ignore_ascii_case(&origin))
    };
    for origin in readable_values(headers, "origin")? {
        if foreign(origin) {
            return Err(format!("Origin {origin} is not this probe's"));
        }
    }
    for referer in readable_values(headers, "referer")? {
        if foreign(referer) {
            return Err(format!(
                "Referer {} is not this probe's",
                origin_of(referer)
            ));
        }
    }
    Ok(())
}

/// Returns `scheme://host[:port]` of a URL (all of it if it has no path).
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            format!("{scheme}://{}", &rest[..end])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Addresses and loopback names pass; other names (rebinding) only when allowed.
    #[test]
    fn hosts_are_addresses_loopback_names_or_allowed() {
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "10.0.0.2:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:1",
        ] {
            assert!(host_allowed(ok, &[]), "{ok}");
        }
        for bad in [
            "attacker.example:8080",
            "evil.com",
            "localhost.evil.com:8080",
            "",
        ] {
            assert!(!host_allowed(bad, &[]), "{bad}");
        }
        assert!(host_allowed("node.lan:8080", &["node.lan".into()]));
    }

    /// A change needs the probe's own origin, or no page at all (curl).
    #[test]
    fn changes_need_the_probes_origin() {
        let host = Some("127.0.0.1:8080");
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            same_origin(&h, host)
        };
        assert!(with(&[]).is_ok(), "curl sends none of these");
        assert!(
            with(&[
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin")
            ])
            .is_ok()
        );
        assert!(with(&[("referer", "http://127.0.0.1:8080/")]).is_ok());
        assert!(
            with(&[("sec-fetch-site", "none")]).is_ok(),
            "typed in the address bar"
        );
        assert!(with(&[("origin", "http://evil.example")]).is_err());
        assert!(with(&[("origin", "null")]).is_err());
        assert!(with(&[("sec-fetch-site", "cross-site")]).is_err());
        assert!(
            with(&[("sec-fetch-site", "same-site")]).is_err(),
            "another port of this host"
        );
        assert!(with(&[("referer", "http://127.0.0.1:9999/attack.html")]).is_err());
        // Values a check cannot read, and a second value of a header, are checked too.
        for name in ["origin", "referer", "sec-fetch-site"] {
            let mut h = HeaderMap::new();
            h.insert(
                name,
                HeaderValue::from_bytes(b"http://ev\xffil.com").unwrap(),
            );
            assert!(same_origin(&h, host).is_err(), "non-ASCII {name}");
        }
        let mut h = HeaderMap::new();
        h.append("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        h.append("origin", HeaderValue::from_static("http://evil.example"));
        assert!(same_origin(&h, host).is_err(), "the second Origin");
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_bytes(b"ev\xffil.com").unwrap(),
        );
        assert!(only_value(&h, "host").is_err(), "a non-ASCII Host");
        h.append(header::HOST, HeaderValue::from_static("127.0.0.1"));
        assert!(only_value(&h, "host").is_err(), "two Hosts");
        assert!(changes_something(&Method::GET, "/shutdown/5001"));
        assert!(changes_something(&Method::POST, "/append/5001"));
        assert!(!changes_something(&Method::GET, "/status/5001"));
    }
}
