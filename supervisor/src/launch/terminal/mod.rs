//! What an interactive agent writes to its pty reaches the user's terminal through this filter.
//! The agent owns its screen: text, colours, cursor movement, clearing, the alternate screen
//! (ordinary CSI and ESC sequences) pass byte for byte. What acts outside that screen is
//! removed, unless the profile's `[terminal] allow` lets it through:
//!
//! | kind | sequences | allow |
//! |---|---|---|
//! | title | OSC 0, 1, 2 (window and icon title) | `title` |
//! | clipboard | OSC 52 writes; reading the clipboard (`?`) is a report, never passed | `clipboard` |
//! | hyperlink | OSC 8 to a scheme other than http/https (those and the closing `OSC 8;;` pass) | `hyperlinks` |
//! | notification | OSC 9, 99, 777 (desktop notifications) | `notifications` |
//! | report | requests whose reply the terminal types as input: OSC colour queries (`?`), title reports `CSI 20 t`/`CSI 21 t` | — |
//! | window | `CSI Ps t` moving, resizing, (de)iconifying, raising or lowering the window | — |
//! | DCS | every device control string: DECRQSS, XTGETTCAP, sixel, tmux passthrough | — |
//! | APC/PM/SOS | application program commands (kitty graphics), privacy messages | — |
//! | charset | `ESC %` other than `ESC % G`: leaving UTF-8 would make the terminal read bytes this filter reads as text as C1 controls | — |
//! | OSC | every other OSC (iTerm2's 1337 file transfer, kitty's 5113, fonts, log files, …); colour settings (4, 5, 10–19, 104–106, 110–119) and prompt marks (133) pass | — |
//!
//! The terminal only ever sees what passes: a removed sequence is removed whole, introducer
//! included, so the terminal stays in its ground state and reads what follows as text. The
//! state machine keeps its place across reads (a sequence may arrive split anywhere), ends
//! strings at BEL (OSC only) or ST (`ESC \`, C1 ST), and treats ESC, CAN, SUB or a C1
//! introducer inside a sequence as the terminal does: the sequence is abandoned. A kept string
//! ended that way is closed with ST, so the terminal is never left inside it.
//!
//! UTF-8: the stream is read as a UTF-8 terminal reads it. Bytes 0x80–0x9f inside a valid
//! multi-byte character are data ("ě" is c4 9b). The C1 controls as characters (U+0090 DCS,
//! U+009B CSI, U+009D OSC, …, encoded c2 xx) are controls, as xterm and VTE treat them; a C1
//! byte that is not part of a character (a terminal not in UTF-8 mode reads it as a control)
//! is one too. Both kinds are filtered like their ESC forms and pass unchanged when kept.
//!
//! Bounds: a sequence is held only until its fate is known (the OSC number, the hyperlink's
//! scheme, a colour query's fields), at most `MAX_PENDING` bytes; one longer is dropped
//! (`overlong`) and skipped to its end without being held. Kept strings stream.

mod kinds;
#[cfg(test)]
mod tests;

use kinds::{csi_verdict, esc_verdict, osc_verdict, Verdict};
pub use kinds::{Allow, Counts, Kind};

/// The most bytes of one sequence held while its fate is unknown.
pub const MAX_PENDING: usize = 4096;

/// One unit of the stream as a UTF-8 terminal decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A byte below 0x80.
    Ascii(u8),
    /// A C1 control (0x80–0x9f): a character U+0080–U+009F, or a byte outside any character.
    C1(u8),
    /// A multi-byte character other than C1, or a byte that is no part of one.
    Other,
}

/// Where the sequence being read has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC (`pending`: ESC and any intermediates).
    Escape,
    /// A control sequence (`pending`: the introducer and what followed).
    Csi,
    /// A control sequence over the bound, dropped: skipped to its final byte.
    CsiSkip,
    /// An OSC, DCS, APC, PM or SOS string; `bel`: BEL ends it too (OSC).
    Str {
        fate: Fate,
        bel: bool,
    },
    /// ESC inside a string: `\` ends it (ST), anything else abandons it.
    StrEsc {
        fate: Fate,
        bel: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not known yet: the string is in `pending`.
    Open,
    Keep,
    Drop,
}

