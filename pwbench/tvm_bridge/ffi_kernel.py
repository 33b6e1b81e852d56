"""An exported TVM CPU kernel called through its C entry point, with neither TVM nor its runtime.

What the instruction clock counts a TVM kernel with (measure/instructions.py). Under valgrind,
`import tvm` costs minutes even runtime-only (and tvm_ffi imports torch first); an exported CPU
library needs none of it. Its `main` PrimFunc is the C symbol `__tvm_ffi_main`, a
TVMFFISafeCallType (apache-tvm-ffi 0.1.x, tvm/ffi/c_api.h):

    int __tvm_ffi_main(void *handle, const TVMFFIAny *args, int32_t num_args, TVMFFIAny *result)

with each tensor passed as TVMFFIAny{type_index = kTVMFFIDLTensorPtr (7), v_ptr = DLTensor*},
result->type_index = kTVMFFINone (0); it returns 0, or -1 after reporting the error through
TVMFFIErrorSetRaisedFromCStrParts, which the library imports. The library also holds function
pointer slots that TVM's runtime fills when it loads a module: __TVMBackendAllocWorkspace /
FreeWorkspace (the untuned TOPI kernel's padded input is such a workspace) and, for schedules with
parallel loops, __TVMBackendParallelLaunch / Barrier. HELPER_SOURCE defines all of these: the
error function keeps the message, workspaces come from a pool (after the first call no malloc
runs inside a counted call: glibc's path length varies by ~300 instructions with the heap's
state), and a parallel launch runs its one task on the calling thread, as TVM's runtime does with
one thread. The argument unpacking differs from a call through TVM's runtime (DLTensor pointers,
not tvm.runtime.Tensor objects: ~300 instructions less), so counts of this kernel are compared
only with counts made the same way (the instruction clock always makes them so).

NumPy only: this module never imports TVM. The buffers are NumPy arrays and the workspaces
blocks of the pool, all page-aligned: TVM's generated code may assume its allocator's 64-byte
alignment, and glibc's memcpy (the untuned kernel copies its input into the padded workspace)
takes a path that depends on the distance between source and destination modulo a page, which
differed between processes by 64 instructions until every buffer started on a page.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from pwbench.measure.clocks import InstructionClock, host_clock
from pwbench.tvm_bridge.kernel import Artifact, BufferKernel

ALIGNMENT = 4096  # a page: see the docstring
K_DL_CPU, K_DL_FLOAT = 1, 2
K_TVM_FFI_NONE, K_TVM_FFI_DLTENSOR_PTR = 0, 7
SLOTS = {"__TVMBackendAllocWorkspace": "pwbench_tvm_alloc_workspace",
         "__TVMBackendFreeWorkspace": "pwbench_tvm_free_workspace",
         "__TVMBackendParallelLaunch": "pwbench_tvm_parallel_launch",
         "__TVMBackendParallelBarrier": "pwbench_tvm_parallel_barrier"}

HELPER_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* What an exported TVM CPU kernel imports from libtvm_ffi, and what TVM's runtime would put in
 * its backend slots. See tvm_bridge/ffi_kernel.py. */
static char message[4096];
void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t n) {
  message[0] = 0;
  strncat(message, kind ? kind : "Error", sizeof message - 1);
  strncat(message, ": ", sizeof message - strlen(message) - 1);
  for (int32_t i = 0; i < n; i++)
    if (parts[i]) strncat(message, parts[i], sizeof message - strlen(message) - 1);
}
const char *pwbench_tvm_error(void) { return message; }

enum { POOL = 256 };
static struct { void *ptr; uint64_t nbytes; int busy; } pool[POOL];
void *pwbench_tvm_alloc_workspace(int device_type, int device_id, uint64_t nbytes, int code,
                                  int bits) {
  (void)device_type; (void)device_id; (void)code; (void)bits;
  for (int i = 0; i < POOL; i++)
    if (pool[i].ptr && !pool[i].busy && pool[i].nbytes == nbytes) {
      pool[i].busy = 1;
      return pool[i].ptr;
    }
  for (int i = 0; i < POOL; i++)
    if (!pool[i].ptr) {
      pool[i].ptr = aligned_alloc(4096, (nbytes + 4095) / 4096 * 4096); /* a page */
      pool[i].nbytes = nbytes;
      pool[i].busy = pool[i].ptr != NULL;
      return pool[i].ptr;
    }
  return NULL; /* the kernel reports the failed allocation */
}
int pwbench_tvm_free_workspace(int device_type, int device_id, void *ptr) {
  (void)device_type; (void)device_id;
  for (int i = 0; i < POOL; i++)
    if (pool[i].ptr == ptr) { pool[i].busy = 0; return 0; }
  return -1;
}

typedef struct { void *sync_handle; int32_t num_task; } ParallelEnv;
typedef int (*ParallelLambda)(int task_id, ParallelEnv *penv, void *cdata);
int pwbench_tvm_parallel_launch(ParallelLambda f, void *cdata, int num_task) {
  (void)num_task;
  ParallelEnv env = {NULL, 1}; /* one task: the whole range, on this thread */
  return f(0, &env, cdata);
}
int pwbench_tvm_parallel_barrier(int task_id, ParallelEnv *penv) {
  (void)task_id; (void)penv;
  return 0;
}

/* The instruction clock's loop, in C: between zero() and dump() runs the kernel and nothing
 * else (a loop in Python would add the interpreter's few thousand, slightly varying,
 * instructions to each count). zero and dump are callgrind's client requests. */
typedef int (*SafeCall)(void *, const void *, int32_t, void *);
int pwbench_tvm_count(SafeCall f, const void *args, int32_t n, void *result, void (*zero)(void),
                      void (*dump)(const char *), const char **tags, int ntags) {
  int failed = 0;
  for (int i = 0; i < ntags; i++) {
    zero();
    failed |= f(NULL, args, n, result);
    dump(tags[i]);
  }
  return failed;
}
"""


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class TVMFFIAny(ctypes.Structure):
    _fields_ = [("type_index", ctypes.c_int32), ("zero_padding", ctypes.c_uint32),
                ("v_ptr", ctypes.c_void_p)]


