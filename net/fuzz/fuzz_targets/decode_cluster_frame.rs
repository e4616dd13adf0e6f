//! Fuzzes node-to-node frames: any bytes a peer node (or anything that
//! reaches the replication port) sends must end in a validated message or
//! an error, never a panic, an abort or runaway memory.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_net::cluster::{
    encode_archived, Frame, HeartbeatReplies, Heartbeats, Hello, HelloReply, Kind, RaftMessages,
    ReplicaFetch, ReplicaFetchReply,
};
use sluice_net::guard::GuardedAlloc;

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc(std::alloc::System);

fn view_all(f: &Frame) {
    let _ = match f.kind {
        Kind::Hello => f.decode::<Hello>().map(|_| ()),
        Kind::HelloReply => f.decode::<HelloReply>().map(|_| ()),
        Kind::Heartbeats => f.decode::<Heartbeats>().map(|_| ()),
        Kind::HeartbeatReplies => f.decode::<HeartbeatReplies>().map(|_| ()),
        Kind::ReplicaFetch => f.decode::<ReplicaFetch>().map(|_| ()),
        Kind::ReplicaFetchReply => f.decode::<ReplicaFetchReply>().map(|_| ()),
        Kind::Raft => f.decode::<RaftMessages>().map(|_| ()),
    };
}

fuzz_target!(|data: &[u8]| {
    // As received: header, CRC and all.
    if let Ok(f) = Frame::from_bytes(Bytes::copy_from_slice(data)) {
        view_all(&f);
    }
    // Past the CRC: the input's first byte picks a kind, the rest is the
    // body, so validation itself meets arbitrary bytes (a CRC only stops
    // random corruption, not a peer that computes it over garbage).
    if let Some((&k, rest)) = data.split_first() {
        let kind = Kind::from_u16(u16::from(k % 7) + 1).expect("kinds 1..=7");
        // The second byte splits the rest into body and raw part.
        let (body, raw) = match rest.split_first() {
            Some((&cut, rest)) => rest.split_at((cut as usize).min(rest.len())),
            None => (rest, &[][..]),
        };
        let raw = vec![Bytes::copy_from_slice(raw)];
        if let Ok(out) = encode_archived(kind, body, raw) {
            let f = Frame::from_bytes(out.to_bytes()).expect("a frame just encoded is whole");
            view_all(&f);
        }
    }
});