/// The agent → terminal filter of one run.
pub struct Filter {
    allow: Allow,
    state: State,
    /// The sequence being read while its fate is unknown.
    pending: Vec<u8>,
    /// A UTF-8 character begun but not finished (it may span reads).
    utf8: Vec<u8>,
    counts: Counts,
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
const ST: &[u8] = b"\x1b\\";

impl Filter {
    pub fn new(allow: Allow) -> Filter {
        Filter {
            allow,
            state: State::Ground,
            pending: Vec::new(),
            utf8: Vec::new(),
            counts: Counts::default(),
        }
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Filter `input`, appending what may reach the terminal to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.state == State::Ground && self.utf8.is_empty() {
                // Fast path: text and C0 controls pass as they are.
                let n = input
                    .iter()
                    .position(|&b| b == ESC || b >= 0x80)
                    .unwrap_or(input.len());
                out.extend_from_slice(&input[..n]);
                input = &input[n..];
                if input.is_empty() {
                    break;
                }
            }
            self.byte(input[0], out);
            input = &input[1..];
        }
    }

    /// The agent's output has ended: what is still open is dropped (counted), a kept string
    /// is closed.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.utf8.is_empty() {
            self.broken_utf8(None, out);
        }
        let fate = match self.state {
            State::Str { fate, .. } | State::StrEsc { fate, .. } => fate,
            State::Escape | State::Csi => Fate::Open,
            State::Ground | State::CsiSkip => Fate::Drop,
        };
        match fate {
            Fate::Keep => out.extend_from_slice(ST),
            Fate::Open => self.counts.add(Kind::Malformed),
            Fate::Drop => {}
        }
        self.pending.clear();
        self.state = State::Ground;
    }

    /// Assemble UTF-8, then hand each unit to the sequence state machine.
    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if !self.utf8.is_empty() {
            if !continues(&self.utf8, b) {
                self.broken_utf8(Some(b), out);
                return;
            }
            self.utf8.push(b);
            if self.utf8.len() < utf8_len(self.utf8[0]) {
                return;
            }
            let raw = std::mem::take(&mut self.utf8);
            let c1 = (raw[0] == 0xc2 && raw[1] <= 0x9f).then(|| raw[1]);
            self.unit(c1.map_or(Unit::Other, Unit::C1), &raw, out);
            return;
        }
        match b {
            0x00..=0x7f => self.unit(Unit::Ascii(b), &[b], out),
            0x80..=0x9f => self.unit(Unit::C1(b), &[b], out),
            0xc2..=0xf4 => self.utf8.push(b),
            _ => self.unit(Unit::Other, &[b], out),
        }
    }

    /// A character cut short: its lead byte is no character (shown as U+FFFD by the
    /// terminal); the bytes after it are read again on their own.
    fn broken_utf8(&mut self, next: Option<u8>, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.utf8);
        self.unit(Unit::Other, &held[..1], out);
        for &b in held[1..].iter().chain(next.as_ref()) {
            self.byte(b, out);
        }
    }

    fn unit(&mut self, u: Unit, raw: &[u8], out: &mut Vec<u8>) {
        match self.state {
            State::Ground => self.ground(u, raw, out),
            State::Escape => self.escape(u, raw, out),
            State::Csi => self.csi(u, raw, out),
            State::CsiSkip => match u {
                Unit::Ascii(0x40..=0x7e) => self.state = State::Ground,
                Unit::Ascii(0x20..=0x3f) => {}
                Unit::Ascii(ESC | 0x18 | 0x1a) | Unit::C1(_) => self.abandon(u, raw, out),
                Unit::Ascii(_) => out.extend_from_slice(raw),
                Unit::Other => {
                    self.state = State::Ground;
                    self.ground(u, raw, out);
                }
            },
            State::Str { fate, bel } => self.string(fate, bel, u, raw, out),
            State::StrEsc { fate, .. } => {
                if u == Unit::Ascii(b'\\') {
                    self.end_string(fate, Some(ST), out);
                } else {
                    self.end_string(fate, None, out);
                    self.pending.push(ESC);
                    self.state = State::Escape;
                    self.unit(u, raw, out);
                }
            }
        }
    }

    fn ground(&mut self, u: Unit, raw: &[u8], out: &mut Vec<u8>) {
        match u {
            Unit::Ascii(ESC) => {
                self.pending.push(ESC);
                self.state = State::Escape;
            }
            Unit::C1(c) if introduces(c) => self.begin(c, raw),
            _ => out.extend_from_slice(raw),
        }
    }

    /// A C1 introducer (or its ESC form, `raw` held in `pending` already).
    fn begin(&mut self, c1: u8, raw: &[u8]) {
        self.pending.extend_from_slice(raw);
        self.state = match c1 {
            0x9b => State::Csi,
            0x9d => State::Str {
                fate: Fate::Open,
                bel: true,
            },
            0x90 => self.drop_string(Kind::Dcs),
            _ => self.drop_string(Kind::Apc),
        };
    }

    fn drop_string(&mut self, k: Kind) -> State {
        self.counts.add(k);
        self.pending.clear();
        State::Str {
            fate: Fate::Drop,
            bel: false,
        }
    }

    /// A sequence cut off by ESC, CAN, SUB, a C1 control or a byte it cannot hold: the
    /// terminal abandons it too. CAN and SUB pass; the rest is read afresh.
    fn abandon(&mut self, u: Unit, raw: &[u8], out: &mut Vec<u8>) {
        self.pending.clear();
        self.state = State::Ground;
        match u {
            Unit::Ascii(0x18 | 0x1a) => out.extend_from_slice(raw),
            Unit::Ascii(ESC) | Unit::C1(_) => self.ground(u, raw, out),
            _ => {
                self.counts.add(Kind::Malformed);
                self.ground(u, raw, out);
            }
        }
    }

    fn escape(&mut self, u: Unit, raw: &[u8], out: &mut Vec<u8>) {
        let Unit::Ascii(b) = u else {
            return self.abandon(u, raw, out);
        };
        // No intermediate yet: `pending` is the ESC alone.
        let first = self.pending.len() == 1;
        match b {
            ESC | 0x18 | 0x1a => self.abandon(u, raw, out),
            // C0 controls (and DEL) inside a sequence: the terminal runs them in place.
            0x00..=0x1f | 0x7f => out.push(b),
            b'[' if first => self.begin(0x9b, raw),
            b']' if first => self.begin(0x9d, raw),
            b'P' if first => self.begin(0x90, raw),
            b'_' | b'^' | b'X' if first => self.begin(0x9f, raw),
            0x30..=0x7e => {
                self.pending.push(b);
                self.close(esc_verdict(&self.pending), out);
            }
            // Intermediates.
            _ if self.pending.len() < MAX_PENDING => self.pending.push(b),
            _ => self.too_long(State::Ground),
        }
    }

    fn csi(&mut self, u: Unit, raw: &[u8], out: &mut Vec<u8>) {
        let Unit::Ascii(b) = u else {
            return self.abandon(u, raw, out);
        };
        match b {
            ESC | 0x18 | 0x1a => self.abandon(u, raw, out),
            0x00..=0x1f | 0x7f => out.push(b),
            0x40..=0x7e => {
                self.pending.push(b);
                self.close(csi_verdict(&self.pending), out);
            }
            // Parameters and intermediates.
            _ if self.pending.len() < MAX_PENDING => self.pending.push(b),
            _ => self.too_long(State::CsiSkip),
        }
    }

    /// An ESC or control sequence has its final byte: out whole, or counted.
    fn close(&mut self, verdict: Verdict, out: &mut Vec<u8>) {
        match verdict {
            Verdict::Keep => out.extend_from_slice(&self.pending),
            Verdict::Drop(k) => self.counts.add(k),
        }
        self.pending.clear();
        self.state = State::Ground;
    }

    /// A sequence past `MAX_PENDING` bytes: dropped, its rest read in state `then`.
    fn too_long(&mut self, then: State) {
        self.counts.add(Kind::Overlong);
        self.pending.clear();
        self.state = then;
    }

    fn string(&mut self, fate: Fate, bel: bool, u: Unit, raw: &[u8], out: &mut Vec<u8>) {
        match u {
            Unit::Ascii(BEL) if bel => self.end_string(fate, Some(raw), out),
            Unit::Ascii(ESC) => self.state = State::StrEsc { fate, bel },
            Unit::C1(0x9c) => self.end_string(fate, Some(raw), out),
            Unit::Ascii(0x18 | 0x1a) | Unit::C1(_) => {
                self.end_string(fate, None, out);
                self.abandon(u, raw, out);
            }
            _ => match fate {
                Fate::Keep => out.extend_from_slice(raw),
                Fate::Drop => {}
                Fate::Open => {
                    self.pending.extend_from_slice(raw);
                    if let Some(fate) = self.decide(false, out) {
                        self.state = State::Str { fate, bel };
                    }
                }
            },
        }
    }

    /// An OSC not decided yet: decide it if its bytes so far are enough (always when
    /// `complete`); a kept one's bytes so far go out.
    fn decide(&mut self, complete: bool, out: &mut Vec<u8>) -> Option<Fate> {
        let fate = match osc_verdict(self.allow, after_introducer(&self.pending), complete) {
            Some(Verdict::Keep) => {
                out.extend_from_slice(&self.pending);
                Fate::Keep
            }
            Some(Verdict::Drop(k)) => {
                self.counts.add(k);
                Fate::Drop
            }
            None if self.pending.len() > MAX_PENDING => {
                self.counts.add(Kind::Overlong);
                Fate::Drop
            }
            None => return None,
        };
        self.pending.clear();
        Some(fate)
    }

    /// A string ended: by its terminator (`Some`), or abandoned (the terminal may still act
    /// on it: xterm does). A kept string reaches the terminal closed either way.
    fn end_string(&mut self, fate: Fate, terminator: Option<&[u8]>, out: &mut Vec<u8>) {
        let kept = match fate {
            Fate::Open => self.decide(true, out) == Some(Fate::Keep),
            f => f == Fate::Keep,
        };
        if kept {
            out.extend_from_slice(terminator.unwrap_or(ST));
        }
        self.pending.clear();
        self.state = State::Ground;
    }
}

/// C1 controls that open a sequence: DCS, SOS, CSI, OSC, PM, APC.
fn introduces(c1: u8) -> bool {
    matches!(c1, 0x90 | 0x98 | 0x9b | 0x9d | 0x9e | 0x9f)
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Does `b` continue the character begun in `held`? The second byte's range depends on the
/// lead (no overlong forms, surrogates or code points past U+10FFFF).
fn continues(held: &[u8], b: u8) -> bool {
    let range = match (held.len(), held[0]) {
        (1, 0xe0) => 0xa0..=0xbf,
        (1, 0xed) => 0x80..=0x9f,
        (1, 0xf0) => 0x90..=0xbf,
        (1, 0xf4) => 0x80..=0x8f,
        _ => 0x80..=0xbf,
    };
    range.contains(&b)
}

/// The bytes of a sequence after its introducer (ESC [ or ESC ], a C1 byte or a C1 character).
fn after_introducer(pending: &[u8]) -> &[u8] {
    match pending {
        [ESC, _, rest @ ..] | [0xc2, _, rest @ ..] => rest,
        [_, rest @ ..] => rest,
        [] => pending,
    }
}
