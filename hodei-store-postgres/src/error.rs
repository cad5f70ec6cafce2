//! Errors of this crate and the mapping of database errors to [`StoreError`].

use hodei_core::store::StoreError;

/// Errors of setting up the Postgres store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// A configuration value is missing or malformed.
    #[error("invalid Postgres store configuration: {0}")]
    Config(String),
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    /// Running the embedded migrations failed.
    #[error("Postgres migrations failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// SQLSTATE codes that mean "this value cannot be stored".
const INVALID_VALUE_CODES: &[&str] = &[
    "22001", // string_data_right_truncation
    "22003", // numeric_value_out_of_range
    "22021", // character_not_in_repertoire (invalid byte sequence, e.g. NUL in text)
    "22P02", // invalid_text_representation
    "22P05", // untranslatable_character (\u0000 in jsonb)
    "2200D", // invalid_escape_octet
    "22023", // invalid_parameter_value
    "54000", // program_limit_exceeded (row, index entry or jsonb too large)
    "54001", // statement_too_complex
];

/// Whether a SQLSTATE class means the server or the connection is gone.
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "53300" // too_many_connections
        || code == "53000" // insufficient_resources
        || code == "25006" // read_only_sql_transaction (standby)
}

/// Maps a database error to a [`StoreError`]. `field` names what the statement
/// was storing, for [`StoreError::Invalid`].
pub(crate) fn map_err(field: &str, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if INVALID_VALUE_CODES.contains(&code.as_str()) {
                StoreError::Invalid {
                    field: field.to_owned(),
                    message: format!("rejected by the database ({code}): {}", db.message()),
                }
            } else if is_unavailable_code(&code) {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Backend(e.to_string())
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Encode(_) => StoreError::Invalid {
            field: field.to_owned(),
            message: e.to_string(),
        },
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Whether `e` is a unique violation on `constraint` (any constraint if `None`).
pub(crate) fn is_unique_violation(e: &sqlx::Error, constraint: Option<&str>) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505")
                && constraint.is_none_or(|c| db.constraint() == Some(c))
        }
        _ => false,
    }
}

/// A (de)serialization failure of a stored value.
pub(crate) fn codec(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("cannot decode/encode stored {what}: {e}"))
}

/// A value outside the range the schema can hold.
pub(crate) fn out_of_range(field: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        field: field.to_owned(),
        message: format!("{value} is out of the range the database can store"),
    }
}

/// `u64` to `i64` for a column, or [`StoreError::Invalid`].
pub(crate) fn to_i64(field: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| out_of_range(field, v))
}

/// `u32` to `i32` for a column, or [`StoreError::Invalid`].
pub(crate) fn to_i32(field: &str, v: u32) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| out_of_range(field, v))
}

/// A stored `bigint` back to `u64` (never negative in our rows).
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
