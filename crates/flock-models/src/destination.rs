//! A webhook's destination: the normalised scheme, host and port its deliveries go to, the
//! unit receiver isolation counts, caps and (later) breaks per.

use std::fmt;

use url::Position;

use crate::WebhookUrl;

/// The normalised `scheme://host[:port]` of a [`WebhookUrl`]: scheme and host lower-cased (an
/// international domain name in its ASCII form), a default port left out, an IPv6 address in
/// brackets. Two URLs that reach the same server by the same scheme and port have one
/// destination whatever their paths, queries and fragments.
///
/// It is the stored URL's text up to the first `/` after `://`, which is what the stores'
/// generated `destination` column computes (migration `0007_destinations`), so the two agree.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination(String);

impl Destination {
    /// The destination `url` goes to.
    pub fn of(url: &WebhookUrl) -> Self {
        Destination(Destination::text_of(url).to_owned())
    }

    /// The text of the destination `url` goes to, without building one: what
    /// [`Destination::as_str`] of [`Destination::of`] answers.
    pub fn text_of(url: &WebhookUrl) -> &str {
        &url.url()[..Position::AfterPort]
    }

    /// The destination as text, `scheme://host[:port]`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&WebhookUrl> for Destination {
    fn from(url: &WebhookUrl) -> Self {
        Destination::of(url)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Destination({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stores' expression: the serialised URL up to the first `/` after `://`, or all of
    /// it.
    fn as_stored(url: &WebhookUrl) -> &str {
        let text = url.as_str();
        let host = text.find("://").expect("a scheme") + 3;
        match text[host..].find('/') {
            Some(slash) => &text[..host + slash],
            None => text,
        }
    }

    /// Awkward URLs normalise as a destination should, and the stores' text expression
    /// agrees with the type on each.
    #[test]
    fn destinations_normalise_and_agree_with_the_stored_expression() {
        for (url, expected) in [
            ("http://example.com/hook", "http://example.com"),
            ("HTTPS://Example.COM/a/b?c=d#e", "https://example.com"),
            ("http://example.com:80/x", "http://example.com"),
            ("https://example.com:443/x", "https://example.com"),
            ("http://example.com:443/x", "http://example.com:443"),
            ("https://example.com:8443", "https://example.com:8443"),
            ("http://example.com?token=a/b", "http://example.com"),
            ("http://example.com#frag/ment", "http://example.com"),
            ("http://127.0.0.1:9000/h", "http://127.0.0.1:9000"),
            ("http://[::1]:8080/h", "http://[::1]:8080"),
            ("http://[0:0:0:0:0:0:0:1]/h", "http://[::1]"),
            ("https://[2001:DB8::1]:443/h?x=1", "https://[2001:db8::1]"),
            ("http://example.com./h", "http://example.com."),
            (
                "http://sub.example.com:65535/",
                "http://sub.example.com:65535",
            ),
        ] {
            let parsed = WebhookUrl::parse(url).unwrap();
            let destination = Destination::of(&parsed);
            assert_eq!(destination.as_str(), expected, "{url}");
            assert_eq!(as_stored(&parsed), expected, "{url} as stored");
        }
        // A stored URL from before the pattern (an international name) is still one.
        let stored = WebhookUrl::from_stored("http://bücher.example/x").unwrap();
        assert_eq!(
            Destination::of(&stored).as_str(),
            "http://xn--bcher-kva.example"
        );
        assert_eq!(as_stored(&stored), "http://xn--bcher-kva.example");
    }

    /// Paths, queries and fragments do not make another destination; ports and schemes do.
    #[test]
    fn only_scheme_host_and_port_tell_destinations_apart() {
        let d = |u: &str| Destination::of(&WebhookUrl::parse(u).unwrap());
        assert_eq!(d("http://a.example/x?y"), d("http://A.example:80/z#w"));
        assert_ne!(d("http://a.example/"), d("https://a.example/"));
        assert_ne!(d("http://a.example/"), d("http://a.example:81/"));
        assert_ne!(d("http://a.example/"), d("http://b.example/"));
    }
}
