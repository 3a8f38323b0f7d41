#!/usr/bin/env python3
"""Decode RocketMQ remoting frames from a loopback capture.

    tcpdump -i lo -w /tmp/rmq.pcap 'tcp port 40000 or tcp port 40002'
    python3 tests/interop/tools/rmq_pcap.py /tmp/rmq.pcap [--ports 40000,40002] [--bodies]

Prints, per TCP direction and in capture order, each frame: time, direction,
serialization type, code, flag (REQ/RESP, oneway), opaque, remark, extFields
and the body length (with --bodies: the body, printable part). Only classic
pcap (not pcapng), Ethernet/Linux-cooked/raw link types, IPv4.
"""

import json
import struct
import sys


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        raise SystemExit("not a classic pcap file (use tcpdump -w, or editcap -F pcap)")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        ts, tsu, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        yield ts + tsu / 1e6, linktype, data[off:off + incl]
        off += incl


def tcp_segments(path):
    for ts, lt, pkt in read_pcap(path):
        if lt == 1:
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif lt == 113:
            ip = pkt[16:]
        elif lt == 276:
            ip = pkt[20:]
        elif lt in (101, 12):
            ip = pkt
        elif lt == 0:
            ip = pkt[4:]
        else:
            continue
        if not ip or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        src = "%d.%d.%d.%d" % tuple(ip[12:16])
        dst = "%d.%d.%d.%d" % tuple(ip[16:20])
        tcp = ip[ihl:total]
        sp, dp, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        payload = tcp[doff:]
        yield ts, (src, sp), (dst, dp), seq, payload


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    path = args[0]
    ports = None
    bodies = "--bodies" in args
    if "--ports" in args:
        ports = {int(p) for p in args[args.index("--ports") + 1].split(",")}
    streams = {}
    events = []
    for ts, s, d, seq, payload in tcp_segments(path):
        if ports and s[1] not in ports and d[1] not in ports:
            continue
        if not payload:
            continue
        st = streams.setdefault((s, d), {"buf": b"", "next": None})
        if st["next"] is not None and seq < st["next"]:
            continue  # retransmission
        st["next"] = seq + len(payload)
        st["buf"] += payload
        while len(st["buf"]) >= 8:
            total, hword = struct.unpack(">ii", st["buf"][:8])
            if len(st["buf"]) < 4 + total:
                break
            frame, st["buf"] = st["buf"][4:4 + total], st["buf"][4 + total:]
            serial, hlen = (hword >> 24) & 0xFF, hword & 0xFFFFFF
            hdr = frame[4:4 + hlen]
            body = frame[4 + hlen:]
            try:
                h = json.loads(hdr.decode("utf-8")) if serial == 0 else {"binary": hdr.hex()}
            except ValueError:
                h = {"undecodable": hdr[:200].decode("latin-1")}
            events.append((ts, s, d, serial, hword, h, body))
    t0 = events[0][0] if events else 0
    for ts, s, d, serial, hword, h, body in events:
        flag = h.get("flag", 0)
        kind = ("RESP" if flag & 1 else "REQ ") + (" oneway" if flag & 2 else "")
        print("%8.3f %s:%d -> %s:%d ser=%d hw=0x%08x %s code=%s opaque=%s remark=%r lang=%s ver=%s" % (
            ts - t0, s[0], s[1], d[0], d[1], serial, hword, kind, h.get("code"), h.get("opaque"),
            h.get("remark"), h.get("language"), h.get("version")))
        if h.get("extFields"):
            print("          ext=%s" % json.dumps(h["extFields"], sort_keys=True))
        if body:
            if bodies:
                txt = body[:600].decode("latin-1")
                print("          body[%d]=%r" % (len(body), txt))
            else:
                print("          body %d bytes" % len(body))
    for k, st in streams.items():
        if st["buf"]:
            print("# %s:%d -> %s:%d: %d trailing bytes not a full frame" % (k[0] + k[1] + (len(st["buf"]),)))


if __name__ == "__main__":
    main()
