//! What each sequence is, and whether it passes: the rules of the table in `terminal`'s
//! documentation, as functions of a finished (or partly read) sequence; the kinds counted.

use super::after_introducer;
use crate::profile::TerminalFeature;

/// What was removed, by kind (for the run's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Title,
    Clipboard,
    Hyperlink,
    Notification,
    Report,
    Window,
    Dcs,
    Apc,
    Charset,
    Osc,
    Malformed,
    Overlong,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::Clipboard,
        Kind::Title,
        Kind::Hyperlink,
        Kind::Notification,
        Kind::Report,
        Kind::Window,
        Kind::Dcs,
        Kind::Apc,
        Kind::Charset,
        Kind::Osc,
        Kind::Malformed,
        Kind::Overlong,
    ];

    /// (one, several) in the run's note.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Kind::Title => ("title change", "title changes"),
            Kind::Clipboard => ("clipboard write", "clipboard writes"),
            Kind::Hyperlink => ("non-web hyperlink", "non-web hyperlinks"),
            Kind::Notification => ("desktop notification", "desktop notifications"),
            Kind::Report => ("terminal report request", "terminal report requests"),
            Kind::Window => ("window operation", "window operations"),
            Kind::Dcs => ("device control string", "device control strings"),
            Kind::Apc => ("APC/PM/SOS string", "APC/PM/SOS strings"),
            Kind::Charset => ("character set switch", "character set switches"),
            Kind::Osc => ("other OSC command", "other OSC commands"),
            Kind::Malformed => (
                "malformed or unfinished sequence",
                "malformed or unfinished sequences",
            ),
            Kind::Overlong => ("sequence over 4 KiB", "sequences over 4 KiB"),
        }
    }
}

/// What the profile lets through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    pub title: bool,
    pub clipboard: bool,
    pub hyperlinks: bool,
    pub notifications: bool,
}

impl Allow {
    pub fn from_features(features: &[TerminalFeature]) -> Allow {
        let has = |f| features.contains(&f);
        Allow {
            title: has(TerminalFeature::Title),
            clipboard: has(TerminalFeature::Clipboard),
            hyperlinks: has(TerminalFeature::Hyperlinks),
            notifications: has(TerminalFeature::Notifications),
        }
    }
}

/// Sequences removed, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts([u64; Kind::ALL.len()]);

impl Counts {
    pub fn get(&self, k: Kind) -> u64 {
        self.0[k as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(super) fn add(&mut self, k: Kind) {
        self.0[k as usize] += 1;
    }

    /// "filtered 3 terminal sequences from the agent (2 clipboard writes, 1 title change)".
    pub fn note(&self) -> Option<String> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let parts: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| self.get(**k) > 0)
            .map(|k| {
                let (one, many) = k.words();
                let n = self.get(*k);
                format!("{n} {}", if n == 1 { one } else { many })
            })
            .collect();
        Some(format!(
            "filtered {total} terminal sequence{} from the agent ({}); `[terminal] allow` in the profile lets titles, clipboard writes, hyperlinks and notifications through",
            if total == 1 { "" } else { "s" },
            parts.join(", ")
        ))
    }
}

pub(super) enum Verdict {
    Keep,
    Drop(Kind),
}

/// A finished ESC sequence (ESC, intermediates, final byte): kept unless it leaves UTF-8
/// (`ESC % @` and the other `ESC %` forms but `ESC % G`, which selects UTF-8).
pub(super) fn esc_verdict(pending: &[u8]) -> Verdict {
    match pending {
        [_, b'%', f] if *f != b'G' => Verdict::Drop(Kind::Charset),
        _ => Verdict::Keep,
    }
}

/// A finished control sequence: kept unless it is a window operation or a title report.
pub(super) fn csi_verdict(pending: &[u8]) -> Verdict {
    let body = after_introducer(pending);
    let Some((&final_byte, params)) = body.split_last() else {
        return Verdict::Keep;
    };
    // `CSI Ps ; … t` without a private marker or intermediates: xterm's window operations.
    if final_byte != b't' || !params.iter().all(|b| b.is_ascii_digit() || *b == b';') {
        return Verdict::Keep;
    }
    let first = params.split(|b| *b == b';').next().unwrap_or_default();
    if first.is_empty() {
        return Verdict::Keep;
    }
    let ps = first.iter().fold(0u32, |n, d| {
        n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    });
    match ps {
        // Report the icon label / window title: typed back as input.
        20 | 21 => Verdict::Drop(Kind::Report),
        // De-iconify, iconify, move, resize, raise, lower, refresh, resize in characters,
        // maximize, full screen; 24 and up resize to that many lines.
        1..=10 | 24.. => Verdict::Drop(Kind::Window),
        // Reports of state, position and size (numbers only); save/restore title.
        _ => Verdict::Keep,
    }
}

/// An OSC's fate from its payload so far; None: more is needed. `complete`: the payload is
/// whole (terminated).
pub(super) fn osc_verdict(allow: Allow, payload: &[u8], complete: bool) -> Option<Verdict> {
    let (number, rest) = match payload.iter().position(|b| *b == b';') {
        Some(i) => (&payload[..i], Some(&payload[i + 1..])),
        None => (payload, None),
    };
    if !number.iter().all(u8::is_ascii_digit) || number.len() > 6 {
        return Some(Verdict::Drop(Kind::Osc));
    }
    if rest.is_none() && !complete {
        // The number may go on.
        return None;
    }
    let rest = rest.unwrap_or_default();
    let gate = |allowed: bool, k: Kind| Some(if allowed { Verdict::Keep } else { Verdict::Drop(k) });
    match number {
        b"0" | b"1" | b"2" => gate(allow.title, Kind::Title),
        b"9" | b"99" | b"777" => gate(allow.notifications, Kind::Notification),
        b"52" => {
            // 52 ; selection ; base64 data, or `?` to read the clipboard.
            let data = rest.iter().position(|b| *b == b';').map(|i| &rest[i + 1..]);
            match data {
                Some([b'?', ..]) => Some(Verdict::Drop(Kind::Report)),
                Some([]) | None if !complete => None,
                _ => gate(allow.clipboard, Kind::Clipboard),
            }
        }
        b"8" => {
            // 8 ; params ; URI. An empty URI closes the link.
            let Some(uri) = rest.iter().position(|b| *b == b';').map(|i| &rest[i + 1..]) else {
                return complete.then_some(Verdict::Drop(Kind::Hyperlink));
            };
            match uri.iter().position(|b| *b == b':') {
                Some(i) if is_web(&uri[..i]) => Some(Verdict::Keep),
                Some(_) => gate(allow.hyperlinks, Kind::Hyperlink),
                None if !complete => None,
                None if uri.is_empty() => Some(Verdict::Keep),
                None => gate(allow.hyperlinks, Kind::Hyperlink),
            }
        }
        // Colours: setting them passes, asking for them (`?`) is a report.
        b"4" | b"5" | b"10" | b"11" | b"12" | b"13" | b"14" | b"15" | b"16" | b"17" | b"18" | b"19"
        | b"104" | b"105" | b"106" | b"110" | b"111" | b"112" | b"113" | b"114" | b"115" | b"116"
        | b"117" | b"118" | b"119" => {
            if !complete {
                return None;
            }
            Some(if rest.split(|b| *b == b';').any(|f| f == b"?") {
                Verdict::Drop(Kind::Report)
            } else {
                Verdict::Keep
            })
        }
        // Shell prompt marks.
        b"133" => Some(Verdict::Keep),
        _ => Some(Verdict::Drop(Kind::Osc)),
    }
}

fn is_web(scheme: &[u8]) -> bool {
    scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")
}
