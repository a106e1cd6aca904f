//! Buffering a request body that a policy needs to see, as Envoy's Proxy-Wasm host allows it.
//!
//! In Envoy (proxy-wasm-cpp-host, ABI 0.2.x) a Pause from `on_request_headers` becomes
//! `StopAllIterationAndWatermark`: the body is held back from this filter too, so a filter that
//! paused its headers to wait for the body would never see it. The filter therefore lets the
//! headers continue and pauses in `on_request_body` (Envoy's `StopIterationAndBuffer`) until the
//! whole body is there; each call then reports the cumulative buffered size.

/// What to do after a body callback reporting `buffered` bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyStep {
    /// Over the policy's limit: answer 413 now, without reading or waiting for the rest.
    TooLarge,
    /// More is coming: keep buffering.
    Wait,
    /// The body is complete: read it and decide.
    Decide,
}

/// The step for a body of at most `max_bytes` after a callback with `buffered` bytes.
pub(crate) fn body_step(max_bytes: usize, buffered: usize, end_of_stream: bool) -> BodyStep {
    if buffered > max_bytes {
        BodyStep::TooLarge
    } else if end_of_stream {
        BodyStep::Decide
    } else {
        BodyStep::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_end_of_the_stream() {
        assert_eq!(body_step(100, 10, false), BodyStep::Wait);
        assert_eq!(body_step(100, 10, true), BodyStep::Decide);
    }

    #[test]
    fn a_body_of_exactly_the_limit_is_accepted() {
        assert_eq!(body_step(100, 100, true), BodyStep::Decide);
    }

    #[test]
    fn rejects_as_soon_as_the_limit_is_passed_even_mid_stream() {
        assert_eq!(body_step(100, 101, false), BodyStep::TooLarge);
        assert_eq!(body_step(100, 101, true), BodyStep::TooLarge);
    }

    #[test]
    fn an_empty_final_body_is_decided() {
        assert_eq!(body_step(0, 0, true), BodyStep::Decide);
    }
}
