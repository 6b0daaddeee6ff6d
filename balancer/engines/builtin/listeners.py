"""Listening sockets for virtual services.

With workers, each (VIP, port) has a group of sockets sharing it with SO_REUSEPORT, one per
worker, and a classic BPF program that gives the kernel's choice among them to the client's
source address: a client always reaches the same worker, so each worker's persistence table
stays right. The program returns the source address modulo the number of workers, an index
into the group in the order its sockets started listening; the supervisor opens them in worker
order and keeps them open while workers come and go, so the order never changes.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from balancer.engines.builtin.relay import keepalive

BACKLOG = 4096
# Linux's IP_FREEBIND: bind a floating VIP that is not (yet) on this node, as HA needs.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_ATTACH_REUSEPORT_CBPF = 51
# Classic BPF, as in <linux/filter.h>. The program sees the packet from its transport
# payload on; SKF_NET_OFF reaches back to the network header.
_LD_W_ABS, _ALU_MOD_K, _RET_A = 0x20, 0x94, 0x16
SKF_NET_OFF = -0x100000
SOURCE_WORD: dict[int, int] = {socket.AF_INET: 12, socket.AF_INET6: 8 + 12}  # source's last word


def listen(ip: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking socket; OSError says why not."""
    return _listening(ip, port, reuseport=False)


def listen_group(ip: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets sharing (ip, port), worker ``i`` taking the clients whose source
    address is ``i`` modulo ``count``; OSError (and nothing left open) if not."""
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            group.append(_listening(ip, port, reuseport=True))
        program, fprog = source_program(group[0].family, count)
        group[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
        del program  # the kernel has its own copy now
    except OSError:
        for sock in group:
            sock.close()
        raise
    return group


def source_program(family: int, count: int) -> tuple[ctypes.Array[ctypes.c_char], bytes]:
    """The program (kept alive by the caller until attached) and its ``sock_fprog``."""
    offset = (SKF_NET_OFF + SOURCE_WORD[family]) & 0xFFFFFFFF
    instructions = [(_LD_W_ABS, offset), (_ALU_MOD_K, count), (_RET_A, 0)]
    code = b"".join(struct.pack("HBBI", op, 0, 0, k) for op, k in instructions)
    program = ctypes.create_string_buffer(code, len(code))
    return program, struct.pack("@HP", len(instructions), ctypes.addressof(program))


def worker_of(client: str, count: int) -> int:
    """The worker the program above gives ``client`` (an address) to, of ``count``."""
    packed = socket.inet_pton(socket.AF_INET6 if ":" in client else socket.AF_INET, client)
    return int.from_bytes(packed[-4:]) % count


def _listening(ip: str, port: int, *, reuseport: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        keepalive(sock)  # accepted sockets inherit it: no system calls per client
        sock.bind((ip, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
