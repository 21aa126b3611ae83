//! Who is on a SASL connection, for scoping the dedup cache.
//!
//! The proxy forwards authentication untouched; it only reads the user name
//! a client offers (PLAIN: the authentication identity; SCRAM: `n=` of the
//! client-first message) and adopts it once the broker has completed the
//! exchange successfully. Mechanisms whose principal cannot be read this way
//! (GSSAPI, OAUTHBEARER, ...) scope the cache to the connection itself.

use crate::codec::header::{
    parse_request_header_auto, parse_response_header, response_header_version,
};
use crate::codec::primitives::{parse_i16, parse_nullable_bytes, parse_string};

use crate::codec::api::SASL_AUTHENTICATE;

/// The mechanism a SaslHandshake request (any version) asks for.
pub fn handshake_mechanism(body: &[u8]) -> Option<String> {
    let (_, rest) = parse_request_header_auto(body).ok()?;
    parse_string(rest, false).ok().map(|(_, m)| m)
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

/// The auth bytes of a SaslAuthenticate request (v0-v2).
pub fn authenticate_token(body: &[u8]) -> Option<Vec<u8>> {
    let (h, rest) = parse_request_header_auto(body).ok()?;
    let (_, b) = parse_nullable_bytes(rest, h.api_version >= 2).ok()?;
    b.map(<[u8]>::to_vec)
}

/// Whether a SaslAuthenticate response reports success.
pub fn authenticate_succeeded(body: &[u8], version: i16) -> bool {
    let hv = response_header_version(SASL_AUTHENTICATE, version);
    parse_response_header(body, hv)
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
    fn only_mechanisms_with_readable_users_have_rounds() {
        assert_eq!(rounds("PLAIN"), Some(1));
        assert_eq!(rounds("SCRAM-SHA-512"), Some(2));
        assert_eq!(rounds("OAUTHBEARER"), None);
    }
}
