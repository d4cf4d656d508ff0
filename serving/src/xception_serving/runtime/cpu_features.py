"""What this CPU can do for TensorFlow, read from /proc/cpuinfo (no TensorFlow import, so the
benchmark client can ask too)."""

from __future__ import annotations

from pathlib import Path

# CPU feature flags that give oneDNN native bfloat16 kernels (x86 `flags`, Arm `Features`).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_bfloat16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bfloat16 features this CPU reports, sorted; empty when it reports none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(flag for flag in value.split() if flag in BF16_CPU_FLAGS)
    return sorted(found)
