//! Under each action set, on any bytes: the scrubber never panics, valid
//! UTF-8 in gives valid UTF-8 out, and scrubbing twice equals scrubbing once
//! (the second scrub changes nothing and borrows its input).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir::problems::Problems;
use weir::scrub::{RawConfig, Scrubber};

const CONFIGS: [&str; 3] = [
    "",
    "ipv4 = \"hash\"\nipv6 = \"hash\"\nhash_rotation = \"1d\"\naddresses = \"all\"\nsecrets = \"hash\"",
    "ipv4 = \"mask\"\nipv6 = \"mask\"\nlogins = \"mask\"\nkeep_versions = false",
];

fn scrubbers() -> &'static [Scrubber] {
    static S: OnceLock<Vec<Scrubber>> = OnceLock::new();
    S.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|text| {
                let raw: RawConfig = toml::from_str(text).unwrap();
                let config = raw.validate("scrub", &mut Problems::default());
                Scrubber::with_key(&config, [7; 32]).unwrap()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let sc = &scrubbers()[usize::from(pick) % CONFIGS.len()];
    let once = sc.scrub_text(text, 1_700_000_000_000_000_000).into_owned();
    if std::str::from_utf8(text).is_ok() {
        assert!(std::str::from_utf8(&once).is_ok(), "UTF-8 in, not UTF-8 out");
    }
    let twice = sc.scrub_text(&once, 1_700_000_000_000_000_000);
    assert_eq!(&once[..], &twice[..], "scrubbing twice differs from once");
});
