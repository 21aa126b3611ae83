//! SASL bytes the proxy reads to learn who is on a connection (to scope
//! the dedup cache): the mechanism of a SaslHandshake request
//! (`SaslHandshakeRequest.json`), the auth bytes of a SaslAuthenticate
//! request and its response's error code (`SaslAuthenticate*.json`), and the
//! user name inside a mechanism's first client token (PLAIN: RFC 4616;
//! SCRAM: RFC 5802). Authentication itself is forwarded untouched.

use super::api::SASL_AUTHENTICATE;
use super::header::{parse_response_header, response_header_version};
use super::primitives::{parse_i16, parse_nullable_bytes, parse_string};

/// The mechanism a SaslHandshake request (any version) asks for; `body` is
/// what follows the request header.
pub fn parse_handshake_mechanism(body: &[u8]) -> Option<String> {
    parse_string(body, false).ok().map(|(_, m)| m)
}

/// How many opaque, header-less token round trips follow a SaslHandshake
/// v0 for `mechanism` (PLAIN and OAUTHBEARER one, SCRAM two). `None` for
/// mechanisms whose number of rounds cannot be known from outside.
pub fn handshake_v0_token_rounds(mechanism: &str) -> Option<usize> {
    match mechanism {
        "PLAIN" | "OAUTHBEARER" => Some(1),
        m if m.starts_with("SCRAM-") => Some(2),
        _ => None,
    }
}

/// Round trips a successful exchange takes, for the mechanisms whose user
/// name the proxy reads.
pub fn rounds(mechanism: &str) -> Option<usize> {
    match mechanism {
        "PLAIN" => Some(1),
        m if m.starts_with("SCRAM-") => Some(2),
        _ => None,
    }
}

/// The user name in a mechanism's first client token.
pub fn user_from_token(mechanism: &str, token: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(token).ok()?;
    match mechanism {
        // [authzid] NUL authcid NUL passwd (RFC 4616).
        "PLAIN" => {
            let mut parts = text.split('\0');
            let _authzid = parts.next()?;
            let authcid = parts.next()?;
            parts.next()?;
            (!authcid.is_empty()).then(|| authcid.to_string())
        }
        // gs2-header "n,," then "n=user,r=nonce" (RFC 5802), with ',' and
        // '=' escaped as =2C and =3D.
        m if m.starts_with("SCRAM-") => {
            let mut fields = text.splitn(4, ',');
            let _gs2_flag = fields.next()?;
            let _authzid = fields.next()?;
            let user = fields.next()?.strip_prefix("n=")?;
            (!user.is_empty()).then(|| user.replace("=2C", ",").replace("=3D", "="))
        }
        _ => None,
    }
}

/// The auth bytes of a SaslAuthenticate request (v0-v2); `body` is what
/// follows the request header.
pub fn parse_authenticate_token(body: &[u8], version: i16) -> Option<Vec<u8>> {
    let flexible = super::api::is_flexible(SASL_AUTHENTICATE, version);
    let (_, b) = parse_nullable_bytes(body, flexible).ok()?;
    b.map(<[u8]>::to_vec)
}

/// Whether a SaslAuthenticate response (header included) reports success.
pub fn authenticate_succeeded(body: &[u8], version: i16) -> bool {
    let header_version = response_header_version(SASL_AUTHENTICATE, version);
    parse_response_header(body, header_version)
        .ok()
        .and_then(|(rest, _)| parse_i16(rest).ok())
        .is_some_and(|(_, code)| code == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_token_gives_the_authentication_identity() {
        assert_eq!(
            user_from_token("PLAIN", b"\0alice\0secret").as_deref(),
            Some("alice")
        );
        assert_eq!(
            user_from_token("PLAIN", b"admin\0alice\0secret").as_deref(),
            Some("alice")
        );
        assert_eq!(user_from_token("PLAIN", b"alice"), None);
        assert_eq!(user_from_token("PLAIN", b"\0\0pw"), None);
    }

    #[test]
    fn scram_client_first_gives_the_user_name_unescaped() {
        let t = b"n,,n=bob=2Cjr=3D,r=fyko+d2lbbFgONRv9qkxdawL";
        assert_eq!(
            user_from_token("SCRAM-SHA-256", t).as_deref(),
            Some("bob,jr=")
        );
        assert_eq!(user_from_token("SCRAM-SHA-512", b"n,,r=abc"), None);
        assert_eq!(user_from_token("GSSAPI", b"n,,n=x,r=y"), None);
    }

    #[test]
    fn handshake_v0_rounds_are_known_for_token_mechanisms_only() {
        assert_eq!(handshake_v0_token_rounds("PLAIN"), Some(1));
        assert_eq!(handshake_v0_token_rounds("OAUTHBEARER"), Some(1));
        assert_eq!(handshake_v0_token_rounds("SCRAM-SHA-256"), Some(2));
        assert_eq!(handshake_v0_token_rounds("GSSAPI"), None);
    }

    #[test]
    fn mechanism_and_token_are_read_after_the_header() {
        assert_eq!(
            parse_handshake_mechanism(&[0, 5, b'P', b'L', b'A', b'I', b'N']).as_deref(),
            Some("PLAIN")
        );
        assert_eq!(parse_handshake_mechanism(&[0, 9, b'P']), None);
        // v0-v1: int32 length; v2: compact (length + 1).
        assert_eq!(
            parse_authenticate_token(&[0, 0, 0, 2, b'h', b'i'], 1).as_deref(),
            Some(&b"hi"[..])
        );
        assert_eq!(
            parse_authenticate_token(&[3, b'h', b'i', 0], 2).as_deref(),
            Some(&b"hi"[..])
        );
    }

    #[test]
    fn only_mechanisms_with_readable_users_have_rounds() {
        assert_eq!(rounds("PLAIN"), Some(1));
        assert_eq!(rounds("SCRAM-SHA-512"), Some(2));
        assert_eq!(rounds("OAUTHBEARER"), None);
    }
}
