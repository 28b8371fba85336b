//! The application layer's typed error: what went wrong, in words a user can act on, and which kind of failure it
//! is, so each surface maps it once (the CLI to an exit code, the server to an HTTP status and a JSON body).

use pulse_config::AccessDenied;

/// Which kind of failure: decides the HTTP status and whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (unknown metric, bad date, a practice of another tenant): fix it and retry.
    BadRequest,
    /// No credentials, or credentials that are unknown, expired or revoked.
    Unauthenticated,
    /// The credentials are good but do not allow this (a tenant not granted, a scope not held).
    Forbidden,
    /// The thing asked for does not exist (an unknown report, a key id).
    NotFound,
    /// The data is not there yet (reports never computed): run the job named in the message.
    NotReady,
    /// The request clashes with what is recorded (a campaign name already registered): change it, not retry.
    Conflict,
    /// Too many requests for this key: wait and retry.
    RateLimited,
    /// The store (or another dependency) cannot be reached or failed: retry later; nothing was lost.
    Unavailable,
    /// A defect: logged with its detail, answered without it.
    Internal,
}

/// An error from the application layer. `message` says what and where; `hint` says what to do next.
#[derive(Debug, Clone)]
pub struct AppError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// The request field at fault, when there is one (`metrics[2]`, `date_range`).
    pub field: Option<String>,
    /// Seconds until a retry can succeed (rate limits).
    pub retry_after: Option<u64>,
}

impl AppError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), hint: None, field: None, retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::NotReady => 409,
            ErrorKind::Conflict => 409,
            ErrorKind::RateLimited => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// A short machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AppError {}

impl From<AccessDenied> for AppError {
    fn from(e: AccessDenied) -> Self {
        let kind = match e {
            AccessDenied::InvalidTenant { .. } => ErrorKind::BadRequest,
            // An unknown tenant and one not granted read the same to a key holder: nothing says which exist.
            AccessDenied::UnknownTenant(_) | AccessDenied::OtherTenant { .. } | AccessDenied::NotGranted(_) => {
                ErrorKind::Forbidden
            }
            AccessDenied::ReadOnly(_) => ErrorKind::Forbidden,
        };
        AppError::new(kind, e.to_string())
    }
}

/// A store error is the caller's fault only when it refused invalid input; otherwise the store is unavailable.
fn store_kind(e: &pulse_store::StoreError) -> ErrorKind {
    match e {
        pulse_store::StoreError::Invalid { .. } => ErrorKind::BadRequest,
        _ => ErrorKind::Unavailable,
    }
}

impl From<pulse_store::StoreError> for AppError {
    fn from(e: pulse_store::StoreError) -> Self {
        AppError::new(store_kind(&e), format!("{e}"))
    }
}

/// Errors from below the application layer that are not the caller's fault: the store failing, a file unreadable.
impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(app) = e.downcast_ref::<AppError>() {
            return app.clone();
        }
        if let Some(store) = e.downcast_ref::<pulse_store::StoreError>() {
            return AppError::new(store_kind(store), format!("{e:#}"));
        }
        if let Some(denied) = e.downcast_ref::<AccessDenied>() {
            return AppError::from(denied.clone());
        }
        AppError::new(ErrorKind::Internal, format!("{e:#}"))
    }
}

pub type AppResult<T> = Result<T, AppError>;
