//! The one error type of the domain crate.

/// A value from outside (a config file, an API response, a command line) that does not fit the domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid practice code `{0}`: expected an ODS-style code of one letter and five digits, such as M83001")]
    PracticeCode(String),
    #[error("invalid tenant id `{0}`: use 1-64 lowercase letters, digits, `-` or `_`, starting with a letter")]
    TenantId(String),
    #[error("invalid page id `{0}`: a Facebook page id is 1-20 digits")]
    PageId(String),
    #[error("invalid post id `{0}`: expected `<page id>_<post number>`, both digits")]
    PostId(String),
    #[error(
        "invalid age/gender key `{0}`: expected a gender (F, M or U), a dot and an age band (13-17, 18-24, 25-34, 35-44, 45-54, 55-64 or 65+), such as F.25-34"
    )]
    AgeGenderKey(String),
    #[error("invalid age band `{0}`: expected one of 13-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65+")]
    AgeBand(String),
    #[error("invalid API version `{0}`: expected `v<major>.<minor>`, such as v25.0")]
    ApiVersion(String),
    #[error("invalid period `{0}`: expected one of day, week, days_28, lifetime")]
    Period(String),
    #[error("unknown canonical metric `{0}`; `pulse metrics` lists them")]
    CanonicalMetric(String),
    #[error("invalid end_time `{value}`: {reason}")]
    EndTime { value: String, reason: String },
    #[error("invalid page kind `{0}`: expected `official` or `claimed`")]
    PageKind(String),
    #[error("invalid stream `{0}`")]
    Stream(String),
}
