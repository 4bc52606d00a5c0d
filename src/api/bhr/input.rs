//! Request bodies and fields, with Django REST framework's rules and messages.
//!
//! Bodies may be JSON or form-encoded (the Python client's `block()` sends a form); both
//! become one JSON object to validate. Field checks follow DRF: `CharField` trims
//! whitespace and refuses blank or over-long text, `BooleanField` takes DRF's spellings of
//! true and false, and every message is DRF's.

use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::bhr::duration;
use crate::bhr::registry::NewBlock;
use crate::time::Time;

use super::error::{ApiError, FieldErrors};

/// Parses a request body into JSON: a JSON document, or a form turned into an object
/// (a key given more than once becomes a list). An empty body is an empty object.
///
/// # Errors
/// 400 for malformed JSON, 415 for other content types.
pub fn body(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if bytes.is_empty() && (mime.is_empty() || mime != "application/json") {
        return Ok(Value::Object(Map::new()));
    }
    match mime.as_str() {
        "application/json" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("JSON parse error - {e}"))),
        "application/x-www-form-urlencoded" | "" => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
                .map_err(|e| ApiError::BadRequest(format!("Form parse error - {e}")))?;
            let mut m = Map::new();
            for (k, v) in pairs {
                match m.get_mut(&k) {
                    Some(Value::Array(a)) => a.push(Value::String(v)),
                    Some(old) => {
                        let first = old.take();
                        *old = Value::Array(vec![first, Value::String(v)]);
                    }
                    None => {
                        m.insert(k, Value::String(v));
                    }
                }
            }
            Ok(Value::Object(m))
        }
        other => Err(ApiError::UnsupportedMediaType(other.to_string())),
    }
}

/// The object a single-record endpoint needs.
///
/// # Errors
/// DRF's "Invalid data" error when the body is not an object.
pub fn object(v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        other => {
            let kind = match other {
                Value::Array(_) => "list",
                Value::String(_) => "str",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "int",
                Value::Bool(_) => "bool",
                _ => "NoneType",
            };
            Err(ApiError::Invalid(FieldErrors::one(
                "non_field_errors",
                format!("Invalid data. Expected a dictionary, but got {kind}."),
            )))
        }
    }
}

/// A `CharField`: trimmed text, required or not, blank or not, with a maximum length.
pub fn text(
    m: &Map<String, Value>,
    name: &str,
    required: bool,
    allow_blank: bool,
    max: Option<usize>,
    errors: &mut FieldErrors,
) -> Option<String> {
    let raw = match m.get(name) {
        None => {
            if required {
                errors.add(name, "This field is required.");
            }
            return None;
        }
        Some(Value::Null) => {
            errors.add(name, "This field may not be null.");
            return None;
        }
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(a)) if a.last().is_some_and(Value::is_string) => {
            // A form key given twice: the last value wins, as in Django's QueryDict.
            a.last()
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Some(_) => {
            errors.add(name, "Not a valid string.");
            return None;
        }
    };
    if raw.is_empty() && !allow_blank {
        errors.add(name, "This field may not be blank.");
        return None;
    }
    if let Some(max) = max
        && raw.chars().count() > max
    {
        errors.add(
            name,
            format!("Ensure this field has no more than {max} characters."),
        );
        return None;
    }
    Some(raw)
}

/// A `BooleanField` with a default.
pub fn boolean(
    m: &Map<String, Value>,
    name: &str,
    default: bool,
    errors: &mut FieldErrors,
) -> bool {
    const TRUE: [&str; 9] = ["t", "T", "y", "Y", "yes", "true", "on", "1", "True"];
    const FALSE: [&str; 9] = ["f", "F", "n", "N", "no", "false", "off", "0", "False"];
    let v = match m.get(name) {
        None => return default,
        Some(Value::Array(a)) => a.last().cloned().unwrap_or(Value::Null),
        Some(v) => v.clone(),
    };
    match v {
        Value::Bool(b) => b,
        Value::Number(n) if n.as_i64() == Some(1) => true,
        Value::Number(n) if n.as_i64() == Some(0) => false,
        Value::String(s) => {
            let t = s.trim();
            let low = t.to_ascii_lowercase();
            if TRUE.contains(&t) || TRUE.contains(&low.as_str()) {
                true
            } else if FALSE.contains(&t) || FALSE.contains(&low.as_str()) {
                false
            } else {
                errors.add(name, "Must be a valid boolean.");
                default
            }
        }
        Value::Null => {
            errors.add(name, "This field may not be null.");
            default
        }
        _ => {
            errors.add(name, "Must be a valid boolean.");
            default
        }
    }
}

