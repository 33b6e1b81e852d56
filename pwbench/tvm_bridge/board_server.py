"""pwbench's board server: `python -m tvm.exec.rpc_server`, plus three things pwbench needs.

    python board_server.py --host 127.0.0.1 --port P --tracker HOST:PORT --key KEY

1. A global function `pwbench.board_info` that returns the board's facts as JSON (machine,
   cores, CPU model and SIMD flags, caches, memory, whether it is emulated, LLVM's name of its
   CPU when its TVM has LLVM, versions). Registered in this process before sessions fork, so every
   session sees it. Works with TVM's runtime alone (TVM_USE_RUNTIME_LIB=1) and under qemu-user,
   where /proc/cpuinfo is the x86 host's but /proc/self/auxv (the hwcaps) is the guest's.
2. The port it is given, exactly ([port, port + 1)): TVM's server takes the first free port up to
   a default end of 9199 and fails for any port above it.
3. Self-restart: in TVM's server a session that crashes (a segfault or SIGILL in a kernel, a
   re-uploaded library) kills the listen thread, and the process stays alive but no longer
   registered with the tracker. Here the listen loop is restarted (at most --max-restarts times).

A standalone script: the standard library and TVM only (it runs inside an emulated aarch64
Python that has no pwbench). It uses tvm.rpc.server.PopenRPCServerState, what TVM's own server
runs in its worker (internal in 0.27).
"""

import argparse
import json
import logging
import os
import platform
import signal
import struct
import sys
import time

HWCAP = {1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve", 23: "asimdfhm"}
HWCAP2 = {1: "sve2", 9: "svei8mm", 13: "i8mm", 14: "bf16"}
AT_HWCAP, AT_HWCAP2 = 16, 26
X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "amx_tile")
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd08": "Cortex-A72",
             "0xd0b": "Cortex-A76", "0xd0c": "Neoverse N1", "0xd40": "Neoverse V1",
             "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd49": "Neoverse N2",
             "0xd4f": "Neoverse V2"}


def _auxv() -> dict:
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    values = struct.unpack(f"<{len(raw) // 8}Q", raw[: len(raw) // 8 * 8])
    return dict(zip(values[0::2], values[1::2]))


def _cpuinfo() -> dict:
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "CPU implementer", "CPU part", "Features", "flags",
                           "cpu family", "model", "stepping") and key not in out:
                    out[key] = value.strip()
    except OSError:
        pass
    return out


def _llc_bytes():
    best, total, seen = 0, 0, set()
    root = "/sys/devices/system/cpu"
    try:
        cpus = [d for d in os.listdir(root) if d.startswith("cpu") and d[3:].isdigit()]
    except OSError:
        return None
    for cpu in cpus:
        cache = os.path.join(root, cpu, "cache")
        for index in (os.listdir(cache) if os.path.isdir(cache) else []):
            try:
                with open(os.path.join(cache, index, "level")) as f:
                    level = int(f.read())
                with open(os.path.join(cache, index, "shared_cpu_list")) as f:
                    shared = f.read().strip()
                with open(os.path.join(cache, index, "size")) as f:
                    text = f.read().strip()
            except (OSError, ValueError):
                continue
            size = int(text.rstrip("KMGkmg")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(
                text[-1:].upper(), 1)
            if level > best:
                best, total, seen = level, 0, set()
            if level == best and shared not in seen:
                seen.add(shared)
                total += size
    return total or None


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def facts() -> dict:
    """The facts of the machine this server runs on (what pwbench records for a board)."""
    import tvm_ffi

    def get(name):
        return tvm_ffi.get_global_func(name, allow_missing=True)

    machine = platform.machine()
    info = _cpuinfo()
    aux = _auxv()
    emulated = machine == "aarch64" and "flags" in info  # qemu-user shows the x86 host's cpuinfo
    if machine == "aarch64":
        flags = [n for b, n in HWCAP.items() if aux.get(AT_HWCAP, 0) >> b & 1]
        flags += [n for b, n in HWCAP2.items() if aux.get(AT_HWCAP2, 0) >> b & 1]
        part = ARM_PARTS.get(info.get("CPU part", "").lower())
        model = (f"qemu-aarch64 (-cpu {os.environ.get('QEMU_CPU', 'max')}) on {info.get('model name', '?')}"
                 if emulated else part or f"aarch64 CPU part {info.get('CPU part', '?')}")
        ident = "" if emulated else f"implementer {info.get('CPU implementer', '?')}, part {info.get('CPU part', '?')}"
    else:
        present = set(info.get("flags", "").split())
        flags = [f for f in X86_FLAGS if f in present or f.replace("_", "") in present]
        model = info.get("model name") or platform.processor() or machine
        ident = ", ".join(f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if k in info)
    llvm_cpu, triple, threads = (get(n) for n in ("tvm.codegen.llvm.GetHostCPUName",
                                                   "tvm.codegen.llvm.GetProcessTriple",
                                                   "runtime.NumThreads"))
    try:
        import tvm

        version = tvm.__version__
    except Exception:  # noqa: BLE001 - facts are best effort
        version = None
    return {
        "machine": machine, "cores": os.cpu_count(), "cpu_model": model, "cpu_id": ident,
        "cpu_flags": flags, "emulated": emulated, "llc_bytes": _llc_bytes(),
        "memory_bytes": _memory_bytes(), "hostname": platform.node(),
        "llvm_host_cpu": str(llvm_cpu()) if llvm_cpu else None,  # needs TVM's full library
        "llvm_triple": str(triple()) if triple else None,
        "tvm_threads": int(threads()) if threads else None,
        "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS"), "tvm": version,
        "python": platform.python_version(), "board_server": 1,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker")
    parser.add_argument("--key", required=True)
    parser.add_argument("--max-restarts", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # sessions are its process group's

    import tvm_ffi
    from tvm.rpc import server as rpc_server

    tvm_ffi.register_global_func("pwbench.board_info", lambda: json.dumps(facts()), override=True)
    host, port = args.tracker.rsplit(":", 1)
    home = os.getcwd()
    for attempt in range(args.max_restarts + 1):
        state = rpc_server.PopenRPCServerState(args.host, args.port, args.port + 1,
                                               tracker_addr=(host, int(port)), key=args.key,
                                               silent=True)
        print(f"board server {args.key}: listening on {args.host}:{state.port} "
              f"(start {attempt + 1})", flush=True)
        state.thread.join()  # returns only when the listen loop died: a session crashed
        state.sock.close()
        os.chdir(home)  # the crashed session left the cwd in its deleted temporary directory
        print(f"board server {args.key}: a session crashed, restarting", flush=True)
        time.sleep(0.5)
    print(f"board server {args.key}: {args.max_restarts} restarts, giving up", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main())
