//! Refused calls (bad or missing tokens, a name taken over without its token) are logged at
//! warn with the caller's address, at most [`PER_WINDOW`] lines per [`WINDOW`]: a client
//! hammering the coordinator with bad tokens is visible without flooding the log. The count
//! of lines left out is logged when the next window opens.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tracing::warn;

pub const PER_WINDOW: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RefusalLog {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    logged: u32,
    left_out: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                opened: Instant::now(),
                logged: 0,
                left_out: 0,
            }),
        }
    }
}

/// Whether a status refuses the caller (as opposed to a bad request or a server fault).
pub fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied | Code::AlreadyExists
    )
}

impl RefusalLog {
    /// Logs `status` if it refuses the caller, within the rate limit; returns it unchanged.
    pub fn note(&self, method: &str, peer: Option<SocketAddr>, status: Status) -> Status {
        if is_refusal(&status) && self.admit(Instant::now()) {
            let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            warn!(method, %peer, code = ?status.code(), reason = status.message(), "call refused");
        }
        status
    }

    /// Whether a refusal at `now` may be logged; reports the lines left out of the last window.
    fn admit(&self, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(w.opened) >= WINDOW {
            if w.left_out > 0 {
                warn!(left_out = w.left_out, window = ?WINDOW, "more calls were refused than logged");
            }
            *w = Window {
                opened: now,
                logged: 0,
                left_out: 0,
            };
        }
        if w.logged < PER_WINDOW {
            w.logged += 1;
            true
        } else {
            w.left_out += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_a_window_of_lines_then_a_count() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let admitted = (0..25).filter(|_| log.admit(t0)).count();
        assert_eq!(admitted, PER_WINDOW as usize);
        assert_eq!(log.window.lock().unwrap().left_out, 15);
        // A new window admits again and starts a new count.
        assert!(log.admit(t0 + WINDOW));
        assert_eq!(log.window.lock().unwrap().left_out, 0);
    }

    #[test]
    fn only_refusals_count() {
        assert!(is_refusal(&Status::unauthenticated("x")));
        assert!(is_refusal(&Status::permission_denied("x")));
        assert!(!is_refusal(&Status::invalid_argument("x")));
        assert!(!is_refusal(&Status::internal("x")));
    }
}
