//! Follows a connection's SASL exchange to learn its user, which scopes the
//! dedup cache (the bytes are read by `codec::sasl`; authentication itself
//! is forwarded untouched).
//!
//! From the handshake on, the connection only meets its own batches; once
//! the broker accepted the exchange, the user it names becomes the scope.
//! Mechanisms whose user cannot be read (GSSAPI, OAUTHBEARER) keep the
//! connection scope.

use std::sync::{Arc, Mutex};

use crate::codec::sasl;
use crate::dedup::cache::Scope;

/// SASL state of one connection.
pub(in crate::proxy) struct SaslTracker {
    id: u64,
    /// Shared with response handling, which adopts the user.
    scope: Arc<Mutex<Scope>>,
    /// Raw, header-less tokens still expected after a SaslHandshake v0.
    tokens_left: usize,
    progress: Option<Progress>,
}

struct Progress {
    mechanism: String,
    user: Option<Arc<str>>,
    rounds: usize,
}

/// Makes `user` a connection's scope once the broker accepted the round
/// that completes the exchange.
pub(in crate::proxy) struct Adoption {
    pub user: Arc<str>,
    pub scope: Arc<Mutex<Scope>>,
}

impl Adoption {
    pub fn adopt(self) {
        tracing::debug!(user = %self.user, "SASL authentication completed; dedup scoped to the user");
        *lock(&self.scope) = Scope::Principal(self.user);
    }
}

fn lock(scope: &Mutex<Scope>) -> std::sync::MutexGuard<'_, Scope> {
    scope.lock().unwrap_or_else(|e| e.into_inner())
}

impl SaslTracker {
    pub fn new(id: u64, scope: Scope) -> Self {
        SaslTracker {
            id,
            scope: Arc::new(Mutex::new(scope)),
            tokens_left: 0,
            progress: None,
        }
    }

    /// The dedup scope now.
    pub fn scope(&self) -> Scope {
        lock(&self.scope).clone()
    }

    /// Whether the next frame is a raw SaslHandshake v0 token.
    pub fn expects_raw_token(&self) -> bool {
        self.tokens_left > 0
    }

    /// A SaslHandshake for `mechanism` (any version): until the exchange
    /// completes, the connection only meets its own batches.
    pub fn started(&mut self, mechanism: String) {
        *lock(&self.scope) = Scope::Connection(self.id);
        self.progress = Some(Progress {
            mechanism,
            user: None,
            rounds: 0,
        });
    }

    /// After a SaslHandshake v0 was relayed: the raw tokens that follow.
    pub fn expect_raw_tokens(&mut self, n: usize) {
        self.tokens_left = n;
    }

    /// One raw v0 token: what to adopt if the broker accepts it and it is
    /// the last one.
    pub fn raw_token(&mut self, token: &[u8]) -> Option<Adoption> {
        self.tokens_left = self.tokens_left.saturating_sub(1);
        let adopt = self.round(Some(token));
        if self.tokens_left == 0 { adopt } else { None }
    }

    /// One client token (SaslAuthenticate, or a raw v0 token); returns the
    /// user to adopt if the broker accepts this round, which completes the
    /// exchange.
    pub fn round(&mut self, token: Option<&[u8]>) -> Option<Adoption> {
        let p = self.progress.as_mut()?;
        if p.rounds == 0 {
            p.user = token
                .and_then(|t| sasl::user_from_token(&p.mechanism, t))
                .map(Arc::from);
        }
        p.rounds += 1;
        let user = (sasl::rounds(&p.mechanism) == Some(p.rounds))
            .then(|| p.user.clone())
            .flatten()?;
        Some(Adoption {
            user,
            scope: Arc::clone(&self.scope),
        })
    }
}
