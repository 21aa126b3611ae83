//! The RecordBatch header and the single-batch CRC path the proxy takes
//! for every partition of a Produce request.
//!
//! Input: the records field of one partition.

#![no_main]

use kafka_dedup_proxy::codec::record_batch::{
    RECORD_BATCH_OVERHEAD, parse_record_batch_header, parse_single_batch,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = parse_record_batch_header(data).map(|(rest, h)| (rest.len(), h));
    if let Ok((rest, h)) = &header {
        assert_eq!(*rest, data.len() - RECORD_BATCH_OVERHEAD);
        assert!(h.total_size() >= RECORD_BATCH_OVERHEAD);
        let _ = h.last_sequence();
        let _ = (h.is_transactional(), h.is_control());
    }
    if let Ok(h) = parse_single_batch(data) {
        let (_, parsed) = header.expect("a whole batch has a header");
        assert_eq!(h, parsed);
        assert_eq!(h.total_size(), data.len());
        assert_eq!(h.crc, crc32c::crc32c(&data[21..]));
    }
});
