use super::*;

const NONE: Allow = Allow {
    title: false,
    clipboard: false,
    hyperlinks: false,
    notifications: false,
};
const ALL: Allow = Allow {
    title: true,
    clipboard: true,
    hyperlinks: true,
    notifications: true,
};

/// The output and counts of one filter fed `parts` in turn, then finished.
fn filter_parts(allow: Allow, parts: &[&[u8]]) -> (Vec<u8>, Counts) {
    let mut f = Filter::new(allow);
    let mut out = Vec::new();
    for p in parts {
        f.feed(p, &mut out);
        assert!(
            f.pending.len() <= MAX_PENDING + 4,
            "held {} bytes",
            f.pending.len()
        );
    }
    f.finish(&mut out);
    (out, f.counts.clone())
}

/// Filter `input` whole, split in two at every byte position, and byte by byte: the same
/// output and counts every time.
fn filter(allow: Allow, input: &[u8]) -> (Vec<u8>, Counts) {
    let whole = filter_parts(allow, &[input]);
    for i in 0..=input.len() {
        assert_eq!(
            filter_parts(allow, &[&input[..i], &input[i..]]),
            whole,
            "{input:?} split at {i}"
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(filter_parts(allow, &bytes), whole, "{input:?} byte by byte");
    whole
}

fn counts(of: &[(Kind, u64)]) -> Counts {
    let mut c = Counts::default();
    for (k, n) in of {
        for _ in 0..*n {
            c.add(*k);
        }
    }
    c
}

/// `input` (split anywhere) gives `output`, having removed `removed`.
fn check(allow: Allow, input: &[u8], output: &[u8], removed: &[(Kind, u64)]) {
    assert_eq!(
        filter(allow, input),
        (output.to_vec(), counts(removed)),
        "{input:?}"
    );
}

#[test]
fn text_and_ordinary_sequences_pass_byte_for_byte() {
    let screen: &[u8] = b"plain\ttext\r\n\x1b[1;31mred\x1b[0m \x1b[38;2;10;20;30mrgb\x1b[m\x1b[?1049h\x1b[2J\x1b[H\
        \x1b[3;5H\x1b[K\x1b(B\x1b(0q\x1b(B\x1b7\x1b8\x1b=\x1b>\x1b[?2026h\x1b[?25l\x1b[6n\x1b[c\x1b[>c\
        \x1b[18t\x1b[14t\x1b[22;0t\x1b[23;0t\x1b[?1000h\x1b]8;id=1;https://example.com/a?b=c\x1b\\link\x1b]8;;\x1b\\\
        \x1b]8;;HTTP://EXAMPLE.COM\x07L\x1b]8;;\x07\x1b]4;1;rgb:ff/00/00\x07\x1b]11;#000000\x1b\\\x1b]104\x07\
        \x1b]133;A\x07\x1b%G\x1b\\\x07bell\x08\x18\x1a end\n";
    check(NONE, screen, screen, &[]);
}

#[test]
fn utf8_with_c1_like_continuation_bytes_is_text() {
    // ě c4 9b, ŝ c5 9d, Ő c5 90, Ğ c4 9e, ş c5 9f, Ŝ c5 9c, € e2 82 ac, ← e2 86 90, 😀 f0 9f 98 80,
    // and U+2029 e2 80 a9.
    let text = "ě ŝ Ő Ğ ş Ŝ € ← 😀 \u{2029} ünïcödé".as_bytes();
    check(NONE, text, text, &[]);
    // Inside a kept string too: the title's Ŝ (c5 9c) is not ST.
    let title = "\x1b]0;Ŝě\x07x".as_bytes();
    check(ALL, title, title, &[]);
    check(NONE, title, b"x", &[(Kind::Title, 1)]);
}

#[test]
fn each_kind_is_removed_whole_and_counted() {
    let cases: &[(&[u8], &[u8], Kind)] = &[
        (b"\x1b]52;c;aGVsbG8=\x07", b"", Kind::Clipboard),
        (b"\x1b]52;c;aGVsbG8=\x1b\\", b"", Kind::Clipboard),
        (b"\x1b]52;;\x07", b"", Kind::Clipboard),
        (b"\x1b]52;c;?\x07", b"", Kind::Report),
        (b"\x1b]0;pwned\x07", b"", Kind::Title),
        (b"\x1b]1;icon\x1b\\", b"", Kind::Title),
        (b"\x1b]2;t\x07", b"", Kind::Title),
        // The 8-bit forms: C1 characters (c2 xx) and bytes outside any character.
        ("\u{9d}0;t\u{9c}".as_bytes(), b"", Kind::Title),
        (b"\x9d0;t\x9c", b"", Kind::Title),
        (b"\x9d52;c;eA==\x07", b"", Kind::Clipboard),
        (b"\x1b]8;;file:///etc/passwd\x1b\\", b"", Kind::Hyperlink),
        (b"\x1b]8;;ssh://h\x07", b"", Kind::Hyperlink),
        (b"\x1b]8;;relative\x07", b"", Kind::Hyperlink),
        (b"\x1b]9;done\x07", b"", Kind::Notification),
        (b"\x1b]777;notify;a;b\x07", b"", Kind::Notification),
        (b"\x1b]99;;hi\x1b\\", b"", Kind::Notification),
        (b"\x1b]11;?\x1b\\", b"", Kind::Report),
        (b"\x1b]4;1;red;2;?\x07", b"", Kind::Report),
        (b"\x1b]10;?\x07", b"", Kind::Report),
        (b"\x1b[21t", b"", Kind::Report),
        (b"\x1b[20t", b"", Kind::Report),
        (b"\x9b21t", b"", Kind::Report),
        ("\u{9b}21t".as_bytes(), b"", Kind::Report),
        (b"\x1b[3;0;0t", b"", Kind::Window),
        (b"\x1b[8;100;300t", b"", Kind::Window),
        (b"\x1b[2t", b"", Kind::Window),
        (b"\x1b[99999999999t", b"", Kind::Window),
        (b"\x1bP$qm\x1b\\", b"", Kind::Dcs),
        (b"\x90$qm\x9c", b"", Kind::Dcs),
        (b"\x1bP+q544e\x1b\\", b"", Kind::Dcs),
        (b"\x1bPq#0;2;0;0;0#0!10~\x07-\x1b\\", b"", Kind::Dcs),
        (b"\x1b_Gf=100;AAAA\x1b\\", b"", Kind::Apc),
        (b"\x1b^pm\x1b\\", b"", Kind::Apc),
        (b"\x1bXsos\x1b\\", b"", Kind::Apc),
        (b"\x9fapc\x9c", b"", Kind::Apc),
        (b"\x1b%@", b"", Kind::Charset),
        (b"\x1b]1337;File=name=eA==;inline=0:AAAA\x07", b"", Kind::Osc),
        (b"\x1b]5113;x\x07", b"", Kind::Osc),
        (b"\x1b]l title\x1b\\", b"", Kind::Osc),
        (b"\x1b]\x07", b"", Kind::Osc),
    ];
    for (seq, left, kind) in cases {
        let input = [b"before ".as_slice(), seq, b" after"].concat();
        let want = [b"before ".as_slice(), left, b" after"].concat();
        check(NONE, &input, &want, &[(*kind, 1)]);
    }
}

#[test]
fn allowed_kinds_pass_byte_for_byte() {
    for seq in [
        b"\x1b]0;title\x07".as_slice(),
        b"\x1b]2;title\x1b\\",
        b"\x1b]52;c;aGVsbG8=\x07",
        b"\x1b]8;;file:///tmp/x\x1b\\",
        b"\x1b]9;done\x07",
    ] {
        check(ALL, seq, seq, &[]);
    }
    // Reading the clipboard is a report: never passed.
    check(ALL, b"\x1b]52;c;?\x07", b"", &[(Kind::Report, 1)]);
    let only_links = Allow {
        hyperlinks: true,
        ..NONE
    };
    check(
        only_links,
        b"\x1b]8;;ftp://x\x07\x1b]0;t\x07",
        b"\x1b]8;;ftp://x\x07",
        &[(Kind::Title, 1)],
    );
}

#[test]
fn a_hyperlink_to_another_scheme_loses_its_opening_and_keeps_its_text() {
    let input = b"\x1b]8;;file:///etc/passwd\x1b\\click\x1b]8;;\x1b\\";
    check(NONE, input, b"click\x1b]8;;\x1b\\", &[(Kind::Hyperlink, 1)]);
}

#[test]
fn tmux_passthrough_is_removed_with_what_it_carries() {
    let input = b"a\x1bPtmux;\x1b\x1b]52;c;ZXZpbA==\x07\x1b\\b";
    let (out, c) = filter(NONE, input);
    assert_eq!(out, b"a\x1b\\b");
    assert_eq!(c, counts(&[(Kind::Dcs, 1), (Kind::Clipboard, 1)]));
}

#[test]
fn a_sequence_cut_off_is_abandoned_as_the_terminal_does() {
    // ESC inside a removed title: the title goes, the colour that follows passes.
    check(NONE, b"\x1b]0;x\x1b[31mred", b"\x1b[31mred", &[(Kind::Title, 1)]);
    // A kept one is closed with ST before what follows.
    check(ALL, b"\x1b]0;x\x1b[31mred", b"\x1b]0;x\x1b\\\x1b[31mred", &[]);
    // CAN and SUB cancel a sequence and pass; C0 controls inside one run in place.
    check(NONE, b"\x1b[2\x18x", b"\x18x", &[]);
    check(NONE, b"\x1b[3\n1m", b"\n\x1b[31m", &[]);
    check(NONE, b"\x1b[2\x1b[21t", b"", &[(Kind::Report, 1)]);
    // A character no sequence can hold: the sequence is malformed, the character is text.
    check(
        NONE,
        "\x1b[21é t".as_bytes(),
        "é t".as_bytes(),
        &[(Kind::Malformed, 1)],
    );
    // A C1 introducer inside a string starts the next sequence.
    check(
        NONE,
        b"\x1b]0;a\x9b21tb",
        b"b",
        &[(Kind::Title, 1), (Kind::Report, 1)],
    );
}

#[test]
fn bytes_outside_characters_are_read_as_c1_controls() {
    // e2 9b is a character cut short: e2 is no character, 9b on its own is CSI.
    check(NONE, b"\xe2\x9b21tA", b"\xe2A", &[(Kind::Report, 1)]);
    // An overlong form of ESC (c0 9b) is no character either.
    check(NONE, b"\xc0\x9b21t", b"\xc0", &[(Kind::Report, 1)]);
    // Kept sequences in 8-bit form pass unchanged; other C1 bytes too.
    check(NONE, b"\x9b31mx\x85\x9c", b"\x9b31mx\x85\x9c", &[]);
    check(NONE, b"\xff\xfe", b"\xff\xfe", &[]);
}

#[test]
fn unterminated_sequences_are_bounded() {
    // An OSC whose fate needs its whole payload (a colour, a link's scheme) is held at most
    // MAX_PENDING bytes, then dropped and skipped to its end; what follows passes.
    for head in [b"\x1b]11;".as_slice(), b"\x1b]8;", b"\x1b]8;;"] {
        let input = [head, &[b'x'; 10_000], b"\x07after"].concat();
        assert_eq!(
            filter_parts(NONE, &[&input]),
            (b"after".to_vec(), counts(&[(Kind::Overlong, 1)])),
            "{head:?}"
        );
        let parts: Vec<&[u8]> = input.chunks(7).collect();
        assert_eq!(filter_parts(NONE, &parts).0, b"after");
    }
    let csi = [b"\x1b[".as_slice(), &b"1;".repeat(5000), b"mtext"].concat();
    assert_eq!(
        filter_parts(NONE, &[&csi]),
        (b"text".to_vec(), counts(&[(Kind::Overlong, 1)]))
    );
    // A removed string is skipped without being held, however long.
    let long = [b"\x1b]52;c;".as_slice(), &[b'A'; 100_000], b"\x07ok"].concat();
    assert_eq!(
        filter_parts(NONE, &[&long]),
        (b"ok".to_vec(), counts(&[(Kind::Clipboard, 1)]))
    );
    // An allowed one streams.
    let long = [b"\x1b]52;c;".as_slice(), &[b'A'; 100_000], b"\x07"].concat();
    assert_eq!(filter_parts(ALL, &[&long]), (long.clone(), Counts::default()));
}

#[test]
fn the_end_of_the_output_leaves_no_sequence_open() {
    check(ALL, b"\x1b]0;abc", b"\x1b]0;abc\x1b\\", &[]);
    check(NONE, b"x\x1b[2", b"x", &[(Kind::Malformed, 1)]);
    check(NONE, b"x\x1b]8;;http", b"x", &[(Kind::Malformed, 1)]);
    check(NONE, b"x\x1b]0;t", b"x", &[(Kind::Title, 1)]);
    // A character cut short at the end is shown as it is (the terminal draws U+FFFD).
    check(NONE, b"x\xe2\x82", b"x\xe2\x82", &[]);
}

#[test]
fn the_note_names_each_kind() {
    let (_, c) = filter(
        NONE,
        b"\x1b]52;c;YQ==\x07\x1b]0;t\x07\x1b]52;p;Yg==\x1b\\\x1b[21t",
    );
    assert_eq!(
        c.note().unwrap(),
        "filtered 4 terminal sequences from the agent (2 clipboard writes, 1 title change, \
         1 terminal report request); `[terminal] allow` in the profile lets titles, clipboard \
         writes, hyperlinks and notifications through"
    );
    assert_eq!(Counts::default().note(), None);
}

/// Bytes that make sequences, and text around them.
fn token() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        Just(b"\x1b".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"P".to_vec()),
        Just(b"_".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\x07".to_vec()),
        Just(b";".to_vec()),
        Just(b"?".to_vec()),
        Just(b"%".to_vec()),
        Just(b"t".to_vec()),
        Just(b"m".to_vec()),
        Just(b"0".to_vec()),
        Just(b"2".to_vec()),
        Just(b"52".to_vec()),
        Just(b"8".to_vec()),
        Just(b"11".to_vec()),
        Just(b"21".to_vec()),
        Just(b"https:".to_vec()),
        Just(b"file:".to_vec()),
        Just(b"\x18".to_vec()),
        Just(b"\n".to_vec()),
        Just(vec![0x9b]),
        Just(vec![0x9d]),
        Just(vec![0x9c]),
        Just(vec![0x90]),
        Just(vec![0xc2]),
        Just(vec![0xe2]),
        Just(vec![0x82]),
        Just("ě".as_bytes().to_vec()),
        Just("€".as_bytes().to_vec()),
        Just(b"text".to_vec()),
    ]
}

proptest::proptest! {
    /// Where the reads split the stream does not matter; what passes passes again untouched
    /// (nothing the filter lets out is a sequence it would remove).
    #[test]
    fn split_anywhere_and_idempotent(
        tokens in proptest::collection::vec(token(), 0..40),
        at in 0usize..200,
        allow_all in proptest::bool::ANY,
    ) {
        let input = tokens.concat();
        let allow = if allow_all { ALL } else { NONE };
        let whole = filter_parts(allow, &[&input]);
        let at = at.min(input.len());
        proptest::prop_assert_eq!(&filter_parts(allow, &[&input[..at], &input[at..]]), &whole);
        let again = filter_parts(allow, &[&whole.0]);
        proptest::prop_assert_eq!(&again.0, &whole.0);
        proptest::prop_assert_eq!(again.1.total(), 0);
    }
}
