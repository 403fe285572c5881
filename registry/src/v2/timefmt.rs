//! Conversion between unix nanoseconds and the RFC 3339 text Go's
//! `time.Time.MarshalJSON` produces for UTC times (`RFC3339Nano`: the
//! fractional second has its trailing zeros removed, and is dropped entirely
//! when zero).

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats unix nanoseconds as Go formats a UTC `time.Time` in JSON
/// (without the surrounding quotes), e.g. `2026-11-22T14:51:03.1234567Z`.
pub fn format_rfc3339_nano(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(NANOS_PER_SEC);
    let nanos = unix_nanos.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        y,
        mo,
        d,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses the output of [`format_rfc3339_nano`] (also accepts a numeric
/// offset such as `+02:00`). Returns None for malformed text.
pub fn parse_rfc3339_nano(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let year = num(0..4)?;
    let month = num(5..7)? as u32;
    let day = num(8..10)? as u32;
    let hour = num(11..13)?;
    let min = num(14..16)?;
    let sec = num(17..19)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset_secs: i64 = match s.get(i..)? {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let v = h * 3600 + m * 60;
            if rest.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let total = secs as i128 * NANOS_PER_SEC as i128 + nanos as i128;
    i64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(format_rfc3339_nano(0), "1970-01-01T00:00:00Z");
        // values seen from etcd 3.4.23: 9 digits, and a trailing zero dropped
        let t = parse_rfc3339_nano("2026-11-22T14:46:12.953718002Z").unwrap();
        assert_eq!(format_rfc3339_nano(t), "2026-11-22T14:46:12.953718002Z");
        assert_eq!(format_rfc3339_nano(t - 2), "2026-11-22T14:46:12.953718Z");
        let t2 = parse_rfc3339_nano("2026-11-22T14:46:31.38226351Z").unwrap();
        assert_eq!(t2 % 1_000_000_000, 382_263_510);
        assert_eq!(
            format_rfc3339_nano(1_500_000_000_000_000_000),
            "2017-07-14T02:40:00Z"
        );
        assert_eq!(
            format_rfc3339_nano(1_500_000_000_100_000_000),
            "2017-07-14T02:40:00.1Z"
        );
        assert_eq!(
            format_rfc3339_nano(946_684_800_000_000_000),
            "2000-01-01T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339_nano(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn before_epoch() {
        assert_eq!(format_rfc3339_nano(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            format_rfc3339_nano(i64::MIN),
            "1677-09-21T00:12:43.145224192Z"
        );
        assert_eq!(
            format_rfc3339_nano(i64::MAX),
            "2262-04-11T23:47:16.854775807Z"
        );
    }

    #[test]
    fn roundtrip() {
        for &t in &[
            0i64,
            1,
            -1,
            123_456_789,
            1_795_000_000_123_000_000,
            i64::MAX,
            i64::MIN + 1,
        ] {
            assert_eq!(parse_rfc3339_nano(&format_rfc3339_nano(t)), Some(t), "{t}");
        }
        assert_eq!(parse_rfc3339_nano("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_nano("garbage"), None);
    }
}
