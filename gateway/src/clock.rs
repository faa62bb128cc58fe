//! Wall-clock time as the gateway stores it: Unix seconds (token expiry, file timestamps, the
//! budget windows) and Unix milliseconds (key cool-downs). A clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Now, in Unix milliseconds.
pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
