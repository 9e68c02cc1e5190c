//! Outbound HTTP (README "Security"): the one `reqwest` client every call the server makes to
//! another host goes through — provider sends and media downloads, OAuth/OIDC discovery, token
//! and profile calls, the storefront's social-login checks.
//!
//! Some of those URLs are chosen by a tenant (a Twilio `MediaUrl` in a signed webhook, an auth
//! client's `issuerUrl`, the endpoints an identity provider's discovery document names), so the
//! client refuses to talk to anything but the public internet (SSRF):
//! - a DNS resolver hook drops loopback, private, link-local, multicast and other non-public
//!   addresses from every answer, and fails the lookup when none is left;
//! - a connector layer checks the address each new connection actually reached, which also
//!   covers URLs naming an IP address (they are never resolved) and DNS rebinding;
//! - redirects are never followed automatically: [`get_following`] follows at most a few itself,
//!   each hop checked by its caller (a provider's media host list, `providers::MediaPolicy`; an
//!   agent's `mediaUrl`, `media::service::save_remote`) and each connection by the checks above;
//! - proxies from the environment are ignored, so the check cannot be bypassed through one.
//!
//! `CONFAB_ALLOW_PRIVATE_FETCH=true` turns the address checks off, for tests whose mock
//! providers listen on 127.0.0.1.

use std::{
    error::Error as StdError,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::client::legacy::connect::{Connection, HttpInfo};

use crate::core::config::Config;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The error of a call the address checks refused (found in a `reqwest::Error`'s source chain
/// by [`is_refused`]).
#[derive(Debug, thiserror::Error)]
#[error("refused to connect to {0}: not a public internet address")]
pub struct Refused(pub String);

/// Whether a failed call was refused by the address checks (rather than by the network), so
/// callers can treat it as final instead of retrying.
pub fn is_refused(e: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.is::<Refused>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// The server's outbound client: timeouts from `CONFAB_PROVIDER_TIMEOUT_SECS` (callers may set
/// a shorter one per request), no redirects, no proxy, and the address checks unless
/// `CONFAB_ALLOW_PRIVATE_FETCH` is set.
pub fn client(config: &Config) -> anyhow::Result<reqwest::Client> {
    client_with(Duration::from_secs(config.provider_timeout_secs.max(1)), config.allow_private_fetch)
}

/// An outbound client with its own timeout and address policy (outgoing webhooks have their
/// own settings, `CONFAB_WEBHOOK_TIMEOUT_SECS` and `CONFAB_WEBHOOK_ALLOW_PRIVATE`): no
/// redirects, no proxy, and the address checks unless `allow_private`.
pub fn client_with(timeout: Duration, allow_private: bool) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("confab/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicResolver)).connector_layer(PeerCheckLayer);
    }
    Ok(builder.build()?)
}

/// Checks, when a tenant gives the server a URL to call later (a webhook subscription), that
/// its host resolves to public addresses only, with the same rule and resolver as the client's
/// ([`PublicResolver`]); the client checks again on every call (DNS may change). `Err` says why.
pub async fn check_public_url(url: &url::Url) -> Result<(), String> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => return if is_public(IpAddr::V4(ip)) { Ok(()) } else { Err(refused_msg()) },
        Some(url::Host::Ipv6(ip)) => return if is_public(IpAddr::V6(ip)) { Ok(()) } else { Err(refused_msg()) },
        None => return Err("must name a host".into()),
    };
    // A name that also points inside is refused whole here (the client would only drop those
    // addresses, but the subscription is meant for a public receiver).
    match resolve_public(&host).await {
        Ok((_, false)) => Ok(()),
        Ok((_, true)) => Err(refused_msg()),
        Err(e) if is_refused(e.as_ref()) => Err(refused_msg()),
        Err(_) => Err("its host does not resolve".into()),
    }
}

fn refused_msg() -> String {
    "must resolve to public internet addresses (not loopback, private or link-local)".into()
}

/// The addresses of `host` that are public; a [`Refused`] error when none is.
async fn resolve_public(host: &str) -> Result<(Vec<SocketAddr>, bool), BoxError> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    let all = found.len();
    let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
    if public.is_empty() {
        return Err(Box::new(Refused(host.to_owned())));
    }
    let some_private = public.len() != all;
    Ok((public, some_private))
}