/// Parses a network as Python's `ipaddress.ip_network` (strict) does: an address is a
/// host network, host bits set is an error. Messages are Python's.
///
/// An IPv4-mapped address or network is the IPv4 one (`::ffff:a.b.c.d/(96+n)` is
/// `a.b.c.d/n`), so every IPv4 rule applies to it.
pub fn network(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(crate::addr::canonical_ip(ip)));
    }
    match t.parse::<IpNet>() {
        Ok(n) if n.trunc() == n => Ok(crate::addr::canonical_net(n)),
        Ok(_) => Err(format!("{t} has host bits set")),
        Err(_) => Err(format!(
            "'{t}' does not appear to be an IPv4 or IPv6 network"
        )),
    }
}

/// Parses a timestamp the way people and BHR clients write them: RFC 3339
/// (`2026-11-21T13:51:58.70Z`), the same with a space, Python's `str(datetime)`
/// (`2026-11-21 13:51:53.360815+00:00`), naive date-times (UTC), or a bare date.
pub fn timestamp(text: &str) -> Option<Time> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    let t = text.trim();
    let to_time = |d: DateTime<Utc>| Time::from_micros(d.timestamp_micros());
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(to_time(d.with_timezone(&Utc)));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Some(to_time(d.with_timezone(&Utc)));
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(to_time(d.and_utc()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|d| to_time(d.and_utc()));
    }
    None
}

