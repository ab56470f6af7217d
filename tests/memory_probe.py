"""Peak memory of one piece of work, on the CPU (torch's memory profiler) or a CUDA device (its
allocator's statistics): what the memory benchmarks and the patches' memory-budget tests measure."""

from __future__ import annotations

from collections.abc import Callable

import torch


def peak_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> tuple[int, object]:
    """(the peak of bytes allocated minus freed by torch on `device` while fn() runs, fn's result).
    Tensors that exist before the call are not counted, tensors it returns are. On the CPU: the running
    sum of ``torch.profiler`` allocation/free events (profile_memory=True); on CUDA: the allocator's peak
    above what was allocated at the start."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start, result
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak, result
