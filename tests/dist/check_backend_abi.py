#!/usr/bin/env python3
"""Checks, on the built binaries, that l3lab declares libtorch's c10d backends soundly (docs/distributed.md).

The torch wheel ships Gloo compiled into libtorch_cpu.so but no gloo headers; gloo_backend.cpp compiles
ProcessGroupGloo.hpp against Debian's older gloo headers. That is sound if and only if:
  1. libl3lab_torch.so defines no gloo symbol and references none (nothing of ours can stand in for
     libtorch's gloo, and we call no gloo code whose layout we would have to know), and links no libgloo;
  2. every c10d::ProcessGroupGloo symbol our object references is one libtorch_cpu.so exports;
  3. the one size we compute from the header, sizeof(ProcessGroupGloo) for the allocation, is the size
     libtorch itself allocates (its ProcessGroupGloo::split() and merge() construct the same class).
The same size check runs for ProcessGroupNCCL and its Options (NCCL's header defines a struct inside
Options; libtorch allocates Options in ProcessGroupNCCL::shrink()) when the NCCL backend is built.

Usage: check_backend_abi.py --module libl3lab_torch.so --objects OBJ:OBJ:... --torch-lib DIR
"""
import argparse
import os
import re
import subprocess
import sys

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message)


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def symbols(path, *flags):
    return run("nm", "-C", *flags, path).splitlines()


def allocation_sizes_in_object(obj, name_pattern):
    """Sizes passed to operator new in the functions of a relocatable object whose name matches."""
    sizes, function, last_edi = set(), "", None
    for line in run("objdump", "-dr", "-C", "--no-show-raw-insn", obj).splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function, last_edi = header.group(1), None
            continue
        mov = re.search(r"mov\s+\$0x([0-9a-f]+),%edi", line)
        if mov:
            last_edi = int(mov.group(1), 16)
        if "operator new(unsigned long)" in line and "R_X86_64" in line and re.search(name_pattern, function):
            if last_edi is not None:
                sizes.add(last_edi)
    return sizes


def allocation_sizes_in_library(lib, functions):
    """Sizes passed to operator new inside the named exported functions of a shared library."""
    sizes = set()
    for line in run("nm", "-DC", "--defined-only", "-S", lib).splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[2] not in "TtWw" or not any(parts[3].startswith(f + "(") for f in functions):
            continue
        start, size = int(parts[0], 16), int(parts[1], 16)
        last_edi = None
        for insn in run("objdump", "-d", "-C", "--no-show-raw-insn", "--start-address=%#x" % start,
                        "--stop-address=%#x" % (start + size), lib).splitlines():
            mov = re.search(r"mov\s+\$0x([0-9a-f]+),%edi", insn)
            if mov:
                last_edi = int(mov.group(1), 16)
            if "<operator new(unsigned long)@plt>" in insn and last_edi is not None:
                sizes.add(last_edi)
    return sizes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--module", required=True)
    parser.add_argument("--objects", required=True, help="the module's object files, ':'-separated")
    parser.add_argument("--torch-lib", required=True)
    args = parser.parse_args()
    objects = [o for o in args.objects.split(":") if o]
    gloo_obj = [o for o in objects if os.path.basename(o).startswith("gloo_backend.cpp.o")]
    nccl_obj = [o for o in objects if os.path.basename(o).startswith("nccl_backend.cpp.o")]
    if len(gloo_obj) != 1:
        fail("gloo_backend.cpp.o not found among the module's objects")
        return 1
    libtorch_cpu = os.path.join(args.torch_lib, "libtorch_cpu.so")

    # 1. no gloo symbol defined or referenced by the module, no libgloo linked
    ours = [l for l in symbols(args.module) if re.search(r"\bgloo::", l)]
    for line in ours:
        fail("libl3lab_torch.so has a gloo symbol: " + line.strip())
    needed = run("readelf", "-d", args.module)
    if "libgloo" in needed:
        fail("libl3lab_torch.so links libgloo")
    print("module: %d gloo symbols, libgloo %s" % (len(ours), "linked" if "libgloo" in needed else "not linked"))

    # 2. every ProcessGroupGloo symbol the object uses is exported by libtorch_cpu.so
    exported = {l.split(" ", 2)[2] for l in symbols(libtorch_cpu, "-D", "--defined-only") if l.count(" ") >= 2}
    used = [l.split("U ", 1)[1].strip() for l in symbols(gloo_obj[0], "-u")]
    gloo_used = [u for u in used if "ProcessGroupGloo" in u]
    for u in gloo_used:
        if u not in exported:
            fail("gloo_backend.cpp.o uses %s, which libtorch_cpu.so does not export" % u)
    if not gloo_used:
        fail("gloo_backend.cpp.o references no ProcessGroupGloo symbol (the check would prove nothing)")
    print("gloo_backend.cpp.o references %d ProcessGroupGloo symbols, all exported by libtorch_cpu.so:" % len(gloo_used))
    for u in gloo_used:
        print("  " + u)

    # 3. allocation sizes
    def compare(what, obj, pattern, lib, functions):
        mine = allocation_sizes_in_object(obj, pattern)
        theirs = allocation_sizes_in_library(lib, functions)
        print("%s: sizes allocated by %s %s, by libtorch's %s %s" % (
            what, os.path.basename(obj), sorted(mine), "/".join(functions), sorted(theirs)))
        if not mine:
            fail("%s: found no allocation in %s" % (what, os.path.basename(obj)))
        for size in mine - theirs:
            fail("%s: we allocate %d bytes, a size libtorch never allocates for it (%s)" % (what, size, sorted(theirs)))

    compare("ProcessGroupGloo", gloo_obj[0], r"ProcessGroupGloo|make_gloo_backend", libtorch_cpu,
            ["c10d::ProcessGroupGloo::split", "c10d::ProcessGroupGloo::merge"])
    if nccl_obj:
        compare("ProcessGroupNCCL", nccl_obj[0], r"ProcessGroupNCCL|make_nccl_backend",
                os.path.join(args.torch_lib, "libtorch_cuda.so"),
                ["c10d::ProcessGroupNCCL::split", "c10d::ProcessGroupNCCL::merge", "c10d::ProcessGroupNCCL::shrink"])
    else:
        print("no NCCL backend in this build: its check is skipped")

    print("FAILED" if failures else "OK: the c10d backends are declared soundly")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
