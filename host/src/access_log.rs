//! One JSON line per request on stdout, like an Envoy JSON access log, with the filter-state
//! values the config names (e.g. the model and outcome a filter reports).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde_json::{Map, Value};

use crate::conn_info::ConnInfo;

/// What one request did; filled in along the data path. Every request fills one, with the
/// access log on or off, so the fields it always sets are cheap to copy: the method and the
/// route and cluster names are shared, not cloned `String`s (three allocations per request
/// before), and the listener and client come from the connection when a line is written.
#[derive(Debug, Default)]
pub(crate) struct AccessEntry {
    pub start: Option<SystemTime>,
    pub request_id: String,
    pub method: Method,
    /// Filled only when the access log is on.
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub route: Arc<str>,
    pub cluster: Arc<str>,
    /// Filled only when the access log is on.
    pub endpoint: String,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Why the gateway answered itself, when it did (`no_route`, `upstream_timeout`, ...).
    pub detail: Option<&'static str>,
}

impl AccessEntry {
    /// The JSON line of a request on `conn`, with `fields` (access-log field -> filter state
    /// key) looked up in `state`.
    pub(crate) fn to_json(
        &self,
        conn: &ConnInfo,
        fields: &BTreeMap<String, String>,
        state: &[(String, Vec<u8>)],
    ) -> Value {
        let mut line = Map::new();
        line.insert(
            "time".into(),
            rfc3339(self.start.unwrap_or_else(SystemTime::now)).into(),
        );
        line.insert("request_id".into(), self.request_id.clone().into());
        line.insert("listener".into(), conn.listener.clone().into());
        line.insert("method".into(), self.method.as_str().into());
        line.insert("path".into(), self.path.clone().into());
        line.insert("protocol".into(), self.protocol.into());
        line.insert("status".into(), self.status.into());
        line.insert("route".into(), (*self.route).into());
        line.insert("cluster".into(), (*self.cluster).into());
        line.insert("endpoint".into(), self.endpoint.clone().into());
        line.insert("duration_ms".into(), millis(self.duration).into());
        line.insert(
            "upstream_ms".into(),
            self.upstream.map_or(Value::Null, |d| millis(d).into()),
        );
        line.insert("bytes_received".into(), self.bytes_received.into());
        line.insert("bytes_sent".into(), self.bytes_sent.into());
        line.insert("client".into(), conn.source.to_string().into());
        if let Some(detail) = self.detail {
            line.insert("detail".into(), detail.into());
        }
        for (field, key) in fields {
            if let Some((_, value)) = state.iter().find(|(k, _)| k == key) {
                line.insert(
                    field.clone(),
                    String::from_utf8_lossy(value).into_owned().into(),
                );
            }
        }
        Value::Object(line)
    }

    pub(crate) fn write(
        &self,
        conn: &ConnInfo,
        fields: &BTreeMap<String, String>,
        state: &[(String, Vec<u8>)],
    ) {
        let mut line = self.to_json(conn, fields, state).to_string();
        line.push('\n');
        // One write per line so concurrent requests never interleave within a line.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `YYYY-MM-DDThh:mm:ss.mmmZ` in UTC.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_798_761_599)),
            "2026-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn prints_configured_filter_state_fields() {
        let entry = AccessEntry {
            request_id: "r1".into(),
            status: 200,
            upstream: Some(Duration::from_micros(1500)),
            ..AccessEntry::default()
        };
        let fields = BTreeMap::from([
            ("model".to_owned(), "wasm.model".to_owned()),
            ("outcome".to_owned(), "wasm.outcome".to_owned()),
        ]);
        let conn = ConnInfo {
            listener: "main".into(),
            listener_index: 0,
            source: "10.0.0.7:5000".parse().unwrap(),
            destination: "127.0.0.1:8080".parse().unwrap(),
            connection_id: 1,
            tls: false,
        };
        let state = [("wasm.model".into(), b"iris".to_vec())];
        let json = entry.to_json(&conn, &fields, &state);
        assert_eq!(json["model"], "iris");
        assert_eq!(json["listener"], "main");
        assert_eq!(json["client"], "10.0.0.7:5000");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["route"], "");
        assert!(json.get("outcome").is_none());
        assert_eq!(json["status"], 200);
        assert_eq!(json["upstream_ms"], 1.5);
        assert_eq!(json["request_id"], "r1");
    }
}
