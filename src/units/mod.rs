//! One grammar for every duration and size a user writes: flags, and the specs parsed later.
//!
//! A **duration** is a number with one of `ns`, `us`, `ms`, `s`, `m`, `h`; a bare number is seconds:
//! `250ms`, `1.5s`, `5m`, `10`. A **size** is a number with one of `B`, `KiB`, `MiB`, `GiB`
//! (powers of 1024), `KB`, `MB`, `GB` (powers of 1000); a bare number is bytes: `64KiB`, `1MB`,
//! `4096`. Size units ignore case. A number is decimal, with an optional fraction and exponent
//! (`1.5`, `2e3`); a space may stand before the unit.
//!
//! Both are bounded, so that nothing a user writes can overflow the arithmetic done with it
//! (an `Instant` plus a duration, a buffer of a size): a duration is at most [`MAX_DURATION`]
//! (365 days), a size at most [`MAX_SIZE`] (1024 GiB). Negative numbers, `NaN` and infinities are
//! refused with a message that says so; a size must come out as a whole number of bytes, and a
//! duration is rounded down to whole nanoseconds (one that is not zero but shorter than 1 ns
//! is refused). What [`show_duration`] and [`show_size`] write parses back to the same value.

use std::fmt;
use std::time::Duration;

/// The longest duration accepted: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest size accepted: 1024 GiB.
pub const MAX_SIZE: u64 = 1 << 40;

/// Why a duration or size was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    input: String,
    reason: String,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.input, self.reason)
    }
}

impl std::error::Error for UnitError {}

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

const SIZE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
];

/// Parses a duration: a number and one of `ns`, `us`, `ms`, `s`, `m`, `h`, seconds when bare.
///
/// # Errors
///
/// When it is not a number with one of those units, is negative, or is more than
/// [`MAX_DURATION`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tcpool::units;
///
/// assert_eq!(units::parse_duration("250ms")?, Duration::from_millis(250));
/// assert_eq!(units::parse_duration("1.5")?, Duration::from_millis(1500));
/// assert_eq!(units::parse_duration("5m")?, Duration::from_secs(300));
/// assert!(units::parse_duration("1e19").is_err());
/// # Ok::<(), units::UnitError>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let fail = |reason: String| UnitError {
        input: text.to_owned(),
        reason,
    };
    let (number, unit) = split(text).map_err(|r| fail(format!("is not a duration: {r}")))?;
    let scale = match unit {
        "" => 1_000_000_000,
        _ => lookup(DURATION_UNITS, unit).ok_or_else(|| {
            fail(format!(
                "has an unknown unit {unit:?} (a duration takes ns, us, ms, s, m or h; bare means seconds)"
            ))
        })?,
    };
    let max = MAX_DURATION.as_nanos();
    let nanos = number.scaled(scale, max).ok_or_else(|| {
        fail(format!(
            "is longer than the limit of {} (365 days)",
            show_duration(MAX_DURATION)
        ))
    })?;
    // Rounding down must never turn a duration that is not zero into zero, which means
    // "never" or "at once" to many of the flags that take one.
    if nanos == 0 && (number.digits != 0 || number.dropped) {
        return Err(fail("is shorter than 1ns, the finest duration".into()));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).expect("bounded by MAX_DURATION");
    let sub = u32::try_from(nanos % 1_000_000_000).expect("below one second");
    Ok(Duration::new(secs, sub))
}

/// Parses a size in bytes: a number and one of `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`
/// (any case), bytes when bare.
///
/// # Errors
///
/// When it is not a number with one of those units, is negative, is not a whole number of
/// bytes, or is more than [`MAX_SIZE`].
///
/// # Examples
///
/// ```
/// use tcpool::units;
///
/// assert_eq!(units::parse_size("64KiB")?, 65_536);
/// assert_eq!(units::parse_size("1.5 kB")?, 1_500);
/// assert_eq!(units::parse_size("4096")?, 4_096);
/// assert!(units::parse_size("0.5B").is_err());
/// # Ok::<(), units::UnitError>(())
/// ```
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let fail = |reason: String| UnitError {
        input: text.to_owned(),
        reason,
    };
    let (number, unit) = split(text).map_err(|r| fail(format!("is not a size: {r}")))?;
    let scale = match unit {
        "" => 1,
        _ => lookup(SIZE_UNITS, &unit.to_ascii_lowercase()).ok_or_else(|| {
            fail(format!(
                "has an unknown unit {unit:?} (a size takes B, KiB, MiB, GiB, KB, MB or GB; bare means bytes)"
            ))
        })?,
    };
    let bytes = number.scaled(scale, u128::from(MAX_SIZE)).ok_or_else(|| {
        fail(format!(
            "is larger than the limit of {}",
            show_size(MAX_SIZE)
        ))
    })?;
    if !number.exact(scale) {
        return Err(fail("is not a whole number of bytes".into()));
    }
    Ok(u64::try_from(bytes).expect("bounded by MAX_SIZE"))
}

/// A duration as the grammar writes it, in the largest unit that shows it whole:
/// `90s`, `5m`, `250ms`.
pub fn show_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for &(unit, scale) in DURATION_UNITS.iter().rev() {
        if nanos >= scale && nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    match nanos {
        0 => "0s".to_owned(),
        _ => format!("{d:?}"),
    }
}

