from __future__ import annotations

import random
import socket


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port_block(offsets: tuple[int, ...], host: str = "127.0.0.1") -> int:
    """A base port such that base + each offset is free (SeaweedFS needs several)."""
    candidates = list(range(20_000, 40_000, 50))
    random.shuffle(candidates)
    for base in candidates:
        if all(port_is_free(base + offset, host) for offset in offsets):
            return base
    raise RuntimeError("no free block of ports between 20000 and 40000")