/// Validates one block request (`BlockRequestSerializer`, bhr.md §6). Field errors come
/// in the serializer's field order; the object-level checks (whitelist, prefix, source
/// blacklist) are the registry's and run later.
///
/// One difference from BHR: `unblock_at` can be given instead of `duration` (BHR requires
/// `duration`, which makes `unblock_at` unusable). Giving both is still an error.
pub fn block_request(
    m: &Map<String, Value>,
    who: crate::bhr::model::UserId,
) -> Result<NewBlock, FieldErrors> {
    let mut e = FieldErrors::default();
    let cidr_text = text(m, "cidr", true, false, Some(50), &mut e);
    let cidr = match &cidr_text {
        Some(t) => match network(t) {
            Ok(n) => Some(n),
            Err(msg) => {
                e.add("cidr", msg);
                None
            }
        },
        None => None,
    };
    let source = text(m, "source", true, false, Some(30), &mut e);
    let why = text(m, "why", true, false, None, &mut e);
    let has_until = m.get("unblock_at").is_some_and(|v| !v.is_null());
    let duration_text = text(m, "duration", !has_until, false, None, &mut e);
    let seconds = duration_text.as_deref().and_then(|d| {
        match duration::parse(d) {
            None => {
                e.add("duration", "Invalid duration");
                None
            }
            // BHR takes these and makes a block that ended before it began.
            Some(s) if s < 0 => {
                e.add(
                    "duration",
                    "Ensure this value is greater than or equal to 0.",
                );
                None
            }
            s => s,
        }
    });
    let until = if has_until {
        match text(m, "unblock_at", false, false, None, &mut e) {
            Some(t) => match timestamp(&t) {
                Some(u) => Some(u),
                None => {
                    e.add(
                        "unblock_at",
                        "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].",
                    );
                    None
                }
            },
            None => None,
        }
    } else {
        None
    };
    let skip_whitelist = boolean(m, "skip_whitelist", false, &mut e);
    let autoscale = boolean(m, "autoscale", false, &mut e);
    let extend = boolean(m, "extend", true, &mut e);
    if !e.is_empty() {
        return Err(e);
    }
    if duration_text.is_some() && has_until {
        return Err(FieldErrors::one(
            "non_field_errors",
            "Specify only one of duration and unblock_at",
        ));
    }
    let (Some(cidr), Some(mut cidr_text), Some(source), Some(why)) = (cidr, cidr_text, source, why)
    else {
        return Err(FieldErrors::one("non_field_errors", "Invalid data."));
    };
    // An IPv4-mapped request is echoed as the IPv4 network it is.
    if cidr.addr().is_ipv4() && cidr_text.contains(':') {
        cidr_text = if cidr.prefix_len() == 32 {
            cidr.addr().to_string()
        } else {
            cidr.to_string()
        };
    }
    Ok(NewBlock {
        cidr,
        cidr_text,
        who,
        source,
        why,
        seconds: seconds.unwrap_or(0),
        until,
        skip_whitelist,
        extend,
        autoscale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        object(v).unwrap()
    }

    fn errors(v: Value) -> Value {
        block_request(&obj(v), 1).unwrap_err().to_json()
    }

    #[test]
    fn missing_fields_in_serializer_order() {
        assert_eq!(
            errors(json!({"cidr": "192.0.2.1"})),
            json!({"source":["This field is required."],"why":["This field is required."],"duration":["This field is required."]})
        );
    }

    #[test]
    fn field_messages_are_drfs() {
        assert_eq!(
            errors(json!({"cidr":"192.0.2.1","source":"s","why":"w","duration":"5w"})),
            json!({"duration":["Invalid duration"]})
        );
        assert_eq!(
            errors(json!({"cidr":"192.0.2.1","source":"a".repeat(31),"why":"w","duration":"5"})),
            json!({"source":["Ensure this field has no more than 30 characters."]})
        );
        assert_eq!(
            errors(json!({"cidr":"192.0.2.1","source":"s","why":"  ","duration":"5"})),
            json!({"why":["This field may not be blank."]})
        );
        assert_eq!(
            errors(
                json!({"cidr":"192.0.2.1","source":"s","why":"w","duration":"5","autoscale":"maybe"})
            ),
            json!({"autoscale":["Must be a valid boolean."]})
        );
        assert_eq!(
            errors(
                json!({"cidr":"192.0.2.1","source":"s","why":"w","duration":"5","unblock_at":"2030-01-01T00:00:00Z"})
            ),
            json!({"non_field_errors":["Specify only one of duration and unblock_at"]})
        );
    }

    #[test]
    fn bad_networks_are_field_errors() {
        assert_eq!(
            errors(json!({"cidr":"banana","source":"s","why":"w","duration":"5"})),
            json!({"cidr":["'banana' does not appear to be an IPv4 or IPv6 network"]})
        );
        assert_eq!(
            errors(json!({"cidr":"192.0.2.5/24","source":"s","why":"w","duration":"5"})),
            json!({"cidr":["192.0.2.5/24 has host bits set"]})
        );
    }

    #[test]
    fn forms_and_json_values() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let v = body(&h, b"cidr=192.0.2.1&source=cli&why=a+b&duration=300&autoscale=False&extend=True&ids=1&ids=2").unwrap();
        let r = block_request(&obj(v.clone()), 1).unwrap();
        assert_eq!(
            (r.seconds, r.autoscale, r.extend, r.why.as_str()),
            (300, false, true, "a b")
        );
        assert_eq!(v["ids"], json!(["1", "2"]));
        // JSON numbers are strings to a CharField; extend defaults to true.
        let r = block_request(
            &obj(json!({"cidr":"2001:db8::1","source":"s","why":"w","duration":0})),
            1,
        )
        .unwrap();
        assert_eq!(
            (r.seconds, r.extend, r.cidr.to_string().as_str()),
            (0, true, "2001:db8::1/128")
        );
        // unblock_at alone is accepted.
        let r = block_request(&obj(json!({"cidr":"192.0.2.1","source":"s","why":"w","unblock_at":"1970-01-01T00:10:00Z"})), 1).unwrap();
        assert_eq!(r.until, Some(Time::from_timeval(600, 0)));
        assert!(
            matches!(body(&HeaderMap::new(), b"{").map(|_| ()), Ok(())),
            "no content type: a form"
        );
        let mut j = HeaderMap::new();
        j.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(matches!(body(&j, b"{"), Err(ApiError::BadRequest(_))));
        assert!(matches!(object(json!([1])), Err(ApiError::Invalid(_))));
    }

    #[test]
    fn timestamps_in_every_form_clients_use() {
        let want = Time::from_timeval(1_795_269_113, 360_815);
        for t in [
            "2026-11-21T13:51:53.360815Z",
            "2026-11-21T13:51:53.360815+00:00",
            "2026-11-21 13:51:53.360815+00:00",
            "2026-11-21T13:51:53.360815",
            "2026-11-21T14:51:53.360815+01:00",
        ] {
            assert_eq!(timestamp(t), Some(want), "{t}");
        }
        assert_eq!(
            timestamp("2014-09-01"),
            Some(Time::from_timeval(1_409_529_600, 0))
        );
        assert_eq!(timestamp("garbage"), None);
    }
}
