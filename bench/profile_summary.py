"""Where a process's CPU goes, from a py-spy ``--format raw --full-filenames`` profile.

``python -m bench.profile_summary bench/results/profile-....txt [--top 25]``

Each line of the profile is one call stack (root first, frames ``function (file:line)``)
and the number of samples taken in it; py-spy samples only when the thread is running,
so the shares below are shares of the CPU time the process used.

Two views:

* **self, by component**: each sample goes to the component of its innermost frame that
  belongs to a library or to the worker; standard-library frames (``json``, ``re``,
  ``asyncio``, ``logging`` ...) count for the component that called them, except those
  called by the worker's own code, which are shown by module (``json (from app/)``);
* **inclusive**: the share of samples with at least one frame of a component on the stack
  (a component calling another counts for both, so these add up to more than 100%).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

__all__ = ["categorise_stack", "load_profile", "summarise_profile"]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# (component, how to recognise its files), first match wins.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("pydantic", ("/pydantic/", "/pydantic_core/", "/pydantic_settings/")),
    ("fast_depends (FastStream DI)", ("/fast_depends/",)),
    ("faststream", ("/faststream/",)),
    ("redis-py", ("/redis/",)),
    ("groq SDK", ("/groq/",)),
    ("httpx (+httpx_aiohttp)", ("/httpx/", "/httpx_aiohttp/", "/httpcore/")),
    (
        "aiohttp (+yarl, multidict)",
        ("/aiohttp/", "/yarl/", "/multidict/", "/aiosignal/", "/propcache/"),
    ),
    ("structlog", ("/structlog/",)),
    ("prometheus_client", ("/prometheus_client/",)),
    ("tenacity", ("/tenacity/",)),
    ("anyio", ("/anyio/",)),
    ("uvloop", ("/uvloop/",)),
    ("typing_extensions/annotated_types", ("/typing_extensions", "/annotated_types/")),
    ("app/ (the worker)", ("/app/",)),
    ("bench/ (a baseline)", ("/bench/",)),
]

_STDLIB = re.compile(r"/lib/python3\.\d+/(?P<module>[^/]+)")


def component_of(path: str) -> str | None:
    """The component a frame's file belongs to, or None for the standard library."""
    installed = "site-packages" in path
    for name, markers in COMPONENTS:
        ours = name.startswith(("app/", "bench/"))
        if ours == installed:
            continue
        if any(marker in path for marker in markers):
            return name
    return None


def stdlib_module(path: str) -> str:
    match = _STDLIB.search(path)
    if match is None:
        return "<native or unknown>"
    module = match.group("module")
    return module.removesuffix(".py")


def parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match.group("func"), match.group("file") or ""


def load_profile(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        stack_text, _, count = line.rpartition(" ")
        try:
            samples = int(count)
        except ValueError:
            continue
        frames = [parse_frame(frame) for frame in stack_text.split(";") if frame]
        stacks.append((frames, samples))
    return stacks


THREAD_HOP = "anyio.to_thread hop (fast_depends runs a sync dependency in a thread)"
UVLOOP = "event loop (uvloop's C code: I/O callbacks, transports)"


def categorise_stack(frames: list[tuple[str, str]]) -> str:
    """The self component of one stack (innermost library or worker frame)."""
    if not frames:
        return "stdlib: unknown"
    if any(func == "run_in_threadpool" and "/fast_depends/" in path for func, path in frames):
        return THREAD_HOP
    if any(func == "WorkerThread.run" and "/anyio/" in path for func, path in frames):
        return THREAD_HOP
    leaf_func, leaf_path = frames[-1]
    if leaf_func == "Runner.run" and leaf_path.endswith("asyncio/runners.py"):
        return UVLOOP
    innermost_stdlib: str | None = None
    for _func, path in reversed(frames):
        component = component_of(path)
        if component is None:
            if innermost_stdlib is None and path:
                innermost_stdlib = stdlib_module(path)
            continue
        if component == "app/ (the worker)" and innermost_stdlib:
            return f"{innermost_stdlib} (from app/)"
        if component == "bench/ (a baseline)" and innermost_stdlib:
            return f"{innermost_stdlib} (from bench/)"
        return component
    if innermost_stdlib in {"asyncio", "selectors"}:
        return "event loop (asyncio)"
    return f"stdlib: {innermost_stdlib or 'unknown'}"


def summarise_profile(path: Path, top: int = 20) -> str:
    stacks = load_profile(path)
    total = sum(samples for _frames, samples in stacks)
    if not total:
        return f"{path}: no samples"
    self_by: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    functions_inclusive: Counter[str] = Counter()
    for frames, samples in stacks:
        self_by[categorise_stack(frames)] += samples
        # Inclusive shares leave out the frames every stack starts with (the CLI, anyio's
        # runner, the loop), or every component on that path would show 100%.
        below_loop = frames
        for index in range(len(frames) - 1, -1, -1):
            if frames[index][0] == "Runner.run" and frames[index][1].endswith("asyncio/runners.py"):
                below_loop = frames[index + 1 :]
                break
        seen = {component_of(p) or f"stdlib: {stdlib_module(p)}" for _f, p in below_loop if p}
        if categorise_stack(frames) in {THREAD_HOP, UVLOOP}:
            seen.add(categorise_stack(frames))
        for name in seen:
            inclusive[name] += samples
        if frames:
            func, file = frames[-1]
            leaf[f"{func} ({_short(file)})"] += samples
        seen_funcs = {f"{func} ({_short(file)})" for func, file in frames}
        for name in seen_funcs:
            functions_inclusive[name] += samples

    def pct(count: int) -> str:
        return f"{100 * count / total:5.1f}%"

    lines = [f"profile {path.name}: {total} samples (CPU-active only)", "", "self, by component:"]
    lines += [f"  {pct(c)}  {name}" for name, c in self_by.most_common(top)]
    lines += ["", "inclusive (on the stack), by component:"]
    lines += [
        f"  {pct(c)}  {name}"
        for name, c in inclusive.most_common()
        if not name.startswith("stdlib:")
        or name in {"stdlib: json", "stdlib: logging", "stdlib: re"}
    ][:top]
    lines += ["", "top functions, self:"]
    lines += [f"  {pct(c)}  {name}" for name, c in leaf.most_common(top)]
    lines += ["", "top worker functions (app/), inclusive:"]
    lines += [
        f"  {pct(c)}  {name}" for name, c in functions_inclusive.most_common() if "(app/" in name
    ][:top]
    return "\n".join(lines)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    for marker in ("/app/", "/bench/"):
        if marker in path:
            return marker.strip("/") + "/" + path.split(marker, 1)[1]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(summarise_profile(args.profile, args.top))


if __name__ == "__main__":
    main()
