"""How a device runs the training loop: numeric precision and memory layout, chosen per device.

Measured with a plain loop (docs/benchmarks.md, *Speed*): on CPUs with native bf16 (AVX-512 BF16 or
AMX) bf16 autocast plus channels-last trains the small CNNs about 3x faster than fp32 at equal
accuracy; where bf16 is only emulated (AVX2) it is 4-8x *slower*, while channels-last alone is
still 1.5-2x faster than contiguous fp32. `auto` follows those measurements; `bf16` and `fp32`
force a choice. Weights stay fp32 under autocast, so exported models are fp32 either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Accel:
    """bf16 needs no loss scaling (fp32's exponent range), so autocast alone is enough."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def precision(self) -> str:
        return "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"

    @property
    def name(self) -> str:
        """What the trials table, best.yaml and MLflow record, e.g. ``bf16+channels_last``."""
        return self.precision + ("+channels_last" if self.channels_last else "")

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        # Only image batches (N, C, H, W) have a channels-last layout; tabular ones are left alone.
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


def native_bf16_cpu() -> bool:
    """bf16 matmuls in hardware: AVX-512 BF16 (Zen 4, Cooper Lake and later) or AMX tiles."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def accelerator(device: torch.device, precision: str = "auto", bf16_supported: bool | None = None) -> Accel:
    """The fastest numerics that keep accuracy on `device` (`auto`), or the forced `precision`.
    `bf16_supported` overrides detection (tests)."""
    check_precision(precision)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else native_bf16_cpu()
    # Channels-last measured faster in every case on both device kinds; it changes no numbers
    # beyond summation order, so it stays on whatever the precision.
    if precision == "fp32" or (precision == "auto" and not bf16_supported):
        return Accel(None, channels_last=True)
    return Accel(torch.bfloat16, channels_last=True)
