//! The Pub/Sub push envelope monitor receives from anyone who reaches `/pubsub`: any body is
//! either refused with an error or parsed into a message whose id obeys the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_core::runtime::push;

fuzz_target!(|body: &[u8]| {
    if let Ok(m) = push::parse(body) {
        assert!(!m.message_id.is_empty() && m.message_id.len() <= 200, "{:?}", m.message_id);
        assert!(!m.message_id.starts_with('.'));
    }
});