/// `1h02m`, `3m05s`, `12.3s`: short and readable.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A duration as a log field's number of milliseconds: `1.204`, `250`, `300000`. The key
/// that carries it ends in `_ms`, so a log shipper reads a number with its unit.
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = format!("{:.3}", self.0.as_secs_f64() * 1000.0);
        f.write_str(ms.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// A size as the grammar writes it, in the largest binary unit that shows it whole:
/// `64KiB`, `1MiB`, `1000B`.
pub fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

fn lookup(units: &[(&str, u128)], unit: &str) -> Option<u128> {
    units
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, s)| s)
}

/// A non-negative decimal: `digits × 10^exp`, exact unless `dropped` (a nonzero digit past
/// the significant digits kept was left off).
#[derive(Debug, Clone, Copy)]
struct Decimal {
    digits: u128,
    exp: i32,
    dropped: bool,
}

impl Decimal {
    /// The same number with no trailing zeros in `digits`, so that `1.000…0` and `1000…0e-30`
    /// are as small as `1`.
    fn normal(self) -> Decimal {
        let mut n = self;
        while n.digits != 0 && n.digits.is_multiple_of(10) {
            n.digits /= 10;
            n.exp += 1;
        }
        n
    }

    /// `self × scale`, rounded down, or `None` when it is above `max`.
    fn scaled(self, scale: u128, max: u128) -> Option<u128> {
        let mut n = self.normal();
        let mut scale = scale;
        // Cancel what `scale` and `digits` share with `10^-exp` first (exact: a whole size
        // stays whole), so that fewer digits need to be let go below.
        while n.exp < 0 {
            if scale.is_multiple_of(10) {
                scale /= 10;
            } else if scale.is_multiple_of(2) && n.digits.is_multiple_of(5) {
                scale /= 2;
                n.digits /= 5;
            } else if scale.is_multiple_of(5) && n.digits.is_multiple_of(2) {
                scale /= 5;
                n.digits /= 2;
            } else {
                break;
            }
            n.exp += 1;
        }
        // Digits far below one unit of the result cannot all be multiplied in u128; past that,
        // the least significant ones are let go (rounding down, as the result does anyway).
        while n.exp < -38 || (n.exp < 0 && n.digits.checked_mul(scale).is_none()) {
            n.digits /= 10;
            n.exp += 1;
        }
        let product = n.digits.checked_mul(scale)?;
        let value = if n.exp >= 0 {
            product.checked_mul(10u128.checked_pow(n.exp.unsigned_abs())?)?
        } else {
            match 10u128.checked_pow(n.exp.unsigned_abs()) {
                Some(div) => product / div,
                None => 0,
            }
        };
        (value <= max).then_some(value)
    }

    /// Whether `self × scale` is a whole number: `10^-exp` divides `digits × scale`, counted
    /// in factors of 2 and 5 so that no product can overflow.
    fn exact(self, scale: u128) -> bool {
        let n = self.normal();
        if n.digits == 0 {
            return !n.dropped;
        }
        if n.dropped {
            return false;
        }
        if n.exp >= 0 {
            return true;
        }
        let need = n.exp.unsigned_abs();
        let twos = n.digits.trailing_zeros() + scale.trailing_zeros();
        let fives = factors_of_5(n.digits) + factors_of_5(scale);
        twos >= need && fives >= need
    }
}

/// How many times 5 divides `n` (`n` > 0).
fn factors_of_5(mut n: u128) -> u32 {
    let mut count = 0;
    while n != 0 && n.is_multiple_of(5) {
        n /= 5;
        count += 1;
    }
    count
}

/// Splits `text` into its number and its unit (trimmed; possibly empty).
fn split(text: &str) -> Result<(Decimal, &str), &'static str> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('-') {
        // `-1`, `-.5s`: negative; `--port` (a flag where a value was due) is no number at all.
        return Err(match rest.as_bytes().first() {
            Some(b'0'..=b'9' | b'.') => "it is negative",
            _ => "it does not start with a number",
        });
    }
    let lower = text.to_ascii_lowercase();
    if ["nan", "inf", "+inf", "infinity", "+nan"]
        .iter()
        .any(|w| lower.starts_with(w))
    {
        return Err("it must be a finite number");
    }
    let bytes = text.as_bytes();
    let mut number = Decimal {
        digits: 0,
        exp: 0,
        dropped: false,
    };
    let mut i = 0;
    let mut seen = false;
    let mut fraction = false;
    while i < bytes.len() {
        match bytes[i] {
            b'.' if !fraction => fraction = true,
            b @ b'0'..=b'9' => {
                seen = true;
                // 37 significant digits are kept, enough for every whole size (1023.99…GiB
                // needs 34); past them only the magnitude matters, and whether one was not 0.
                if number.digits < 10u128.pow(36) {
                    number.digits = number.digits * 10 + u128::from(b - b'0');
                    number.exp -= i32::from(fraction);
                } else if !fraction {
                    number.exp += 1;
                    number.dropped |= b != b'0';
                } else {
                    number.dropped |= b != b'0';
                }
            }
            _ => break,
        }
        i += 1;
    }
    if !seen {
        return Err("it does not start with a number");
    }
    // An exponent: `e` then digits, so a unit starting with `e` is never mistaken for one.
    if i + 1 < bytes.len() && matches!(bytes[i], b'e' | b'E') {
        let mut j = i + 1;
        let negative = bytes[j] == b'-';
        if matches!(bytes[j], b'-' | b'+') {
            j += 1;
        }
        let start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j > start {
            let e: i32 = text[start..j].parse().unwrap_or(i32::MAX / 2).min(1000);
            number.exp += if negative { -e } else { e };
            i = j;
        }
    }
    Ok((number, text[i..].trim_start()))
}

#[cfg(test)]
mod tests;
