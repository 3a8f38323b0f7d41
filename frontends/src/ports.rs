//! Free TCP ports for the servers that tests and benchmarks start on
//! loopback (never the fixed 9876 / 10911, which may be taken).

use std::net::TcpListener;

use rand::Rng;

/// A port P with P, P−2 (fast port) and P+1 (HA port) free: a broker's.
/// `None` if no such port turned up.
pub fn free_port_pair() -> Option<u16> {
    free_ports_around(&[-2, 0, 1])
}

/// One free port, for a server that is restarted on the same port.
pub fn free_port() -> Option<u16> {
    free_ports_around(&[0])
}

/// A port P such that P + each of `offsets` is free (checked on 0.0.0.0,
/// which also covers 127.0.0.1).
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`): a
/// port from that range can be handed to any outgoing connection as its
/// local port as soon as its listener is gone, and a server restarted
/// after a kill -9 then could not bind it again (seen once in CI).
fn free_ports_around(offsets: &[i32]) -> Option<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<i32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000, ephemeral_low.max(10_100) - 2);
    let mut rng = rand::thread_rng();
    (0..2000).find_map(|_| {
        let p: i32 = rng.gen_range(low..high);
        let free = offsets
            .iter()
            .all(|o| u16::try_from(p + o).is_ok_and(|q| TcpListener::bind(("0.0.0.0", q)).is_ok()));
        free.then_some(p as u16)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ports handed out can be bound, all three of a broker's.
    #[test]
    fn a_broker_port_triple_is_free() {
        let p = free_port_pair().expect("ports");
        for q in [p - 2, p, p + 1] {
            assert!(TcpListener::bind(("127.0.0.1", q)).is_ok(), "{q}");
        }
        assert!(free_port().is_some());
    }
}