SAFE_CALL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(TVMFFIAny),
                             ctypes.c_int32, ctypes.POINTER(TVMFFIAny))


def helper() -> str:
    """The helper library (built here once; a kernel's make gets its path)."""
    from pwbench import native

    return str(native.library("pwbench_tvm_ffi", HELPER_SOURCE))


@functools.cache
def _helper(path: str) -> ctypes.CDLL:
    # RTLD_GLOBAL: the kernel libraries loaded after it resolve TVMFFIErrorSetRaisedFromCStrParts
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    lib.pwbench_tvm_error.restype = ctypes.c_char_p
    return lib


class Buffer:
    """A page-aligned float32 NumPy array and the DLTensor that describes it."""

    def __init__(self, shape: tuple):
        count = int(np.prod(shape))
        raw = np.zeros(count + ALIGNMENT // 4, np.float32)
        start = (-raw.ctypes.data % ALIGNMENT) // 4
        self.array = raw[start:start + count].reshape(shape)
        self.raw, self.shape = raw, (ctypes.c_int64 * len(shape))(*shape)
        self.tensor = DLTensor(self.array.ctypes.data, DLDevice(K_DL_CPU, 0), len(shape),
                               DLDataType(K_DL_FLOAT, 32, 1), self.shape, None, 0)


class FfiKernel(BufferKernel):
    """An exported CPU artifact, called through its C entry point over buffers allocated once
    (its layout's: a structured kernel's packed weight passes like any other buffer)."""

    def __init__(self, artifact: Artifact, helper_path: str, clock: str):
        super().__init__(artifact)
        if artifact.workload.dtype != "float32":
            raise RuntimeError(f"the C-entry-point harness takes float32 kernels, not "
                               f"{artifact.workload.dtype}")
        helper_lib = _helper(helper_path)
        self.lib = ctypes.CDLL(artifact.library)
        for slot, function in SLOTS.items():
            try:
                ctypes.c_void_p.in_dll(self.lib, slot).value = ctypes.cast(
                    getattr(helper_lib, function), ctypes.c_void_p).value
            except ValueError:  # the kernel does not use that slot
                pass
        self.error = helper_lib.pwbench_tvm_error
        layout = artifact.layout
        self.x, self.w, self.y = (Buffer(layout.input_shape), Buffer(layout.weight_shape),
                                  Buffer(layout.output_shape))
        self.args = (TVMFFIAny * 3)(*[TVMFFIAny(K_TVM_FFI_DLTENSOR_PTR, 0, ctypes.addressof(b.tensor))
                                      for b in (self.x, self.w, self.y)])
        self.result_any = TVMFFIAny(K_TVM_FFI_NONE, 0, None)
        self.main = SAFE_CALL((f"__tvm_ffi_{artifact.entry}", self.lib))
        self._call = functools.partial(self.main, None, self.args, 3, ctypes.byref(self.result_any))
        self.clock = CountedInC(self, helper_lib) if clock == CountedInC.name else host_clock(self, clock)

    def __call__(self) -> None:
        if self._call():
            raise RuntimeError(f"the TVM kernel failed: {self.error().decode(errors='replace')}")

    def _put(self, buffer: Buffer, array: np.ndarray) -> None:
        buffer.array[...] = array

    def _get(self, buffer: Buffer) -> np.ndarray:
        return buffer.array.copy()


class CountedInC(InstructionClock):
    """The instruction clock of an FfiConv: its calls counted from a loop in C
    (`pwbench_tvm_count`), so a count is the kernel's instructions and a few dozen more."""

    def __init__(self, kernel: FfiKernel, helper_lib: ctypes.CDLL):
        super().__init__(kernel)
        self.kernel, self.loop = kernel, helper_lib.pwbench_tvm_count

    def count(self, zero, dump, tags: list[bytes]) -> None:
        k, address = self.kernel, lambda f: ctypes.cast(f, ctypes.c_void_p)
        if self.loop(address(k.main), k.args, 3, ctypes.byref(k.result_any), address(zero),
                     address(dump), (ctypes.c_char_p * len(tags))(*tags), len(tags)):
            raise RuntimeError(f"the TVM kernel failed: {k.error().decode(errors='replace')}")


def load(artifact: Artifact, helper_path: str, clock: str = "instructions") -> FfiKernel:
    """Built.make of a kernel counted by the instruction clock (picklable with plain values)."""
    return FfiKernel(artifact, helper_path, clock)
