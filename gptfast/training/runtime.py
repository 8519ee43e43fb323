"""Device, precision and compilation choices for a run.

CUDA when available (else CPU); on GPUs bf16 autocast where supported, fp16
with a GradScaler otherwise; float32 on CPU, where --dtype bfloat16 is bf16
autocast (about 2x faster on CPUs with AMX or AVX512-BF16, see
`cpu_has_native_bf16`).  TF32 matmuls on where the GPU
has them (Ampere+), which costs nothing visible for training.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from gptfast.config import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype          # autocast dtype (float32: no autocast)
    compile: bool

    @property
    def device_type(self) -> str:
        return self.device.type

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self):
        # Only fp16 needs loss scaling (bf16 has float32's exponent range).
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return name


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16),
    where oneDNN's bfloat16 matmuls run several times faster than float32
    ones.  Elsewhere bfloat16 is emulated and slower."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")   # torch.cpu's private probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def make_runtime(device: str, dtype: str, compile_flag) -> Runtime:
    dev = torch.device(device)
    if dtype == "auto":
        if dev.type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    if dtype == "float16" and dev.type == "cpu":
        raise ConfigError("--dtype float16 needs a GPU; use float32 or bfloat16 on the CPU")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_compile = (dev.type == "cuda") if compile_flag is None else bool(compile_flag)
    return Runtime(dev, _DTYPES[dtype], use_compile)


def flops_per_token(n_params: int, n_layer: int, n_embd: int, block_size: int) -> float:
    """Training FLOPs per token, forward + backward (PaLM appendix B, as in nanoGPT):
    6 per parameter plus the attention scores 12 * L * C * T."""
    return 6.0 * n_params + 12.0 * n_layer * n_embd * block_size
