"""ctest CudaBuild.ModuleHasSm90Kernels: libl3lab_torch.so carries sm_90 (Hopper) machine code for each of
l3lab's CUDA kernels. Works without a GPU and without cuobjdump: the .nv_fatbin section (objcopy) is a
sequence of fatbins (magic 0xBA55ED50, header size at +6, payload size at +8), each holding entries whose
header gives kind (2 = ELF cubin, 1 = PTX) at +0, header size at +4, payload size at +8 and the SM at +28.

    python3 check_cuda_module.py build/libl3lab_torch.so
"""
import struct
import subprocess
import sys
import tempfile

KERNELS = [b"l3_forward_kernel", b"l3_backward_query_kernel", b"l3_backward_table_kernel", b"rotary_kernel",
           b"relu_square_kernel", b"relu_square_backward_kernel", b"adamw_kernel",
           b"softcap_ce_forward_kernel", b"softcap_ce_backward_kernel"]
MAGIC = 0xBA55ED50


def fatbin_entries(data):
    off = 0
    while off + 16 <= len(data):
        if struct.unpack_from("<I", data, off)[0] != MAGIC:
            off += 8  # fatbins are 8-byte aligned; skip padding
            continue
        header, size = struct.unpack_from("<H", data, off + 6)[0], struct.unpack_from("<Q", data, off + 8)[0]
        entry, end = off + header, off + header + size
        while entry + 32 <= end:
            kind, entry_header, payload = struct.unpack_from("<HxxII", data, entry)
            sm = struct.unpack_from("<I", data, entry + 28)[0]
            yield kind, sm, data[entry + entry_header: entry + entry_header + payload]
            entry += entry_header + payload
        off = end


def main(module):
    with tempfile.NamedTemporaryFile() as out:
        subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", module, out.name], check=True)
        data = open(out.name, "rb").read()
    entries = list(fatbin_entries(data))
    summary = sorted({("cubin" if kind == 2 else "ptx" if kind == 1 else f"kind{kind}", sm) for kind, sm, _ in entries})
    print(f"{module}: fatbin entries (kind, sm): {summary}")
    sm90 = b"".join(payload for kind, sm, payload in entries if kind == 2 and sm == 90)
    missing = [k.decode() for k in KERNELS if k not in sm90]
    if not sm90 or missing:
        print(f"FAIL: sm_90 cubins {'lack ' + ', '.join(missing) if sm90 else 'are missing'}")
        return 1
    print(f"ok: sm_90 machine code for all {len(KERNELS)} kernels ({len(sm90):,} bytes of cubin)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
