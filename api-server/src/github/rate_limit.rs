//! What GitHub said about the rate limit, and the back-off it implies.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

#[derive(Debug, Default)]
struct State {
    remaining: Option<u64>,
    reset_epoch: Option<u64>,
    blocked_until: Option<Instant>,
}

/// Rate-limit state shared by every call of a client.
#[derive(Debug, Default)]
pub struct RateLimits {
    state: Mutex<State>,
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RateLimits {
    /// Records `x-ratelimit-remaining` and `x-ratelimit-reset` of an answer. An exhausted
    /// limit blocks further calls until the reset.
    pub fn observe(&self, headers: &HeaderMap) {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut s = self.state.lock().expect("rate limits");
        if let Some(r) = num("x-ratelimit-remaining") {
            s.remaining = Some(r);
        }
        if let Some(r) = num("x-ratelimit-reset") {
            s.reset_epoch = Some(r);
        }
        if s.remaining == Some(0)
            && let Some(reset) = s.reset_epoch
        {
            let wait = Duration::from_secs(reset.saturating_sub(epoch_now()).max(1));
            s.blocked_until = Some(Instant::now() + wait);
        }
    }

    /// Blocks calls for `wait`.
    pub fn block(&self, wait: Duration) {
        let mut s = self.state.lock().expect("rate limits");
        let until = Instant::now() + wait;
        s.blocked_until = Some(s.blocked_until.map_or(until, |u| u.max(until)));
    }

    /// How long calls stay blocked, if they are.
    pub fn blocked_for(&self) -> Option<Duration> {
        let s = self.state.lock().expect("rate limits");
        s.blocked_until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// The last `x-ratelimit-remaining` seen.
    pub fn remaining(&self) -> Option<u64> {
        self.state.lock().expect("rate limits").remaining
    }

    /// When fewer than `reserve` calls remain: how long until the limit resets (the poller
    /// leaves that reserve to the UI's endpoints and the webhook).
    pub fn below_reserve(&self, reserve: u64) -> Option<Duration> {
        let s = self.state.lock().expect("rate limits");
        match (s.remaining, s.reset_epoch) {
            (Some(r), Some(reset)) if r < reserve && reset > epoch_now() => {
                Some(Duration::from_secs(reset - epoch_now()))
            }
            _ => None,
        }
    }
}
