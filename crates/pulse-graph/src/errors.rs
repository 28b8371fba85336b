//! What to do about a Graph API error, decided from `code`/`error_subcode` in one place.
//!
//! Meta's guidance: 1 and 2 are transient (retry); 4 (app), 17 (user), 32 (page), 613 (custom rate) and 80001
//! (pages business-use-case) are throttling (back off, honour `estimated_time_to_regain_access`); 190 is an invalid
//! or expired token (re-authorise; never retry); 10 and 200-299 are permissions; 100 is a bad parameter, and when its
//! message says "valid insights metric" it is a retired or unknown metric, which fails the whole request.

use crate::wire::GraphError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry with backoff.
    Transient,
    /// Back off; stop calling this page/app until the regain time has passed.
    Throttled,
    /// The page token is dead: mark the page as needing re-authorisation; do not retry.
    TokenDead,
    /// The token lacks a permission for this object: report, do not retry.
    Permission,
    /// One of the requested metrics is not valid in this API version: split the request to find it.
    InvalidMetric,
    /// Any other request Meta rejected: report, do not retry.
    BadRequest,
}

impl ErrorClass {
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::Throttled)
    }
}

pub fn classify(error: &GraphError) -> ErrorClass {
    match error.code {
        // Meta marks some code 1/2 errors as not transient; an explicit `false` is believed.
        1 | 2 if error.is_transient != Some(false) => ErrorClass::Transient,
        4 | 17 | 32 | 613 | 80001 => ErrorClass::Throttled,
        190 => ErrorClass::TokenDead,
        10 | 200..=299 => ErrorClass::Permission,
        100 if error.message.contains("valid insights metric") => ErrorClass::InvalidMetric,
        _ if error.is_transient == Some(true) => ErrorClass::Transient,
        _ => ErrorClass::BadRequest,
    }
}

/// The HTTP status Meta sends with each error code.
pub fn http_status(code: i64) -> u16 {
    match code {
        1 | 2 => 500,
        4 | 17 | 32 | 613 | 80001 => 403,
        190 => 400,
        10 | 200..=299 => 403,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i64, message: &str) -> GraphError {
        GraphError {
            message: message.into(),
            kind: "OAuthException".into(),
            code,
            error_subcode: None,
            is_transient: None,
            error_user_title: None,
            error_user_msg: None,
            fbtrace_id: "x".into(),
        }
    }

    #[test]
    fn every_documented_code_has_its_class() {
        for code in [1, 2] {
            assert_eq!(classify(&err(code, "An unknown error occurred")), ErrorClass::Transient);
        }
        for code in [4, 17, 32, 613, 80001] {
            assert_eq!(classify(&err(code, "(#4) Application request limit reached")), ErrorClass::Throttled);
        }
        assert_eq!(classify(&err(190, "Error validating access token")), ErrorClass::TokenDead);
        for code in [10, 200, 230, 299] {
            assert_eq!(classify(&err(code, "(#200) Permissions error")), ErrorClass::Permission);
        }
        assert_eq!(classify(&err(100, "(#100) The value must be a valid insights metric")), ErrorClass::InvalidMetric);
        assert_eq!(classify(&err(100, "(#100) Invalid parameter")), ErrorClass::BadRequest);
        let mut t = err(99, "odd");
        t.is_transient = Some(true);
        assert_eq!(classify(&t), ErrorClass::Transient);
        let mut not = err(2, "Service temporarily unavailable");
        assert_eq!(classify(&not), ErrorClass::Transient, "code 2 without the flag is transient");
        not.is_transient = Some(false);
        assert_eq!(classify(&not), ErrorClass::BadRequest, "an explicit is_transient: false is not retried");
        assert!(ErrorClass::Throttled.is_retryable() && !ErrorClass::TokenDead.is_retryable());
    }
}