/// Whether `ip` is an address of the public internet: not loopback, private (RFC 1918, IPv6
/// unique local), link-local, multicast, unspecified, broadcast, shared (CGNAT), benchmarking,
/// documentation or reserved; IPv4-mapped and NAT64 IPv6 addresses are judged by their IPv4
/// address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // IPv4-compatible (deprecated) and the discard, documentation and 6to4 ranges.
                || s[..6] == [0, 0, 0, 0, 0, 0]
                || s[..4] == [0x100, 0, 0, 0]
                || (s[0], s[1]) == (0x2001, 0xdb8)
                || s[0] == 0x2002)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// Resolves with the system resolver and keeps only public addresses.
struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let (public, _) = resolve_public(&host).await?;
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Wraps reqwest's connector: a connection whose peer is not a public address is dropped
/// before a request is written on it.
#[derive(Clone, Copy)]
struct PeerCheckLayer;

impl<S> tower_layer::Layer<S> for PeerCheckLayer {
    type Service = PeerCheck<S>;

    fn layer(&self, inner: S) -> PeerCheck<S> {
        PeerCheck(inner)
    }
}

#[derive(Clone)]
struct PeerCheck<S>(S);

impl<S, R> tower_service::Service<R> for PeerCheck<S>
where
    S: tower_service::Service<R, Error = BoxError>,
    S::Response: Connection + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connecting = self.0.call(req);
        Box::pin(async move {
            let conn = connecting.await?;
            let mut extras = http::Extensions::new();
            conn.connected().get_extras(&mut extras);
            match extras.get::<HttpInfo>().map(HttpInfo::remote_addr) {
                Some(peer) if is_public(peer.ip()) => Ok(conn),
                Some(peer) => Err(Box::new(Refused(peer.ip().to_string())) as BoxError),
                None => Err(Box::new(Refused("an address that could not be checked".into())) as BoxError),
            }
        })
    }
}

/// Why [`get_following`] did not get a final answer.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The caller's check refused this URL (the first one or a redirect target).
    #[error("refused URL {0}")]
    Refused(String),
    #[error("redirect without a usable Location")]
    BadRedirect,
    #[error("too many redirects")]
    TooManyRedirects,
    /// The request failed: network, timeout, or an address the checks refused ([`is_refused`]).
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// `GET url` following at most `max_redirects` redirects itself (the client follows none):
/// every URL, the first and each `Location`, must pass `allow`, and each connection still goes
/// through the public-address checks of [`client`]. `auth` adds credentials, which go only to
/// the first URL's origin. Answers the first response that is not a redirect.
pub async fn get_following(
    http: &reqwest::Client,
    url: &str,
    max_redirects: usize,
    allow: impl Fn(&url::Url) -> bool,
    auth: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, FollowError> {
    let shown = |u: &str| u.chars().take(200).collect::<String>();
    let first = url::Url::parse(url).map_err(|_| FollowError::Refused(shown(url)))?;
    let mut next = first.clone();
    for _ in 0..=max_redirects {
        if !allow(&next) {
            return Err(FollowError::Refused(shown(next.as_str())));
        }
        let request = http.get(next.clone());
        let request = if next.origin() == first.origin() { auth(request) } else { request };
        let res = request.send().await?;
        if !res.status().is_redirection() {
            return Ok(res);
        }
        let location = res.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
        next = match location.map(|l| next.join(l)) {
            Some(Ok(url)) => url,
            _ => return Err(FollowError::BadRedirect),
        };
    }
    Err(FollowError::TooManyRedirects)
}

/// Hosts a download may come from: exact names, or `*.example.com` for its subdomains.
#[derive(Debug, Clone, Default)]
pub struct HostList(Vec<String>);

impl HostList {
    /// A comma-separated list, as in `CONFAB_WHATSAPP_MEDIA_HOSTS`.
    pub fn parse(csv: &str) -> Self {
        Self(
            csv.split(',')
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(domain) => host.strip_suffix(domain).is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => *pattern == host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private} is not public");
        }
        for public in
            ["8.8.8.8", "157.240.1.35", "100.128.0.1", "2a03:2880:f10c:83:face:b00c:0:25de", "64:ff9b::808:808"]
        {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn host_lists_match_exact_names_and_subdomains_only() {
        let list = HostList::parse(" *.fbsbx.com, api.twilio.com ,");
        assert!(list.allows("lookaside.fbsbx.com"));
        assert!(list.allows("a.b.FBSBX.com."));
        assert!(list.allows("api.twilio.com"));
        assert!(!list.allows("fbsbx.com"), "the wildcard is for subdomains");
        assert!(!list.allows("evilfbsbx.com"));
        assert!(!list.allows("fbsbx.com.evil.net"));
        assert!(!list.allows("media.api.twilio.com"));
        assert!(!list.allows("127.0.0.1"));
    }
}
