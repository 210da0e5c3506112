//! Header decoding on arbitrary bytes: never panics; whatever decodes re-encodes to the
//! same bytes (canonical form).
#![no_main]

use blindcall_sframe::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, used)) = Header::decode(data) {
        let mut out = [0u8; Header::MAX_LEN];
        let n = header.encode(&mut out).expect("MAX_LEN always suffices");
        assert_eq!(n, used);
        assert_eq!(&out[..n], &data[..used]);
    }
});
